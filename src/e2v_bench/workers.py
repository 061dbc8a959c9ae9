"""The systems measured, each timed in a process of its own (its peak memory is that process's).

Each worker warms up on the probe utterance, times the probe alone PROBE_REPEATS times (the latency of a
5 s clip), then runs the workload once, timed, and returns {"wall", "latencies", "probe", "client_mb"}
(seconds; MB). run_worker() starts ``python -m e2v_bench.workers KIND OPTIONS_JSON``, which prints that dict as
one JSON line. This module imports only the standard library and numpy at the top, so that a worker's memory
is its system's.

  funasr   FunASR AutoModel(model=DIR).generate(path), one file at a time as its users call it, or
           generate([paths], batch_size=N) with batch > 0; ncpu > 0: AutoModel's torch threads; autocast "bf16"
           runs generate() inside torch.autocast("cpu", dtype=torch.bfloat16)
  alone    a repository's encoder (in `runtime` at `precision`) and classifier alone, through
           e2v_export.runner.Emotion2vecRunner, one utterance at a time (no serving layer)
  triton   e2v-client library -> gRPC -> a running Triton at url, `concurrency` requests in flight
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from e2v_bench.memory import peak_rss_mb

PROBE_REPEATS = 10


def time_probe(score, probe) -> list[float]:
    """score(probe) once to warm up, then PROBE_REPEATS times, timed: the seconds of each."""
    score(probe)
    times = []
    for _ in range(PROBE_REPEATS):
        start = time.perf_counter()
        score(probe)
        times.append(time.perf_counter() - start)
    return times


def time_each(score, paths) -> tuple[float, list[float]]:
    """score(path) for each path in turn: the wall time of all and the seconds of each."""
    latencies = []
    start = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        score(path)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


def worker_funasr(args) -> dict:
    import contextlib
    import io

    import torch

    from e2v_export.parity import funasr_automodel

    # ncpu goes to AutoModel: it sets torch's threads again on every generate(), so a set_num_threads here would
    # be undone (0: AutoModel's default, 4)
    model = funasr_automodel(args.model_dir, **({"ncpu": args.ncpu} if args.ncpu else {}))
    paths = [str(p) for p in args.paths]

    def generate(x, **kw):
        # autocast bf16: FunASR at its best on a CPU with native bf16; emulated (slow) elsewhere
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast == "bf16" else contextlib.nullcontext()
        with precision, contextlib.redirect_stdout(io.StringIO()):
            return model.generate(x, granularity="utterance", extract_embedding=False, **kw)

    probe = time_probe(generate, args.probe)
    if args.batch:
        start = time.perf_counter()
        generate(paths, batch_size=args.batch)
        wall, latencies = time.perf_counter() - start, []
    else:
        wall, latencies = time_each(generate, paths)
    return {"wall": wall, "latencies": latencies, "probe": probe, "client_mb": peak_rss_mb()}


def worker_alone(args) -> dict:
    from e2v_bench.models import repository_runner
    from e2v_client import audio

    runner = repository_runner(Path(args.repository), args.runtime, args.precision)

    def score(path):
        runner.run(audio.load(path).samples)

    probe = time_probe(score, args.probe)
    wall, latencies = time_each(score, args.paths)
    return {
        "wall": wall,
        "latencies": latencies,
        "probe": probe,
        "client_mb": peak_rss_mb(),
        "runs_as": runner.runs_as,  # the precision the runtime really computed in
    }


def worker_triton(args) -> dict:
    from e2v_client import audio
    from e2v_client.client import Emotion2vecClient

    async def run():
        async with Emotion2vecClient(args.url, timeout=600) as client:
            await client.score(audio.load(args.probe).samples)
            probe = []
            if args.probe_latency:
                for _ in range(PROBE_REPEATS):
                    start = time.perf_counter()
                    await client.score((await asyncio.to_thread(audio.load, args.probe)).samples)
                    probe.append(time.perf_counter() - start)
            limit = asyncio.Semaphore(args.concurrency)
            latencies = []

            async def one(path):
                async with limit:
                    t = time.perf_counter()
                    clip = await asyncio.to_thread(audio.load, path)
                    await client.score(clip.samples)
                    latencies.append(time.perf_counter() - t)

            start = time.perf_counter()
            await asyncio.gather(*(one(p) for p in args.paths))
            return {"wall": time.perf_counter() - start, "latencies": latencies, "probe": probe}

    result = asyncio.run(run())
    result["client_mb"] = peak_rss_mb()
    return result


WORKERS = {"funasr": worker_funasr, "alone": worker_alone, "triton": worker_triton}


def run_in_this_process(kind: str, options_json: str) -> dict:
    """Run one worker here on options given as JSON (the child's side of run_worker)."""
    options = argparse.Namespace(**json.loads(options_json))
    options.paths = [Path(p) for p in options.paths]
    return WORKERS[kind](options)


def run_worker(kind: str, **options) -> dict:
    """Run one worker in a new Python process and return its result."""
    command = [sys.executable, "-m", __name__, kind, json.dumps(options, default=str)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark worker and print its result as JSON.")
    parser.add_argument("kind", choices=sorted(WORKERS))
    parser.add_argument("options", help="the worker's options as a JSON object")
    args = parser.parse_args(argv)
    print(json.dumps(run_in_this_process(args.kind, args.options)))


if __name__ == "__main__":
    main()
