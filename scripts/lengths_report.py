#!/usr/bin/env python
"""Does the server's memory stay put when every request has a length of its own, as in real traffic (the
benchmarks repeat 24 utterances)? Sends --requests clips of distinct lengths (spread evenly over 1-3 s) at
concurrency 2 and samples the server's memory (PSS of tritonserver and its stubs) every second.

    .venv/bin/python scripts/lengths_report.py                    # the bench's large repository
    .venv/bin/python scripts/lengths_report.py --repository DIR   # any exported repository

Prints the memory after the first tenth of the requests and after all of them, the growth per 100 requests
(a straight line fitted against the requests answered), and the throughput; writes the samples as JSON and
a plot into --out.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from e2v_bench.memory import ProcessTreeMemory, plot_memory
from e2v_bench.models import bench_repository
from e2v_bench.workload import cache_dir
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import TritonServer
from spike_report import infer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
CONCURRENCY = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", help="an exported repository (default: the bench's large one)")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "lengths"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repository = Path(args.repository) if args.repository else bench_repository(CACHE)
    # distinct lengths in samples, evenly over 1-3 s, shuffled; one speech-like clip cut to each
    lengths = np.random.default_rng(0).permutation(np.linspace(1.0, 3.0, args.requests) * contract.SAMPLE_RATE)
    source = speech_like(3.0, seed=7)
    answered: list[tuple[float, int]] = []  # (seconds since the start, requests answered so far)
    lock = threading.Lock()
    server = TritonServer(repository, log_file=out / "triton.log")
    with server, ProcessTreeMemory(server.process.pid, 1.0, proportional=True) as memory:
        start = time.monotonic()

        def send(length: float) -> None:
            infer(server.grpc_url, source[: int(length)])
            with lock:
                answered.append((time.monotonic() - start, len(answered) + 1))

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(send, lengths))
        seconds = time.monotonic() - start
        time.sleep(2)  # a last sample after the last answer
        samples = memory.samples
    # each sample against the requests answered by then; the first tenth is warm-up
    times, counts = np.array(answered).T
    done = np.interp([t for t, _ in samples], times, counts, left=0)
    mb = np.array([m for _, m in samples])
    after_warmup = done >= args.requests / 10
    slope = np.polyfit(done[after_warmup], mb[after_warmup], 1)[0] * 100
    first = mb[after_warmup][:5].mean()
    print(
        f"{repository.name}: {args.requests} requests of distinct lengths (1-3 s) at concurrency {CONCURRENCY}, "
        f"{lengths.sum() / contract.SAMPLE_RATE / seconds:.2f} audio s/s; server memory (PSS) after the first "
        f"tenth {first:.0f} MB, at the end {mb[-3:].mean():.0f} MB; {slope:+.1f} MB per 100 requests"
    )
    (out / "lengths.json").write_text(json.dumps({"samples": samples, "answered": answered}))
    title = f"Triton server memory over {args.requests} requests of distinct lengths ({repository.name})"
    plot_memory(samples, out / "lengths-memory.png", title, measure="PSS")


if __name__ == "__main__":
    main()
