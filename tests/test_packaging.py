"""The project as users get it, away from this checkout.

- A built wheel (not the editable install of `make setup`), in a Python where the source tree is not on
  sys.path, exports a checkpoint from a folder outside the checkout, serves the repository and scores a clip.
- A generated model repository runs on a Triton whose Python has only numpy and onnxruntime: nothing of
  this project can be imported there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient

from e2v_client.outputs import FOLDER_PREFIX, RESULT_FILE
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import TritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("e2v_bench", "e2v_client", "e2v_common", "e2v_export", "e2v_server")
SITE_PACKAGES = Path(onnxruntime.__file__).resolve().parents[1]  # the test environment's


def make_venv(path: Path) -> Path:
    """An empty virtual environment (no pip either); its python3."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python3"


def let_see(python: Path, folders: list[Path]) -> None:
    """Put folders on python's sys.path (a .pth file: the folders' own .pth files are not run)."""
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "visible.pth").write_text("".join(f"{p}\n" for p in folders), "utf-8")


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def imports(python: Path, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=clean_env()).returncode == 0


def wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> str:
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no {text!r} from the server; it printed:\n{''.join(seen)}")


def test_a_built_wheel_exports_serves_and_scores_outside_the_checkout(tmp_path):
    # build the wheel from a copy of what pip would see (no build folders left in the checkout)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, source], check=True)
    (wheel,) = dist.glob("*.whl")

    # a fresh environment: the wheel installed; its dependencies seen in the test environment's site-packages,
    # where the editable install's finder is never run, so the source tree is not importable
    venv = tmp_path / "venv"
    python = make_venv(venv)
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True)
    let_see(python, [SITE_PACKAGES])
    where = subprocess.run(
        [python, "-c", f"import {', '.join(OUR_PACKAGES)}; print(e2v_export.__file__, e2v_server.__file__)"],
        capture_output=True, text=True, env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert all(str(venv) in path and str(ROOT) not in path for path in where.stdout.split()), where.stdout

    work = tmp_path / "work"  # outside the checkout
    work.mkdir()
    bin_dir = venv / "bin"

    def run(*args, timeout=600):
        done = subprocess.run(args, cwd=work, env=clean_env(), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run(bin_dir / "e2v-export", "make-test-checkpoint", "--size", "tiny", "--seed", "5", "--out", "checkpoint")
    run(bin_dir / "e2v-export", "--model", "checkpoint", "--out", "repository")
    for model in (contract.PREPROCESS_MODEL, contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        assert (work / "repository" / model / "1" / "model.py").exists()

    import soundfile

    soundfile.write(work / "clip.wav", speech_like(2.0, seed=5), contract.SAMPLE_RATE, subtype="PCM_16")
    grpc_port = free_port()
    ports = ["--grpc-port", str(grpc_port), "--http-port", str(free_port()), "--metrics-port", str(free_port())]
    server = subprocess.Popen(
        [bin_dir / "e2v-serve", "--model-repository", "repository", *ports],
        cwd=work, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_line(server, "READY", timeout=300)
        run(bin_dir / "e2v-client", "clip.wav", "--url", f"127.0.0.1:{grpc_port}", "--output-dir", "out", "--quiet")
    finally:
        server.terminate()
        server.wait(60)
    (folder,) = (work / "out").glob(f"{FOLDER_PREFIX}*")
    assert (folder / RESULT_FILE).exists()


def test_the_repository_runs_on_a_triton_whose_python_has_only_numpy_and_onnxruntime(tiny, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(tiny.repository, repository)
    # only numpy and onnxruntime: links to their packages in a folder of their own
    deps = tmp_path / "deps"
    deps.mkdir()
    for name in ("numpy", "numpy.libs", "onnxruntime"):
        if (SITE_PACKAGES / name).exists():
            (deps / name).symlink_to(SITE_PACKAGES / name)
    python = make_venv(tmp_path / "venv")
    let_see(python, [deps])
    assert imports(python, "numpy") and imports(python, "onnxruntime")
    for package in OUR_PACKAGES:
        assert not imports(python, package), f"{package} is importable in the models' Python"

    samples = speech_like(3.3, seed=6)
    with TritonServer(repository, log_file=tmp_path / "triton.log", model_python=python) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        audio = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, len(samples)], "FP32")
        audio.set_data_from_numpy(samples[None, :].astype(np.float32))
        outputs = [grpcclient.InferRequestedOutput(name) for name in (contract.SCORES, contract.EMBEDDING)]
        response = client.infer(contract.ENSEMBLE_MODEL, [audio], outputs=outputs)
        client.close()
    expected = tiny.runner.run(samples)
    assert np.abs(response.as_numpy(contract.SCORES)[0] - expected.scores).max() < 1e-5
    assert np.abs(response.as_numpy(contract.EMBEDDING)[0] - expected.embedding).max() < 1e-4


@pytest.mark.parametrize("flavour", ["portable", "native"])
def test_repository_python_models_import_nothing_of_ours(tiny, tmp_path, flavour):
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import CONTRACT_COPY, RepositoryOptions, write_repository

    if flavour == "portable":
        repository = tiny.repository
    else:
        options = RepositoryOptions(flavour="native", instance_kind="gpu")
        repository = write_repository(load_checkpoint(tiny.model_dir), tmp_path / "native", options)
    python_files = sorted(repository.glob("*/1/*.py"))
    assert python_files
    for path in python_files:
        text = path.read_text("utf-8")
        for package in OUR_PACKAGES:
            assert f"import {package}" not in text and f"from {package}" not in text, f"{path} imports {package}"
        if path.name == "model.py":
            assert (path.parent / CONTRACT_COPY).exists()
    native_python = {p.parent.parent.name for p in python_files if p.name == "model.py"}
    portable_only = {contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL, contract.BULK_ENCODER_MODEL}  # + the lane
    assert native_python == (portable_only if flavour == "portable" else set()) | {
        contract.PREPROCESS_MODEL, contract.SEGMENTS_MODEL, contract.STREAM_MODEL
    }  # fmt: skip
    # the bulk lane: in the portable flavour only (the native encoder is Triton's own backend)
    lane = {contract.BULK_ENCODER_MODEL, contract.BULK_ENSEMBLE_MODEL}
    models = {p.name for p in repository.iterdir()}
    assert lane <= models if flavour == "portable" else not lane & models


def test_the_client_imports_nothing_of_the_server_or_the_export():
    """The thin client (and its page) needs only e2v_common of ours: no server, export, torch or runtime."""
    code = (
        "import sys\n"
        "import e2v_client.cli, e2v_client.batch, e2v_client.outputs, e2v_client.web.app\n"
        "ours = sorted({name.split('.')[0] for name in sys.modules if name.startswith('e2v_')})\n"
        "heavy = sorted({'torch', 'onnxruntime', 'openvino', 'funasr'} & set(sys.modules))\n"
        "print(ours, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "['e2v_client', 'e2v_common'] []", done.stdout
