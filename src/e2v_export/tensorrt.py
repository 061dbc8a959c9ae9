"""fp16 TensorRT engines for the encoder and classifier, and their parity with ONNX Runtime fp32.

UNTESTED ON HARDWARE: written against the TensorRT 10 Python API and checked here only with stand-ins
(no GPU on the development machines). Run ``python -m e2v_export.tensorrt parity`` on the first GPU.

    python -m e2v_export.tensorrt build  --repository DIR [--max-batch 8 --max-seconds 30 ...]
    python -m e2v_export.tensorrt parity --repository DIR

``build`` turns DIR/encoder/1/model.onnx and DIR/classifier/1/model.onnx into model.plan files beside
them and writes DIR/emotion2vec/tensorrt_build.json; ``e2v-export --flavour native --tensorrt`` does
the same and also writes the tensorrt_plan configs (model_repository/*/config.tensorrt.pbtxt.in).

A plan runs only with the TensorRT version that built it and on the GPU architecture it was built on:
build on the serving GPU type with TensorRT 10.5, the version in nvcr.io/nvidia/tritonserver:24.10-py3
(pip: tensorrt-cu12==10.5.0). TensorRT 11 removed the fp16 builder flag and precision constraints used
here (weakly typed networks); the build refuses it with that message.

The network is explicit-batch with one optimisation profile over batch and length (ProfileOptions).
fp16 overflows in normalisation (sums of squares), softmax and long reductions, so those layers are
pinned to fp32 (fp32_fallback_layers) and the builder obeys those constraints.

This module imports only numpy and the contract; tensorrt, onnxruntime and torch (CUDA buffers for
the parity check) are imported by the functions that need them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from e2v_server import contract

TRITON_TENSORRT = "10.5"  # TensorRT in nvcr.io/nvidia/tritonserver:24.10-py3 (Triton 2.51)
RECORD_FILE = "tensorrt_build.json"  # written into the ensemble's folder
ARGMAX_TARGET = 0.995  # utterance argmax agreement with ONNX Runtime fp32
COSINE_TARGET = 0.999  # embedding cosine with ONNX Runtime fp32

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max) shapes

# --- optimisation profiles -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileOptions:
    """Batch and length ranges of the engines' optimisation profile (one profile for both models)."""

    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 8  # the configs' max_batch_size
    min_seconds: float = contract.FRAME_RECEPTIVE_FIELD / contract.SAMPLE_RATE  # one frame
    opt_seconds: float = 8.0
    max_seconds: float = 30.0
    # preprocess pads each batch to a multiple of this many samples: the longest waveform the encoder
    # sees is max_seconds rounded up to it
    pad_multiple: int = 8000

    @classmethod
    def for_repository(cls, options) -> ProfileOptions:
        """The profile a repository's serving options imply (e2v_export.repository.RepositoryOptions)."""
        return cls(
            min_batch=1,
            opt_batch=max(1, options.max_batch_size // 2),
            max_batch=options.max_batch_size,
            opt_seconds=min(options.max_seconds, cls.opt_seconds),
            max_seconds=options.max_seconds,
            pad_multiple=options.pad_multiple,
        )

    def check(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.pad_multiple < 1:
            raise ValueError("pad_multiple must be at least 1")
        if not 0 < self.min_seconds <= self.opt_seconds <= self.max_seconds:
            raise ValueError(
                f"need 0 < min <= opt <= max seconds, got {self.min_seconds:g}/{self.opt_seconds:g}/{self.max_seconds:g}"
            )
        if round(self.max_seconds * contract.SAMPLE_RATE) < contract.FRAME_RECEPTIVE_FIELD:
            raise ValueError("max_seconds is shorter than one frame")

    def batches(self) -> tuple[int, int, int]:
        return self.min_batch, self.opt_batch, self.max_batch

    def samples(self) -> tuple[int, int, int]:
        """(min, opt, max) waveform lengths in samples."""
        self.check()
        longest = round(self.max_seconds * contract.SAMPLE_RATE)
        longest = -(-longest // self.pad_multiple) * self.pad_multiple
        shortest = max(contract.FRAME_RECEPTIVE_FIELD, round(self.min_seconds * contract.SAMPLE_RATE))
        typical = min(max(shortest, round(self.opt_seconds * contract.SAMPLE_RATE)), longest)
        return shortest, typical, longest

    def frames(self) -> tuple[int, int, int]:
        """(min, opt, max) frame counts: T = (N - 400) // 320 + 1 of the sample range."""
        return tuple(int(contract.frames_for_samples(n)) for n in self.samples())


def encoder_profile(options: ProfileOptions) -> Profile:
    """waveform [B, N] float32 and lengths [B] int64."""
    waveform, lengths = contract.ENCODER_INPUTS
    batches, samples = options.batches(), options.samples()
    return {
        waveform: tuple((b, n) for b, n in zip(batches, samples)),
        lengths: tuple((b,) for b in batches),
    }


def classifier_profile(options: ProfileOptions, embedding_dim: int) -> Profile:
    """frames [B, T, D] float32 and frame_lengths [B] int64, T over the encoder's frame range."""
    frames, frame_lengths = contract.CLASSIFIER_INPUTS
    batches, counts = options.batches(), options.frames()
    return {
        frames: tuple((b, t, embedding_dim) for b, t in zip(batches, counts)),
        frame_lengths: tuple((b,) for b in batches),
    }


def profile_for(model: str, options: ProfileOptions, embedding_dim: int | None = None) -> Profile:
    if model == contract.ENCODER_MODEL:
        return encoder_profile(options)
    if model == contract.CLASSIFIER_MODEL:
        if not embedding_dim:
            raise ValueError("the classifier profile needs the embedding size")
        return classifier_profile(options, embedding_dim)
    raise ValueError(f"no TensorRT engine for model {model!r}")


# --- layers kept in fp32 ---------------------------------------------------------------------------

# Layer types computed in fp32 whatever their inputs: LayerNorm (opset 17 LayerNormalization becomes a
# NORMALIZATION layer), softmax, and reductions (variance, the pooling's masked sum over up to 1,500 frames).
FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
# A LayerNorm the parser decomposed (older opsets: ReduceMean/Sub/Pow/Sqrt/Div) keeps its module scope
# in the layer names, e.g. "/blocks.0/norm1/Pow": element-wise and unary layers under a *norm* scope,
# and any Pow or Sqrt, stay in fp32 too.
FP32_SCOPED_TYPES = frozenset({"ELEMENTWISE", "UNARY"})
_NORM_SCOPE = re.compile(r"(^|/)[^/]*norm[^/]*/", re.IGNORECASE)
_NORM_OP = re.compile(r"(^|/)(Pow|Sqrt)(_\d+)?$", re.IGNORECASE)
_FLOAT_TYPES = frozenset({"FLOAT", "HALF"})


def _enum_name(value) -> str:
    """'NORMALIZATION' from trt.LayerType.NORMALIZATION (or a stand-in with .name, or a string)."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def _float_outputs(layer) -> bool:
    outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
    return bool(outputs) and all(_enum_name(o.dtype) in _FLOAT_TYPES for o in outputs)


def fp32_fallback_layers(network) -> list:
    """Layers of a parsed network to keep in fp32, by type and name (only layers with float outputs:
    shape arithmetic and masks are not touched)."""
    chosen = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _enum_name(layer.type)
        wanted = kind in FP32_LAYER_TYPES or (
            kind in FP32_SCOPED_TYPES and (_NORM_SCOPE.search(layer.name) or _NORM_OP.search(layer.name))
        )
        if wanted and _float_outputs(layer):
            chosen.append(layer)
    return chosen


def keep_in_fp32(network, float32) -> list[str]:
    """Pin the fp32_fallback_layers to float32 (precision and output types); their names, printed by
    the build. float32 is trt.float32 (a parameter so that tests can pass a stand-in)."""
    names = []
    for layer in fp32_fallback_layers(network):
        layer.precision = float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, float32)
        names.append(f"{_enum_name(layer.type)} {layer.name}")
    return names


# --- building --------------------------------------------------------------------------------------


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
    return {name: dict(zip(("min", "opt", "max"), map(list, shapes))) for name, shapes in profile.items()}


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
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 10: always explicit
    if explicit is not None:
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    expected = contract.ENCODER_INPUTS if model == contract.ENCODER_MODEL else contract.CLASSIFIER_INPUTS
    if set(inputs) != set(expected):
        raise RuntimeError(f"{onnx_path} has inputs {sorted(inputs)}, expected {list(expected)}")
    embedding_dim = inputs[contract.CLASSIFIER_INPUTS[0]][-1] if model == contract.CLASSIFIER_MODEL else None
    if embedding_dim is not None and embedding_dim <= 0:
        raise RuntimeError(f"{onnx_path}: the frames input needs a fixed feature size, got {inputs}")
    profile = profile_for(model, options, embedding_dim)

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


# --- parity with ONNX Runtime fp32 -----------------------------------------------------------------

Runner = Callable[[dict], dict]  # {input name: array} -> {output name: array}


def onnx_runner(path: str | Path) -> Runner:
    """ONNX Runtime on the CPU: the fp32 reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds)))


