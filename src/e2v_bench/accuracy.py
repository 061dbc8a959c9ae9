"""The accuracy cost of an encoder choice (int8, OpenVINO, bf16): its outputs against ONNX Runtime fp32's on the
workload, outside Triton, through e2v_export.compare."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from e2v_bench.models import repository_runner
from e2v_common.contract import SAMPLE_RATE


def encoder_agreement(reference: Path, candidate: Path, runtime: str, precision: str, paths: list[Path]) -> dict:
    """e2v_export.compare.Agreement of `candidate`'s models (its encoder in `runtime` at `precision`) with
    `reference`'s in ONNX Runtime fp32, as a dict (argmax_agreement, max_score_diff, min_embedding_cosine, ...)."""
    from e2v_client import audio
    from e2v_export.compare import agreement, compare

    fp32 = repository_runner(reference)
    other = repository_runner(candidate, runtime, precision)
    diffs = []
    for path in paths:
        samples = audio.load(path).samples
        diffs.append(compare(other.run(samples), fp32.run(samples), len(samples) / SAMPLE_RATE))
    return dataclasses.asdict(agreement(diffs))
