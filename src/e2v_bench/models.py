"""The models the benchmarks run: a random-weight checkpoint of the real architecture (speed does not depend on
the weights' values) and the model repositories exported from it, both cached and reused between runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e2v_common import contract

REPOSITORY_MARKER = ".bench-options.json"  # what a cached repository was exported with, and by which code
RUNTIME_NAMES = {"onnxruntime": "onnx", "openvino": "openvino"}  # a component run alone is named by its runtime


def random_checkpoint(cache: Path, size: str, seed: int = 0) -> Path:
    """The random-weight checkpoint of this size beside the bench cache (.cache/checkpoints), made once."""
    from e2v_export.random_checkpoint import make_test_checkpoint

    model_dir = cache.parent / "checkpoints" / f"{size}-random-seed{seed}"
    if not (model_dir / "model.pt").exists():
        make_test_checkpoint(size, seed, model_dir)
    return model_dir


def encoder_suffix(runtime: str = "onnxruntime", precision: str = "fp32") -> str:
    """What names an encoder other than ONNX Runtime fp32: "", "-int8", "-openvino", "-openvino-bf16"."""
    parts = ([runtime] if runtime != "onnxruntime" else []) + ([precision] if precision != "fp32" else [])
    return "".join(f"-{part}" for part in parts)


def alone_name(runtime: str, precision: str) -> str:
    """The name of the encoder and classifier run alone: "onnx", "onnx-int8", "openvino", "openvino-bf16"."""
    return RUNTIME_NAMES[runtime] + ("" if precision == "fp32" else f"-{precision}")


def repository_dir(cache: Path, tag: str) -> Path:
    """Where the repository of one variant lives: tag is the size and the variant's suffix, e.g. "large",
    "large-int8", "large-openvino", "large-pad" (scripts/bench.py and scripts/load_test.py share them)."""
    return cache / f"repo-{tag}"


def export_repository(
    model_dir: Path, out: Path, runtime: str = "onnxruntime", precision: str = "fp32", **options
) -> Path:
    """A model repository of model_dir at out whose encoder runs in `runtime` at `precision`, exported again
    only if its checkpoint, runtime, precision, other RepositoryOptions or the export code changed."""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, code_fingerprint, write_repository

    marker = out / REPOSITORY_MARKER
    wanted = json.dumps(
        {"model": str(model_dir), "runtime": runtime, "precision": precision, "code": code_fingerprint(), **options},
        sort_keys=True,
    )
    if marker.exists() and marker.read_text() == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    repository_options = RepositoryOptions(runtime=runtime, precision=precision, **options)
    write_repository(load_checkpoint(model_dir), out, repository_options)
    marker.write_text(wanted)
    return out


def tuned_repository(model_dir: Path, out: Path) -> Path:
    """The repository `e2v-export --tune` writes for model_dir on this machine, at out; tuned again only if the
    checkpoint, the CPU model or the export code changed."""
    from e2v_common.cpu import CpuInfo
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, code_fingerprint
    from e2v_export.tune import export_tuned

    marker = out / REPOSITORY_MARKER
    wanted = json.dumps(
        {"model": str(model_dir), "tuned_on": CpuInfo.this_machine().model, "code": code_fingerprint()}, sort_keys=True
    )
    if marker.exists() and marker.read_text() == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    export_tuned(load_checkpoint(model_dir), out, RepositoryOptions())
    marker.write_text(wanted)
    return out


def bench_repository(cache: Path, size: str = "large") -> Path:
    """The benchmarks' repository of the random checkpoint of `size` (fp32 ONNX Runtime), exported if needed."""
    return export_repository(random_checkpoint(cache, size), repository_dir(cache, size))


def repository_runner(repository: Path, runtime: str = "onnxruntime", precision: str = "fp32", threads: int = 0):
    """A repository's encoder (in `runtime` at `precision`) and classifier run in this process, outside Triton."""
    from e2v_export.runner import Emotion2vecRunner

    def version_dir(model: str) -> Path:
        return Path(repository) / model / "1"

    encoder = contract.model_file(version_dir(contract.ENCODER_MODEL), runtime)  # OpenVINO's IR if exported
    classifier = version_dir(contract.CLASSIFIER_MODEL) / contract.ONNX_FILE
    return Emotion2vecRunner(encoder, classifier, threads, runtime, precision)
