"""`e2v-export --evaluate AUDIO`: what the chosen precision costs against fp32, on the user's own audio.

Both sides are the exported models run outside Triton (e2v_export.runner), on the same decoded
audio, compared utterance by utterance with e2v_export.compare. It runs before the repository is
written, so a precision that costs too much is seen before it is served.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from e2v_common import contract
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.compare import Agreement, agreement, compare
from e2v_export.repository import RepositoryOptions, export_models
from e2v_export.runner import Emotion2vecRunner


def evaluate(checkpoint: LoadedCheckpoint, options: RepositoryOptions, audio_paths: list[str]) -> str:
    """A few lines of text: the agreement of options' encoder with fp32's on the audio files (or folders) given."""
    from e2v_client import audio
    from e2v_client.batch import expand_inputs

    clips, skipped = [], []
    for path in expand_inputs(audio_paths):
        try:
            clip = audio.load(path)
            audio.check_not_silent(clip)
            clips.append(clip.samples)
        except audio.AudioError as exc:
            skipped.append(f"{path}: {exc}")
    if not clips:
        raise ValueError("--evaluate: no audio file could be decoded in " + ", ".join(audio_paths))
    with tempfile.TemporaryDirectory() as tmp:
        reference = runner_for(checkpoint, RepositoryOptions(), Path(tmp) / "fp32")
        candidate = runner_for(checkpoint, options, Path(tmp) / "candidate")
        diffs = [compare(candidate.run(c), reference.run(c), len(c) / contract.SAMPLE_RATE) for c in clips]
    lines = [f"skipped {line}" for line in skipped]
    lines.append(describe(agreement(diffs), f"{options.runtime} {options.precision}"))
    return "\n".join(lines)


def runner_for(checkpoint: LoadedCheckpoint, options: RepositoryOptions, out_dir: Path) -> Emotion2vecRunner:
    files = export_models(checkpoint, options.precision, out_dir, options.runtime, options.quantization)
    return Emotion2vecRunner(
        files[contract.ENCODER_MODEL], files[contract.CLASSIFIER_MODEL], 0, options.runtime, options.precision
    )


def describe(result: Agreement, candidate: str) -> str:
    return (
        f"--evaluate: {candidate} against onnxruntime fp32 on {result.utterances} utterances: argmax agreement "
        f"{result.argmax_agreement:.2%}, frame argmax agreement {result.frame_argmax_agreement:.2%}, embedding "
        f"cosine min {result.min_embedding_cosine:.6f} (mean {result.mean_embedding_cosine:.6f}), utterance scores "
        f"max |diff| {result.max_score_diff:.2e}, frame features max |diff| {result.max_frames_diff:.2e}"
    )
