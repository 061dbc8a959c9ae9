"""The accuracy cost of the int8 encoder: its outputs against fp32's on the workload, through e2v_export.compare."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from e2v_bench.models import onnx_runner
from e2v_server.contract import SAMPLE_RATE


def int8_accuracy(fp32_repository: Path, int8_repository: Path, paths: list[Path]) -> dict:
    """e2v_export.compare.Agreement of the int8 repository's ONNX models with the fp32 one's, as a dict
    (argmax_agreement, max_score_diff, min_embedding_cosine, utterances, ...)."""
    from e2v_client import audio
    from e2v_export.compare import agreement, compare

    fp32, int8 = onnx_runner(fp32_repository), onnx_runner(int8_repository)
    diffs = []
    for path in paths:
        samples = audio.load(path).samples
        diffs.append(compare(int8.run(samples), fp32.run(samples), len(samples) / SAMPLE_RATE))
    return dataclasses.asdict(agreement(diffs))
