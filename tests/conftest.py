"""Shared fixtures: random-weight checkpoints of the real architecture, exported once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from e2v_client import contract


@dataclass
class Exported:
    size: str
    model_dir: Path
    onnx_dir: Path
    runner: object  # e2v_export.onnx_runner.OnnxEmotion2vec
    automodel: object  # funasr.AutoModel on the same checkpoint


def _export(tmp_path_factory, size: str, seed: int) -> Exported:
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.onnx_export import export_onnx
    from e2v_export.onnx_runner import OnnxEmotion2vec
    from e2v_export.parity import funasr_automodel
    from e2v_export.random_checkpoint import make_test_checkpoint

    root = tmp_path_factory.mktemp(f"e2v_{size}")
    model_dir = make_test_checkpoint(size, seed, root / "checkpoint")
    onnx_dir = root / "onnx"
    export_onnx(load_checkpoint(model_dir), onnx_dir)
    runner = OnnxEmotion2vec(onnx_dir / contract.ENCODER_ONNX, onnx_dir / contract.CLASSIFIER_ONNX)
    return Exported(size, model_dir, onnx_dir, runner, funasr_automodel(model_dir))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Exported:
    return _export(tmp_path_factory, "tiny", seed=1)


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Exported:
    return _export(tmp_path_factory, "base", seed=2)


@pytest.fixture(scope="session", params=["tiny", "base"])
def exported(request) -> Exported:
    return request.getfixturevalue(request.param)
