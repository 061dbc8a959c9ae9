"""Open an exported model in ONNX Runtime or OpenVINO, at the precision the export chose.

Imports only numpy and the standard library; a runtime is imported when a model is opened with it.
e2v-export copies this file beside the portable encoder's and classifier's model.py (as
emotion2vec_runtimes.py); the export and the benchmarks import it as e2v_common.runtimes
to run the same models outside Triton.

Precisions: fp32 everywhere; bf16 in OpenVINO (its CPU inference precision hint), refused where the
CPU would silently run fp32; int8 is a quantized model file, run as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from pathlib import Path

import numpy as np

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
# What a precision needs of the CPU, as /proc/cpuinfo names it (any one of each group). bf16 needs bf16 dot
# products (else OpenVINO silently computes fp32); int8 with full 8-bit weights needs VNNI: without it the int8
# dot product (AVX2's vpmaddubsw) adds pairs of products into a saturating 16-bit sum, so full-range weights
# lose accuracy (quantize.py then uses 7-bit weights).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# Written by `e2v-export --tune` into the encoder's model folder: the machine it was tuned on and the choice.
TUNING_FILE = "tuning.json"


class PrecisionUnavailable(RuntimeError):
    """The runtime would not run the model at the precision asked for on this machine."""


class Session:
    """One opened model: run(feeds) -> its outputs, in output_names order."""

    output_names: list[str]
    sequence_outputs: set[str]  # outputs with a length axis (axis 1): rank >= 3
    runs_as: str  # the precision the runtime really computes in

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeSession(Session):
    def __init__(self, path, precision: str, threads: int, gpu_device: int | None = None):
        import onnxruntime as ort

        if precision == "bf16":
            raise PrecisionUnavailable("ONNX Runtime has no bf16 CPU kernels: use the openvino runtime for bf16")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No CPU arena: it keeps the largest batch's buffers for good (large model, PSS: 1.4 GB idle, 3.7 GB
        # idle after 30 s of 30 s clips). Without it, and with free_memory_to_the_os() after each batch,
        # memory comes back after a spike (0.9 GB); throughput measured the same (docs/operations.md)
        options.enable_cpu_mem_arena = False
        providers = ["CPUExecutionProvider"]
        if gpu_device is not None:  # TensorRT, then CUDA, when this onnxruntime has them
            available = ort.get_available_providers()
            accelerated = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
            providers = [(name, {"device_id": gpu_device}) for name in accelerated if name in available] + providers
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.sequence_outputs = {o.name for o in self.session.get_outputs() if len(o.shape) >= 3}
        self.runs_as = precision

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


class OpenVinoSession(Session):
    def __init__(self, path, precision: str, threads: int, streams: int = 1):
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": streams}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
            # Each Triton instance is a process of its own, and OpenVINO pins each one's threads to the same
            # first cores: two 1-thread instances ran on one core of two (2.68 against 5.45 audio s/s, measured)
            config["ENABLE_CPU_PINNING"] = False
        if precision in ("fp32", "bf16"):  # an int8 model runs as quantized; its other layers at the default
            config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # e.g. "f32", "bf16"
        if precision == "bf16" and "bf16" not in actual:
            capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            raise PrecisionUnavailable(
                f"OpenVINO compiled the model as {actual}, not bf16: this CPU has no native bf16 "
                f"(its capabilities: {capabilities}); export with --precision fp32 or int8 for it"
            )
        self.request = self.compiled.create_infer_request()
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        self.sequence_outputs = {
            output.get_any_name()
            for output in self.compiled.outputs
            if output.get_partial_shape().rank.get_length() >= 3
        }
        self.runs_as = "bf16" if "bf16" in actual else precision

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.array(results[output]) for output in self.compiled.outputs]


def free_memory_to_the_os() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim). glibc keeps freed memory for reuse:
    after a batch of long utterances, hundreds of MB of free heap stay resident. A no-op without glibc."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def lower_cpu_priority(niceness: int) -> None:
    """Run this whole process at CPU niceness `niceness` (0-19; higher yields to others): every thread it has,
    and those it starts later, which inherit it. Called before a runtime starts its threads. On Linux a nice
    value belongs to a thread, so each is set; elsewhere the process's is. An unprivileged process may raise its
    niceness but never lower it again: a model's process keeps one for its life."""
    tasks = Path("/proc/self/task")
    for thread in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        os.setpriority(os.PRIO_PROCESS, thread, niceness)


def _find_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


_malloc_trim = _find_malloc_trim()


def read_cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "flags", ...); {} where there is none."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def check_tuned_machine(model_folder, cpuinfo: str | None = None) -> str | None:
    """Compare this CPU with the one the model folder's tuning.json was tuned on (no file: nothing to check).

    Raises PrecisionUnavailable, naming the flag, when this CPU lacks what the tuned choice needs; returns a
    warning when it is another CPU model (the choice may not be the fastest here); else None.
    """
    path = Path(model_folder) / TUNING_FILE
    if not path.exists():
        return None
    tuning = json.loads(path.read_text("utf-8"))
    fields = read_cpuinfo(cpuinfo)
    flags = set(fields.get("flags", "").split())
    required = tuning["choice"]["requires"]  # {"flags": [any of these], "for": "what needs them"} or None
    if required and not flags & set(required["flags"]):
        raise PrecisionUnavailable(
            f"this repository was tuned for a CPU with {' or '.join(required['flags'])} ({required['for']}), and "
            f"this CPU ({fields.get('model name', 'unknown')}) has none: export it again here "
            "(e2v-export --tune, or --precision fp32)"
        )
    tuned_on = tuning["cpu"]["model"]
    here = fields.get("model name", "unknown")
    if here != tuned_on:
        return f"this repository was tuned on {tuned_on}, not on this CPU ({here}): its choice may not be fastest here"
    return None


def open_model(path, runtime: str, precision: str, threads: int = 0, gpu_device: int | None = None) -> Session:
    """The model file at `path` (ONNX, or OpenVINO IR for openvino) opened in `runtime` at `precision`."""
    if runtime == "onnxruntime":
        return OnnxRuntimeSession(path, precision, threads, gpu_device)
    if runtime == "openvino":
        return OpenVinoSession(path, precision, threads)
    raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
