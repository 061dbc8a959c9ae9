"""Parity of the engines with ONNX Runtime fp32: the same padded batches of speech-like audio through
both, compared utterance by utterance with e2v_export.compare and judged against the targets.

    python -m e2v_export.tensorrt parity --repository DIR
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from e2v_common import contract
from e2v_export.compare import Agreement, agreement, compare
from e2v_export.runner import onnx_reference, run_pipeline
from e2v_export.tensorrt.engine import EngineRunner

ARGMAX_TARGET = 0.995  # utterance argmax agreement with ONNX Runtime fp32
COSINE_TARGET = 0.999  # embedding cosine with ONNX Runtime fp32, every utterance


def meets_targets(
    result: Agreement, argmax_target: float = ARGMAX_TARGET, cosine_target: float = COSINE_TARGET
) -> bool:
    return result.argmax_agreement >= argmax_target and result.min_embedding_cosine >= cosine_target


def parity_line(result: Agreement, argmax_target: float = ARGMAX_TARGET, cosine_target: float = COSINE_TARGET) -> str:
    """One line: the numbers, the targets, PASS or FAIL."""
    verdict = "PASS" if meets_targets(result, argmax_target, cosine_target) else "FAIL"
    return (
        f"{result.utterances} utterances: argmax agreement {result.argmax_agreement:.2%} "
        f"(target >= {argmax_target:.1%}), frame argmax {result.frame_argmax_agreement:.2%}, "
        f"embedding cosine min {result.min_embedding_cosine:.6f} mean {result.mean_embedding_cosine:.6f} "
        f"(target >= {cosine_target}), scores max |diff| {result.max_score_diff:.2e}, "
        f"frames max |diff| {result.max_frames_diff:.2e}: {verdict}"
    )


def parity_waveforms(count: int, max_seconds: float, seed: int = 0) -> list[np.ndarray]:
    """count speech-like utterances with lengths spread over 0.5 s .. max_seconds."""
    from e2v_common.synthetic_speech import speech_like

    rng = np.random.default_rng(seed)
    seconds = rng.uniform(min(0.5, max_seconds), max_seconds, size=count)
    return [speech_like(float(s), seed=seed + i) for i, s in enumerate(seconds)]


def _model_files(repository: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """The encoder's and classifier's model.onnx, and their model.plan; all four must exist."""
    models = (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL)
    onnx_files = tuple(repository / model / "1" / contract.ONNX_FILE for model in models)
    plan_files = tuple(repository / model / "1" / contract.PLAN_FILE for model in models)
    missing = [str(p) for p in onnx_files + plan_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"no {', '.join(missing)}: the parity check needs a native repository with its TensorRT engines "
            f"(python -m e2v_export.tensorrt build --repository {repository})"
        )
    return onnx_files, plan_files


def check_parity(
    repository: str | Path, *, count: int = 200, max_seconds: float = 30.0, batch_size: int = 8, seed: int = 0
) -> Agreement:
    """The engines against ONNX Runtime fp32 on the same padded batches of speech-like audio."""
    repository = Path(repository)
    onnx_files, plan_files = _model_files(repository)
    waveforms = parity_waveforms(count, max_seconds, seed)
    reference = run_pipeline(*map(onnx_reference, onnx_files), waveforms, batch_size)
    engines = run_pipeline(*map(EngineRunner, plan_files), waveforms, batch_size)
    return agreement(
        [
            compare(ours, onnx, len(waveform) / contract.SAMPLE_RATE)
            for ours, onnx, waveform in zip(engines, reference, waveforms, strict=True)
        ]
    )
