#!/usr/bin/env python
"""Overload: Triton's perf_analyzer sending about twice what the server can answer, the encoder's queue
unbounded (before, e2v-export --max-queue-size 0) and bounded (after, the default), side by side.

    .venv/bin/python scripts/overload_report.py                      # tiny random checkpoint, 60 s each
    .venv/bin/python scripts/overload_report.py --size large --seconds 180

For each: the server's capacity (perf_analyzer at concurrency 4, until stable), then an open loop at twice
that rate for --seconds (requests go out on schedule whatever the answers). Prints answered and refused
requests per second, the latency percentiles of the answered ones and the server's memory (tritonserver and
its stubs), and draws the memory over time (bench_results/overload-memory.png).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2v_bench import perf_analyzer
from e2v_bench.memory import ProcessTreeMemory, plot_memory, trend
from e2v_bench.models import export_repository, random_checkpoint, repository_dir
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_export.random_checkpoint import SIZES
from e2v_export.repository import RepositoryOptions
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
CAPACITY_CONCURRENCY = 4  # enough requests in flight to keep this server busy


def measure(args, repository: Path, input_data: Path, out: Path, label: str) -> dict:
    """Capacity, then the overload, on one repository; the figures of the overload."""
    server = TritonServer(repository, log_file=out / f"triton-overload-{label}.log")
    with server, ProcessTreeMemory(server.process.pid, 0.5) as memory:
        capacity_csv = out / f"overload-{label}-capacity.csv"
        url = server.grpc_url
        perf_analyzer.run_perf_analyzer(url, input_data, str(CAPACITY_CONCURRENCY), capacity_csv, None, 5000)
        capacity = float(perf_analyzer.read_csv(capacity_csv)[0]["Inferences/Second"])
        rate = 2 * capacity
        print(f"{label}: capacity {capacity:.2f} requests/s; sending {rate:.2f}/s for {args.seconds:.0f} s ...")
        overload_csv = out / f"overload-{label}.csv"
        stdout = perf_analyzer.run_perf_analyzer(url, input_data, "", overload_csv, args.seconds, 0, request_rate=rate)
        row = perf_analyzer.read_csv(overload_csv)[0]
    errors = perf_analyzer.reported_errors(stdout)
    return {
        "queue": label,
        "capacity_rps": capacity,
        "offered_rps": rate,
        "answered_rps": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000,
        "p99_ms": float(row["p99 latency"]) / 1000,
        "errors": errors,
        "memory": trend(memory.samples),
        "samples": memory.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each overload run")
    parser.add_argument("--queue", type=int, default=RepositoryOptions.max_queue_size, help="the bounded queue")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = random_checkpoint(CACHE, args.size)
    workload = prepare_workload(CACHE, args.utterances, 0)
    input_data = perf_analyzer.write_input_data(workload.paths, CACHE / f"perf_input-{args.utterances}.json")
    results = []
    for label, queue in (("unbounded", 0), (f"bounded-{args.queue}", args.queue)):
        repository = export_repository(
            model_dir, repository_dir(CACHE, f"{args.size}-queue{queue}"), max_queue_size=queue
        )
        results.append(measure(args, repository, input_data, out, label))

    print(f"\nperf_analyzer, {args.size} checkpoint, {len(workload.paths)} utterances of 1-30 s round-robin, "
          f"open loop at twice the capacity for {args.seconds:.0f} s:")  # fmt: skip
    print(f"{'queue':<12}{'capacity/s':>11}{'offered/s':>10}{'answered/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'MB start':>9}{'MB peak':>8}{'MB end':>7}  errors")  # fmt: skip
    for r in results:
        m = r["memory"]
        errors = "; ".join(sorted(set(r["errors"])))[:160] or "none"
        print(f"{r['queue']:<12}{r['capacity_rps']:>11.2f}{r['offered_rps']:>10.2f}{r['answered_rps']:>11.2f}"
              f"{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{m['start_mb']:>9.0f}{m['peak_mb']:>8.0f}{m['end_mb']:>7.0f}"
              f"  {errors}")  # fmt: skip
    (out / "overload.json").write_text(json.dumps(results, indent=1))
    for r in results:
        plot_memory(
            r["samples"], out / f"overload-memory-{r['queue']}.png",
            f"Triton server memory, {args.size}, twice its capacity, queue {r['queue']}",
        )  # fmt: skip
    print(f"\nwrote {out / 'overload.json'} and the memory plots overload-memory-*.png")


if __name__ == "__main__":
    main()
