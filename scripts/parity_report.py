#!/usr/bin/env python
"""Our ONNX export against FunASR's own inference, utterance by utterance: the parity table.

.venv/bin/python scripts/parity_report.py --sizes tiny base          # random-weight checkpoints, synthetic audio
.venv/bin/python scripts/parity_report.py --model DIR --audio FOLDER  # your checkpoint (the real weights) on your audio

With --model, the checkpoint folder is loaded and exported exactly as e2v-export does, FunASR's AutoModel
loads the same folder, and every audio file given (or found in the folders given) is scored by both;
the exit code is 1 if any utterance is outside the export's bounds. Run it once after downloading the
real emotion2vec+ weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_export.checkpoint import load_checkpoint
from e2v_export.compare import UtteranceDiff, agreement
from e2v_export.onnx_export import export_onnx
from e2v_export.parity import compare_batch_with_single, compare_with_funasr, funasr_automodel, within_bounds
from e2v_export.random_checkpoint import SIZES, make_test_checkpoint
from e2v_export.runner import Emotion2vecRunner

DURATIONS = [0.5, 1.0, 3.3, 7.0, 15.0, 30.0]
HEADER = (
    f"{'size':<6}{'case':<22}{'frames':>7}{'scores max|d|':>15}{'emb cosine':>13}"
    f"{'frames max|d|':>15}{'fscores max|d|':>16}{'argmax':>8}"
)


def row(size: str, case: str, diff: UtteranceDiff) -> str:
    return (
        f"{size:<6}{case:<22}{diff.frames:>7}{diff.scores_max_abs:>15.2e}{diff.embedding_cosine:>13.8f}"
        f"{diff.frames_max_abs:>15.2e}{diff.frame_scores_max_abs:>16.2e}{'same' if diff.argmax_equal else 'DIFF':>8}"
    )


def exported_runner(model_dir: Path, out: Path) -> Emotion2vecRunner:
    export_onnx(load_checkpoint(model_dir), out)
    return Emotion2vecRunner(out / contract.ENCODER_ONNX, out / contract.CLASSIFIER_ONNX)


def check_model(model_dir: Path, audio_paths: list[str]) -> int:
    """The user's checkpoint on the user's audio; 1 if an utterance is outside the bounds."""
    from e2v_client import audio
    from e2v_client.batch import expand_inputs

    paths = expand_inputs(audio_paths)
    if not paths:
        raise SystemExit("no audio files found in --audio")
    with tempfile.TemporaryDirectory() as tmp:
        runner = exported_runner(model_dir, Path(tmp))
        automodel = funasr_automodel(model_dir)
        print(HEADER.replace("size", "len ").replace("case", "file"))
        scored = []  # (path, its UtteranceDiff)
        for path in paths:
            try:
                samples = audio.load(path).samples
            except audio.AudioError as exc:
                print(f"skipped {path}: {exc}")
                continue
            diff = compare_with_funasr(automodel, runner, samples)
            scored.append((path, diff))
            print(row(f"{diff.seconds:.0f}s", path.name[:21], diff), flush=True)
    if not scored:
        raise SystemExit("none of the audio files could be decoded")
    total = agreement([diff for _, diff in scored])
    outside = [path for path, diff in scored if not within_bounds(diff)]
    print(
        f"{total.utterances} utterances: argmax agreement {total.argmax_agreement:.2%}, embedding cosine min "
        f"{total.min_embedding_cosine:.8f}, scores max |diff| {total.max_score_diff:.2e}, frames max |diff| "
        f"{total.max_frames_diff:.2e}: " + ("PASS" if not outside else f"FAIL ({len(outside)} outside the bounds)")
    )
    return 1 if outside else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=SIZES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="a checkpoint folder (config.yaml, model.pt, tokens.txt)")
    parser.add_argument("--audio", nargs="+", help="with --model: audio files or folders to compare on")
    args = parser.parse_args()
    if args.model:
        if not args.audio:
            parser.error("--model needs --audio FILE_OR_FOLDER ...")
        return check_model(args.model, args.audio)
    print(HEADER)
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_test_checkpoint(size, args.seed, Path(tmp) / "checkpoint")
            runner = exported_runner(model_dir, Path(tmp) / "onnx")
            automodel = funasr_automodel(model_dir)
            for seconds in DURATIONS:
                diff = compare_with_funasr(automodel, runner, speech_like(seconds, seed=int(seconds * 10)))
                print(row(size, f"vs FunASR {seconds:g} s", diff), flush=True)
            waveforms = [speech_like(s, seed=i) for i, s in enumerate([0.5, 30.0, 2.2, 9.7])]
            for diff in compare_batch_with_single(runner, waveforms):
                print(row(size, f"batch4 vs alone {diff.seconds:g} s", diff), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
