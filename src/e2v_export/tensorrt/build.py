"""Building the fp16 engines: model.plan beside each model.onnx, and the JSON record of the build.

tensorrt is imported when a build starts (_tensorrt), with a message saying what to install when it is
missing and a refusal of TensorRT versions without weak typing (TensorRT 11).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from e2v_common import contract
from e2v_export.tensorrt.precision import keep_in_fp32
from e2v_export.tensorrt.profile import Profile, ProfileOptions, profile_for

TRITON_TENSORRT = "10.5"  # TensorRT in nvcr.io/nvidia/tritonserver:24.10-py3 (Triton 2.51)
RECORD_FILE = "tensorrt_build.json"  # written into the ensemble's folder


@dataclass
class EngineRecord:
    model: str
    onnx: str
    plan: str
    plan_bytes: int
    plan_sha256: str
    build_seconds: float
    profile: dict  # input -> {"min": [...], "opt": [...], "max": [...]}
    fp32_layers: list[str]


def _profile_json(profile: Profile) -> dict:
    return {name: dict(zip(("min", "opt", "max"), map(list, shapes), strict=True)) for name, shapes in profile.items()}


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(
            f"building TensorRT engines needs the tensorrt package, the version of the serving Triton "
            f"(pip install tensorrt-cu12=={TRITON_TENSORRT}.0 for Triton 24.10), on a machine with the serving GPU"
        ) from exc
    if not hasattr(trt.BuilderFlag, "FP16") or not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
        raise RuntimeError(
            f"TensorRT {trt.__version__} has no fp16 builder flag or precision constraints (TensorRT 11 "
            f"removed weak typing); build with TensorRT {TRITON_TENSORRT}, the version in Triton 24.10"
        )
    return trt


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parse(trt, builder, logger, onnx_path: Path):
    """The network TensorRT's ONNX parser makes of onnx_path (explicit batch)."""
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 10: always explicit
    if explicit is not None:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    return network


def _network_profile(model: str, network, onnx_path: Path, options: ProfileOptions) -> Profile:
    """The profile of the network's inputs, which must be the contract's."""
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    expected = contract.ENCODER_INPUTS if model == contract.ENCODER_MODEL else contract.CLASSIFIER_INPUTS
    if set(inputs) != set(expected):
        raise RuntimeError(f"{onnx_path} has inputs {sorted(inputs)}, expected {list(expected)}")
    embedding_dim = inputs[contract.CLASSIFIER_INPUTS[0]][-1] if model == contract.CLASSIFIER_MODEL else None
    if embedding_dim is not None and embedding_dim <= 0:
        raise RuntimeError(f"{onnx_path}: the frames input needs a fixed feature size, got {inputs}")
    return profile_for(model, options, embedding_dim)


def build_engine(
    model: str,
    onnx_path: str | Path,
    plan_path: str | Path,
    options: ProfileOptions,
    *,
    fp16: bool = True,
    workspace_gib: float = 8.0,
    log: Callable[[str], None] = print,
) -> EngineRecord:
    """Parse onnx_path, build an fp16 engine with one optimisation profile, write plan_path."""
    trt = _tensorrt()
    options.check()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not trt.__version__.startswith(TRITON_TENSORRT + "."):
        log(
            f"warning: TensorRT {trt.__version__}: the plan loads only in a Triton with the same TensorRT "
            f"(Triton 24.10 has {TRITON_TENSORRT})"
        )
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _parse(trt, builder, logger, onnx_path)
    profile = _network_profile(model, network, onnx_path, options)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    optimization_profile = builder.create_optimization_profile()
    for name, (smallest, typical, largest) in profile.items():
        optimization_profile.set_shape(name, smallest, typical, largest)
    config.add_optimization_profile(optimization_profile)
    fp32_layers: list[str] = []
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        fp32_layers = keep_in_fp32(network, trt.float32)
        log(f"{model}: {len(fp32_layers)} of {network.num_layers} layers kept in fp32:")
        for name in fp32_layers:
            log(f"  {name}")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    data = bytes(serialized)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(plan_path, data)
    record = EngineRecord(
        model=model,
        onnx=str(onnx_path),
        plan=str(plan_path),
        plan_bytes=len(data),
        plan_sha256=hashlib.sha256(data).hexdigest(),
        build_seconds=round(time.perf_counter() - start, 1),
        profile=_profile_json(profile),
        fp32_layers=fp32_layers,
    )
    log(f"{model}: wrote {plan_path} ({len(data) / 1e6:.1f} MB) in {record.build_seconds:.1f} s")
    return record


def _gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def build_repository_engines(
    repository: str | Path, options: ProfileOptions, *, workspace_gib: float = 8.0, log: Callable[[str], None] = print
) -> dict:
    """model.plan beside the encoder's and classifier's model.onnx, and the JSON record of the build."""
    trt = _tensorrt()
    repository = Path(repository)
    engines = []
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        version_dir = repository / model / "1"
        engines.append(
            build_engine(
                model,
                version_dir / contract.ONNX_FILE,
                version_dir / contract.PLAN_FILE,
                options,
                workspace_gib=workspace_gib,
                log=log,
            )
        )
    record = {
        "tensorrt_version": trt.__version__,
        "triton_tensorrt": TRITON_TENSORRT,
        "gpu": _gpu(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": asdict(options),
        "engines": [asdict(e) for e in engines],
    }
    path = repository / contract.ENSEMBLE_MODEL / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, (json.dumps(record, indent=2) + "\n").encode())
    log(f"build record: {path}")
    return record
