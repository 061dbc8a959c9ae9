"""FunASR's outputs for a checkpoint and samples, computed once per test session.

Three test modules compare against FunASR on the same clips (the ONNX export, OpenVINO and the served ensemble),
and FunASR's reference for the base checkpoint's 30 s clip takes most of a minute on 2 cores.
"""

from __future__ import annotations

import hashlib

import numpy as np

from e2v_common import contract
from e2v_export.compare import UtteranceDiff, compare
from e2v_export.parity import funasr_reference

_references: dict = {}  # (the AutoModel, the samples' digest) -> FunASR's result; the AutoModel kept alive


def cached_funasr_reference(automodel, waveform: np.ndarray):
    key = (id(automodel), hashlib.sha256(np.ascontiguousarray(waveform, np.float32).tobytes()).hexdigest())
    if key not in _references:
        _references[key] = (automodel, funasr_reference(automodel, waveform))
    return _references[key][1]


def compare_with_cached_funasr(automodel, ours, waveform: np.ndarray) -> UtteranceDiff:
    """`ours` (the result of a runner or a server on `waveform`) against FunASR's."""
    return compare(ours, cached_funasr_reference(automodel, waveform), len(waveform) / contract.SAMPLE_RATE)
