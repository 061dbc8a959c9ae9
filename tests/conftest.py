"""Shared fixtures: random-weight checkpoints of the real architecture, exported once per session
into a Triton model repository, and real Triton servers started on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from e2v_common import contract


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


def e2v_serve_command(repository: Path, folder: Path, grpc_port: int, http_port: int, *extra: str) -> list[str]:
    """The `e2v-serve` command line on a repository, on these ports (metrics on a free one), Triton's log in folder."""
    import sys

    from e2v_server.serve import free_port

    return [
        str(Path(sys.executable).with_name("e2v-serve")),
        f"--model-repository={repository}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={free_port()}",
        f"--log-file={folder / 'triton.log'}",
        *extra,
    ]


def launch_e2v_serve(command: list[str], log: Path, ready_text: str, env: dict | None = None, timeout: float = 300):
    """Start an e2v-serve command, its output in `log`; return the process once `ready_text` is in the log."""
    import os
    import subprocess
    import time

    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while ready_text not in log.read_text():
        assert process.poll() is None, f"e2v-serve exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"e2v-serve was not up after {timeout:.0f} s: {log.read_text()}"
        time.sleep(0.2)
    return process


@dataclass
class PublicServer:
    """`e2v-serve --public` on the tiny repository: nginx with the shipped configuration in front of Triton."""

    url: str  # the gateway, HOST:PORT (TLS; gRPC and HTTP)
    repository: Path
    token: str
    token_file: Path
    root_cert: Path  # the gateway's self-signed certificate, which clients pin
    admin_key: str
    triton_grpc_url: str  # Triton itself, on loopback
    triton_http_url: str
    process: object  # the e2v-serve subprocess.Popen
    log: Path

    @property
    def https(self) -> str:
        return f"https://{self.url}"

    def triton_pid(self) -> int:
        import psutil

        return next(p.pid for p in psutil.Process(self.process.pid).children() if "tritonserver" in p.name())


@pytest.fixture(scope="session")
def public_server(tiny, tmp_path_factory):
    import secrets
    import socket

    from e2v_server.gateway import self_signed_certificate
    from e2v_server.serve import free_port

    folder = tmp_path_factory.mktemp("public")
    token = secrets.token_urlsafe(32)
    token_file = folder / "token"
    token_file.write_text(token + "\n")
    cert, key = self_signed_certificate("127.0.0.1", folder / "tls")
    port, grpc_port, http_port = free_port(), free_port(), free_port()
    log = folder / "e2v-serve.log"
    command = e2v_serve_command(
        tiny.repository,
        folder,
        grpc_port,
        http_port,
        f"--public=127.0.0.1:{port}",
        f"--token-file={token_file}",
        f"--tls-cert={cert}",
        f"--tls-key={key}",
        f"--admin-key-file={folder / 'admin-key'}",
    )
    process = launch_e2v_serve(command, log, "gateway on", {"E2V_CACHE": str(folder / "cache")})
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    admin_key = (folder / "admin-key").read_text().strip()
    yield PublicServer(
        f"127.0.0.1:{port}",
        tiny.repository,
        token,
        token_file,
        cert,
        admin_key,
        f"127.0.0.1:{grpc_port}",
        f"127.0.0.1:{http_port}",
        process,
        log,
    )
    process.terminate()
    process.wait(60)
