#!/usr/bin/env python
"""Overload: about twice what the server can answer, the encoder's queue unbounded (before, e2v-export
--max-queue-size 0) and bounded (after, the default), side by side.

    .venv/bin/python scripts/overload_report.py                      # tiny random checkpoint, 60 s each
    .venv/bin/python scripts/overload_report.py --size large --seconds 180
    .venv/bin/python scripts/overload_report.py --utterances 2 --seconds 2 --measurement-ms 3000  # a smoke run

For each: the server's capacity from Triton's perf_analyzer (concurrency 4, until stable), then an open loop at
twice that rate for --seconds (e2v_bench.open_loop: requests go out on schedule whatever the answers;
perf_analyzer's own open loop stops at the first refused request). Prints answered and refused requests,
the latency percentiles of the answered ones and the server's memory (tritonserver and its stubs), and draws
the memory over time (overload-memory-*.png in --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2v_bench import perf_analyzer
from e2v_bench.memory import ProcessTreeMemory, plot_memory, trend
from e2v_bench.models import export_repository, random_checkpoint, repository_dir
from e2v_bench.open_loop import open_loop, summarize
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_client import audio
from e2v_export.random_checkpoint import SIZES
from e2v_export.repository import RepositoryOptions
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
CAPACITY_CONCURRENCY = 4  # enough requests in flight to keep this server busy


def measure(args, repository: Path, input_data: Path, clips: list, out: Path, label: str) -> dict:
    """Capacity, then the overload, on one repository; the figures of the overload."""
    server = TritonServer(repository, log_file=out / f"triton-overload-{label}.log")
    with server, ProcessTreeMemory(server.process.pid, 0.5) as memory:
        capacity_csv = out / f"overload-{label}-capacity.csv"
        url = server.grpc_url
        perf_analyzer.run_perf_analyzer(
            url, input_data, str(CAPACITY_CONCURRENCY), capacity_csv, None, args.measurement_ms
        )
        capacity = float(perf_analyzer.read_csv(capacity_csv)[0]["Inferences/Second"])
        rate = 2 * capacity
        print(f"{label}: capacity {capacity:.2f} requests/s; sending {rate:.2f}/s for {args.seconds:.0f} s ...")
        outcomes = open_loop(url, clips, rate, args.seconds)
    return {
        "queue": label,
        "capacity_rps": capacity,
        "offered_rps": rate,
        **summarize(outcomes, args.seconds),
        "memory": trend(memory.samples),
        "samples": memory.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each overload run")
    parser.add_argument("--queue", type=int, default=RepositoryOptions.max_queue_size, help="the bounded queue")
    parser.add_argument(
        "--measurement-ms", type=int, default=5000, help="perf_analyzer's window for the capacity (default: 5000)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = random_checkpoint(CACHE, args.size)
    workload = prepare_workload(CACHE, args.utterances, 0)
    input_data = perf_analyzer.write_input_data(workload.paths, CACHE / f"perf_input-{args.utterances}.json")
    clips = [audio.load(path).samples for path in workload.paths]
    results = []
    for label, queue in (("unbounded", 0), (f"bounded-{args.queue}", args.queue)):
        repository = export_repository(
            model_dir, repository_dir(CACHE, f"{args.size}-queue{queue}"), max_queue_size=queue
        )
        results.append(measure(args, repository, input_data, clips, out, label))

    print(f"\n{args.size} checkpoint, {len(workload.paths)} utterances of 1-30 s in turn, sent at twice the "
          f"capacity for {args.seconds:.0f} s:")  # fmt: skip
    print(f"{'queue':<12}{'capacity/s':>11}{'offered/s':>10}{'answered/s':>11}{'refused':>8}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'max ms':>9}{'MB start':>9}{'MB peak':>8}{'MB end':>7}")  # fmt: skip
    for r in results:
        m = r["memory"]
        print(f"{r['queue']:<12}{r['capacity_rps']:>11.2f}{r['offered_rps']:>10.2f}{r['answered_per_s']:>11.2f}"
              f"{r['refused']:>8}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{r['max_ms']:>9.0f}"
              f"{m['start_mb']:>9.0f}{m['peak_mb']:>8.0f}{m['end_mb']:>7.0f}")  # fmt: skip
        for error in r["errors"]:
            print(f"    refused: {error}")
    (out / "overload.json").write_text(json.dumps(results, indent=1))
    for r in results:
        plot_memory(
            r["samples"], out / f"overload-memory-{r['queue']}.png",
            f"Triton server memory, {args.size}, twice its capacity, queue {r['queue']}",
        )  # fmt: skip
    print(f"\nwrote {out / 'overload.json'} and the memory plots overload-memory-*.png")


if __name__ == "__main__":
    main()
