"""Shared fixtures: random-weight checkpoints of the real architecture, exported once per session
into a Triton model repository, and real Triton servers started on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from e2v_server import contract


@dataclass
class Exported:
    size: str
    model_dir: Path
    repository: Path
    runner: object  # e2v_export.runner.Emotion2vecRunner on the repository's ONNX files
    automodel: object  # funasr.AutoModel on the same checkpoint

    @property
    def encoder_onnx(self) -> Path:
        return self.repository / contract.ENCODER_MODEL / "1" / "model.onnx"

    @property
    def classifier_onnx(self) -> Path:
        return self.repository / contract.CLASSIFIER_MODEL / "1" / "model.onnx"


def _export(tmp_path_factory, size: str, seed: int) -> Exported:
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.parity import funasr_automodel
    from e2v_export.random_checkpoint import make_test_checkpoint
    from e2v_export.repository import write_repository
    from e2v_export.runner import Emotion2vecRunner

    root = tmp_path_factory.mktemp(f"e2v_{size}")
    model_dir = make_test_checkpoint(size, seed, root / "checkpoint")
    repository = write_repository(load_checkpoint(model_dir), root / "model_repository")
    exported = Exported(size, model_dir, repository, None, funasr_automodel(model_dir))
    exported.runner = Emotion2vecRunner(exported.encoder_onnx, exported.classifier_onnx)
    return exported


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Exported:
    return _export(tmp_path_factory, "tiny", seed=1)


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Exported:
    return _export(tmp_path_factory, "base", seed=2)


@pytest.fixture(scope="session", params=["tiny", "base"])
def exported(request) -> Exported:
    return request.getfixturevalue(request.param)


def _server(exported: Exported, tmp_path_factory):
    from e2v_server.serve import TritonServer

    log = tmp_path_factory.mktemp("triton_logs") / f"triton_{exported.size}.log"
    server = TritonServer(exported.repository, log_file=log)
    server.start()
    return server


@pytest.fixture(scope="session")
def tiny_server(tiny, tmp_path_factory):
    server = _server(tiny, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_server(base, tmp_path_factory):
    server = _server(base, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["tiny", "base"])
def served(request):
    """(exported checkpoint, running server) for each size."""
    return request.getfixturevalue(request.param), request.getfixturevalue(f"{request.param}_server")