class EngineRunner:
    """Runs a plan with TensorRT on CUDA buffers held by torch (a CUDA build of torch is needed)."""

    _TORCH_TYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}

    def __init__(self, plan_path: str | Path):
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the parity check runs the engines on a GPU: torch sees no CUDA device")
        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not load {plan_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def __call__(self, feeds: dict) -> dict:
        torch = self.torch
        stream = torch.cuda.current_stream()
        buffers = {}
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            buffers[name] = tensor
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} has a data-dependent shape {shape}")
            dtype = getattr(torch, self._TORCH_TYPES[_enum_name(self.engine.get_tensor_dtype(name))])
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self.outputs}


def run_pipeline(encoder: Runner, classifier: Runner, waveforms: list[np.ndarray], batch_size: int) -> list[dict]:
    """Per utterance: scores [L], embedding [D], frame_scores [T, L], from padded batches."""
    wave_in, lengths_in = contract.ENCODER_INPUTS
    frames_name, frame_lengths_name = contract.ENCODER_OUTPUTS
    embedding_name, scores_name, frame_scores_name = contract.CLASSIFIER_OUTPUTS[:3]
    results = []
    for start in range(0, len(waveforms), batch_size):
        rows = [contract.normalize_waveform(w) for w in waveforms[start : start + batch_size]]
        batch, lengths = contract.pad_rows(rows)
        encoded = encoder({wave_in: batch, lengths_in: lengths})
        classified = classifier({frames_name: encoded[frames_name], frame_lengths_name: encoded[frame_lengths_name]})
        for i in range(len(rows)):
            t = int(encoded[frame_lengths_name][i])
            results.append(
                {
                    "scores": classified[scores_name][i],
                    "embedding": classified[embedding_name][i],
                    "frame_scores": classified[frame_scores_name][i, :t],
                }
            )
    return results


