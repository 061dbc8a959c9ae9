"""The models the benchmarks run: a random-weight checkpoint of the real architecture (speed does not depend on
the weights' values) and the model repositories exported from it, both cached and reused between runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e2v_server import contract

REPOSITORY_MARKER = ".bench-options.json"  # what a cached repository was exported with


def random_checkpoint(cache: Path, size: str, seed: int = 0) -> Path:
    """The random-weight checkpoint of this size beside the bench cache (.cache/checkpoints), made once."""
    from e2v_export.random_checkpoint import make_test_checkpoint

    model_dir = cache.parent / "checkpoints" / f"{size}-random-seed{seed}"
    if not (model_dir / "model.pt").exists():
        make_test_checkpoint(size, seed, model_dir)
    return model_dir


def repository_dir(cache: Path, tag: str) -> Path:
    """Where the repository of one variant lives: tag is the size, e.g. "large", "large-int8", "large-pad"."""
    return cache / f"repo-{tag}"


def export_repository(model_dir: Path, out: Path, int8: bool, **options) -> Path:
    """A model repository of model_dir at out, exported again only if its checkpoint or options changed."""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    marker = out / REPOSITORY_MARKER
    wanted = json.dumps({"model": str(model_dir), "int8": int8, **options}, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    precision = "int8" if int8 else "fp32"
    write_repository(load_checkpoint(model_dir), out, RepositoryOptions(precision=precision, **options))
    marker.write_text(wanted)
    return out


def onnx_runner(repository: Path):
    """A repository's encoder and classifier ONNX files run by ONNX Runtime in this process."""
    from e2v_export.runner import Emotion2vecRunner

    def onnx_file(model: str) -> Path:
        return Path(repository) / model / "1" / contract.ONNX_FILE

    return Emotion2vecRunner(onnx_file(contract.ENCODER_MODEL), onnx_file(contract.CLASSIFIER_MODEL))
