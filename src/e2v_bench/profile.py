"""Where an encoder's time goes: the share of each operator type, from the runtime's own profiler.

ONNX Runtime writes a JSON trace (SessionOptions.enable_profiling) with one event per node run; OpenVINO reports
per-node counters (PERF_COUNT) with the kernel it chose (e.g. brgemm_avx512_amx for AMX tiles). Both are summed
by operator type over the timed runs, after one warm-up run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from e2v_export.quantize import encoder_feeds


def profile_onnxruntime(path: Path, clip: np.ndarray, runs: int, threads: int, trace_dir: Path) -> dict[str, float]:
    """{operator type: milliseconds over `runs` runs} of an ONNX Runtime encoder on one clip."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(trace_dir / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (feeds,) = encoder_feeds([clip])
    session.run(None, feeds)  # warm-up: counted in the trace, removed below
    for _ in range(runs):
        session.run(None, feeds)
    trace = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    node_runs = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(node_runs) // (runs + 1)
    for event in node_runs[per_run:]:  # without the warm-up run
        totals[event["args"]["op_name"]] += event["dur"] / 1000
    return dict(totals)


def profile_openvino(path: Path, clip: np.ndarray, runs: int, threads: int, precision: str) -> dict[str, float]:
    """{operator type (kernel): milliseconds over `runs` runs} of an OpenVINO encoder on one clip."""
    import openvino as ov

    config = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision in ("fp32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = "bf16" if precision == "bf16" else "f32"
    core = ov.Core()
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    (feeds,) = encoder_feeds([clip])
    request.infer(feeds)  # warm-up
    totals: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer(feeds)
        for node in request.profiling_info:
            if node.status == node.Status.EXECUTED:
                totals[f"{node.node_type} ({node.exec_type})"] += node.real_time.total_seconds() * 1000
    return dict(totals)


def table(totals: dict[str, float], runs: int, top: int = 12) -> str:
    """The operator types by time, per run and as a share of all, the largest first."""
    whole = sum(totals.values()) or 1.0
    lines = [f"{'operator':<48} {'ms per run':>10} {'share':>7}"]
    for name, ms in sorted(totals.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{name:<48} {ms / runs:>10.1f} {ms / whole:>7.1%}")
    lines.append(f"{'all':<48} {whole / runs:>10.1f}")
    return "\n".join(lines)