@dataclass
class ParityResult:
    utterances: int
    argmax_agreement: float  # utterances whose top label is the same
    frame_argmax_agreement: float  # frames whose top label is the same
    min_embedding_cosine: float
    mean_embedding_cosine: float
    max_score_diff: float

    def passed(self, argmax_target: float = ARGMAX_TARGET, cosine_target: float = COSINE_TARGET) -> bool:
        return self.argmax_agreement >= argmax_target and self.min_embedding_cosine >= cosine_target

    def __str__(self) -> str:
        return (
            f"{self.utterances} utterances: argmax agreement {self.argmax_agreement:.2%} "
            f"(target >= {ARGMAX_TARGET:.1%}), frame argmax {self.frame_argmax_agreement:.2%}, "
            f"embedding cosine min {self.min_embedding_cosine:.6f} mean {self.mean_embedding_cosine:.6f} "
            f"(target >= {COSINE_TARGET}), scores max |diff| {self.max_score_diff:.2e}: "
            f"{'PASS' if self.passed() else 'FAIL'}"
        )


def compare(reference: list[dict], candidate: list[dict]) -> ParityResult:
    if len(reference) != len(candidate) or not reference:
        raise ValueError("compare needs the same, non-zero number of utterances on both sides")
    same, cosines, diffs, frames_same, frames = 0, [], [], 0, 0
    for ref, got in zip(reference, candidate):
        same += int(np.argmax(ref["scores"]) == np.argmax(got["scores"]))
        a, b = np.asarray(ref["embedding"], np.float64), np.asarray(got["embedding"], np.float64)
        cosines.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
        diffs.append(float(np.max(np.abs(np.asarray(ref["scores"]) - np.asarray(got["scores"])))))
        if ref["frame_scores"].shape != got["frame_scores"].shape:
            raise ValueError(f"frame counts differ: {ref['frame_scores'].shape} vs {got['frame_scores'].shape}")
        frames_same += int(np.sum(ref["frame_scores"].argmax(-1) == got["frame_scores"].argmax(-1)))
        frames += len(ref["frame_scores"])
    return ParityResult(
        utterances=len(reference),
        argmax_agreement=same / len(reference),
        frame_argmax_agreement=frames_same / max(frames, 1),
        min_embedding_cosine=min(cosines),
        mean_embedding_cosine=float(np.mean(cosines)),
        max_score_diff=max(diffs),
    )


