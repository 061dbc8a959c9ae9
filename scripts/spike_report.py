#!/usr/bin/env python
"""Does the server give back the memory of a spike? Server memory (PSS of tritonserver and its stubs: the
Python backend's shared memory counted once) through one minute of 2-6 s clips at concurrency 2, 20 s idle,
30 s of maximum-length (30 s) clips at concurrency 4, 30 s idle and one more minute of 2-6 s clips.

    .venv/bin/python scripts/spike_report.py                       # the bench's large repository
    .venv/bin/python scripts/spike_report.py --repository DIR      # any exported repository
    .venv/bin/python scripts/spike_report.py --repository DIR --time-scale 0.1 --max-seconds 10  # a 20 s smoke run

Prints the memory idle and under load before the burst, the peak, and the same two after the burst against
those before (issue bar: back within 20 %); writes the samples as JSON and a plot into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from e2v_bench.memory import ProcessTreeMemory, plot_memory
from e2v_bench.models import bench_repository
from e2v_bench.workload import cache_dir
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
STEADY_SECONDS = [2.0, 4.0, 6.0, 3.0, 5.0]


def infer(url: str, samples: np.ndarray) -> None:
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, samples.size], "FP32")
        tensor.set_data_from_numpy(samples[None])
        client.infer(contract.ENSEMBLE_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput(contract.SCORES)])


def load(url: str, clips: list[np.ndarray], concurrency: int, seconds: float) -> None:
    """`concurrency` callers sending the clips in turn until `seconds` have passed (requests in flight finish)."""
    until = time.monotonic() + seconds

    def caller(k: int) -> None:
        i = k
        while time.monotonic() < until:
            infer(url, clips[i % len(clips)])
            i += concurrency

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(caller, range(concurrency)))


def mean_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    return float(np.mean([mb for t, mb in samples if start <= t <= end]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", help="an exported repository (default: the bench's large one)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="the burst's clip length")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="every phase, the windows averaged and the sampling interval times this (0.1: a 20 s run)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "spike"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repository = Path(args.repository) if args.repository else bench_repository(CACHE)
    steady = [speech_like(s, seed=i) for i, s in enumerate(STEADY_SECONDS)]
    burst = [speech_like(args.max_seconds, seed=99)]
    marks = {}
    server = TritonServer(repository, log_file=out / "triton.log")
    scale = args.time_scale
    with server, ProcessTreeMemory(server.process.pid, min(1.0, 2 * scale), proportional=True) as memory:
        start = time.monotonic()
        for phase, run in (
            ("load", lambda: load(server.grpc_url, steady, 2, 60 * scale)),
            ("idle", lambda: time.sleep(20 * scale)),
            ("burst", lambda: load(server.grpc_url, burst, 4, 30 * scale)),
            ("idle after", lambda: time.sleep(30 * scale)),
            ("load after", lambda: load(server.grpc_url, steady, 2, 60 * scale)),
        ):
            run()
            marks[phase] = time.monotonic() - start
            print(f"{phase} done at {marks[phase]:.0f} s: {memory.samples[-1][1]:.0f} MB", flush=True)
        samples = memory.samples
    # the last 10 s of each idle phase, the last 30 s of each load phase (times --time-scale)
    idle_mb, idle_after_mb = (mean_between(samples, marks[p] - 10 * scale, marks[p]) for p in ("idle", "idle after"))
    load_mb, load_after_mb = (mean_between(samples, marks[p] - 30 * scale, marks[p]) for p in ("load", "load after"))
    peak_mb = max(mb for _, mb in samples)
    print(
        f"{repository.name}, server memory (PSS): idle {idle_mb:.0f} MB, under load {load_mb:.0f} MB; "
        f"burst peak {peak_mb:.0f} MB; after the burst idle {idle_after_mb:.0f} MB "
        f"({idle_after_mb / idle_mb - 1:+.1%}), "
        f"under load {load_after_mb:.0f} MB ({load_after_mb / load_mb - 1:+.1%}) (bar: within 20 %)"
    )
    (out / "spike.json").write_text(json.dumps({"samples": samples, "marks": marks}))
    title = f"Triton server memory through a burst of {args.max_seconds:g} s clips ({repository.name})"
    plot_memory(samples, out / "spike-memory.png", title, measure="PSS", phase_ends=marks)


if __name__ == "__main__":
    main()