def parity_waveforms(count: int, max_seconds: float, seed: int = 0) -> list[np.ndarray]:
    """count speech-like utterances with lengths spread over 0.5 s .. max_seconds."""
    from e2v_export.synthetic import speech_like

    rng = np.random.default_rng(seed)
    seconds = rng.uniform(min(0.5, max_seconds), max_seconds, size=count)
    return [speech_like(float(s), seed=seed + i) for i, s in enumerate(seconds)]


def check_parity(
    repository: str | Path, *, count: int = 200, max_seconds: float = 30.0, batch_size: int = 8, seed: int = 0
) -> ParityResult:
    """The engines against ONNX Runtime fp32 on the same padded batches of speech-like audio."""
    repository = Path(repository)
    path = lambda model, name: repository / model / "1" / name  # noqa: E731
    waveforms = parity_waveforms(count, max_seconds, seed)
    reference = run_pipeline(
        onnx_runner(path(contract.ENCODER_MODEL, contract.ONNX_FILE)),
        onnx_runner(path(contract.CLASSIFIER_MODEL, contract.ONNX_FILE)),
        waveforms,
        batch_size,
    )
    candidate = run_pipeline(
        EngineRunner(path(contract.ENCODER_MODEL, contract.PLAN_FILE)),
        EngineRunner(path(contract.CLASSIFIER_MODEL, contract.PLAN_FILE)),
        waveforms,
        batch_size,
    )
    return compare(reference, candidate)


# --- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2v_export.tensorrt", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = ProfileOptions()
    build = commands.add_parser("build", help="model.plan for the encoder and classifier of a native repository")
    build.add_argument("--repository", required=True)
    for name in ("min_batch", "opt_batch", "max_batch", "pad_multiple"):
        build.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("min_seconds", "opt_seconds", "max_seconds"):
        build.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    build.add_argument("--workspace-gib", type=float, default=8.0)
    parity = commands.add_parser("parity", help="the engines against ONNX Runtime fp32")
    parity.add_argument("--repository", required=True)
    parity.add_argument("--count", type=int, default=200, help="utterances (200: one disagreement is 99.5 %%)")
    parity.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parity.add_argument("--batch-size", type=int, default=defaults.max_batch)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            options = ProfileOptions(**{k: getattr(args, k) for k in asdict(defaults)})
            build_repository_engines(args.repository, options, workspace_gib=args.workspace_gib)
            return 0
        result = check_parity(
            args.repository, count=args.count, max_seconds=args.max_seconds, batch_size=args.batch_size
        )
        print(result)
        return 0 if result.passed() else 1
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"e2v_export.tensorrt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
