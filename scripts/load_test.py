#!/usr/bin/env python
"""Load test with Triton's own perf_analyzer (from the tritonclient 2.51 wheel) against the ensemble over gRPC.

    .venv/bin/python scripts/load_test.py                          # concurrency sweep 1, 2, 4, 8
    .venv/bin/python scripts/load_test.py --soak 600 --concurrency 4  # 10 minutes: errors and server memory

It starts the embedded server on the bench repository (scripts/bench.py builds it; large random checkpoint),
or uses --url. Input: variable-length utterances (1-30 s, the bench workload) in perf_analyzer's JSON input
format, used round-robin. perf_analyzer's CSV is kept in the output folder. The soak run samples the
server's memory (RSS of tritonserver and its Python stubs) every 5 s and reports its trend.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same workload and repositories as the benchmark)
from e2v_client import audio
from e2v_server import contract  # noqa: E402


def perf_analyzer_env() -> dict:
    """perf_analyzer links libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel) even on a CPU machine."""
    import nvidia.cuda_runtime

    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return {**os.environ, "LD_LIBRARY_PATH": f"{lib}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}"}


def write_input_data(paths: list[Path], out: Path) -> Path:
    """perf_analyzer's input format: one entry per utterance, each with its own shape."""
    data = []
    for path in paths:
        samples = audio.load(path).samples
        data.append({contract.ENSEMBLE_INPUT: {"content": samples.tolist(), "shape": [len(samples)]}})
    out.write_text(json.dumps({"data": data}))
    return out


def run_perf_analyzer(
    url: str, input_data: Path, concurrency: str, csv_path: Path, seconds: float | None, measurement_ms: int
) -> str:
    command = [
        str(Path(sys.executable).parent / "perf_analyzer"),
        "-m",
        contract.ENSEMBLE_MODEL,
        "-i",
        "grpc",
        "-u",
        url,
        "--input-data",
        str(input_data),
        "--concurrency-range",
        concurrency,
        "--percentile",
        "95",
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(measurement_ms),
        "--stability-percentage",
        "1000",
        "--max-trials",
        "3",
        "-f",
        str(csv_path),
    ]
    if seconds:  # the soak test: three windows of a third each (perf_analyzer needs three to report)
        command[command.index("--measurement-interval") + 1] = str(int(seconds * 1000 / 3))
    done = subprocess.run(command, env=perf_analyzer_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def print_csv(csv_path: Path, audio_seconds_per_request: float) -> list[dict]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"{'concurrency':>11}{'infer/s':>9}{'audio s/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for row in rows:
        ips = float(row["Inferences/Second"])
        print(
            f"{row['Concurrency']:>11}{ips:>9.2f}{ips * audio_seconds_per_request:>11.2f}"
            f"{float(row['p50 latency']) / 1000:>9.0f}{float(row['p95 latency']) / 1000:>9.0f}"
            f"{float(row['p99 latency']) / 1000:>9.0f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start the embedded one)")
    parser.add_argument("--size", default="large", choices=["tiny", "base", "large"])
    parser.add_argument("--int8", action="store_true", help="serve the int8 repository")
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="requests in flight, one perf_analyzer run each (default: 1 2 4 8)",
    )
    parser.add_argument("--measurement-ms", type=int, default=30000)
    parser.add_argument("--soak", type=float, help="one run of this many seconds; reports errors and memory trend")
    parser.add_argument("--out", default=str(bench.ROOT / "bench_results"))
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = bench.workload_lengths(args.utterances, 0)
    paths = bench.write_workload(bench.CACHE / f"workload-{args.utterances}-0", lengths, 0)
    input_data = write_input_data(paths, bench.CACHE / f"perf_input-{args.utterances}.json")
    per_request = float(np.mean(lengths))
    tag = f"{args.size}-int8" if args.int8 else args.size
    csv_path = out / f"perf_analyzer-{tag}{'-soak' if args.soak else ''}.csv"

    server = None
    if not args.url:
        from e2v_export.random_checkpoint import make_test_checkpoint
        from e2v_server.serve import TritonServer

        model_dir = bench.CACHE.parent / "checkpoints" / f"{args.size}-random-seed0"
        if not (model_dir / "model.pt").exists():
            make_test_checkpoint(args.size, 0, model_dir)
        repo = bench.export_repository(model_dir, bench.CACHE / f"repo-{tag}", args.int8)
        server = TritonServer(repo, log_file=out / f"triton-load-{tag}.log").start()
        args.url = server.grpc_url
    try:
        memory: list[tuple[float, float]] = []
        stop = threading.Event()
        if server is not None:
            import psutil

            def sample():
                root = psutil.Process(server.process.pid)
                start = time.monotonic()
                while not stop.is_set():
                    procs = [root] + root.children(recursive=True)
                    memory.append((time.monotonic() - start, sum(p.memory_info().rss for p in procs) / 2**20))
                    stop.wait(5)

            threading.Thread(target=sample, daemon=True).start()
        all_rows = []
        for c in args.concurrency:
            part = csv_path.with_suffix(f".c{c}.csv")
            print(
                f"perf_analyzer: concurrency {c}, {'%.0f s' % args.soak if args.soak else 'until stable'} ...",
                flush=True,
            )
            stdout = run_perf_analyzer(args.url, input_data, str(c), part, args.soak, args.measurement_ms)
            with open(part, newline="") as f:
                all_rows.extend(csv.DictReader(f))
            errors = [line for line in stdout.splitlines() if "error" in line.lower() or "fail" in line.lower()]
            print("\n".join(errors) if errors else "perf_analyzer reported no errors")
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)
        for c in args.concurrency:
            csv_path.with_suffix(f".c{c}.csv").unlink()
        stop.set()
        print(
            f"\nperf_analyzer on {contract.ENSEMBLE_MODEL} ({tag}), gRPC, {len(paths)} utterances of 1-30 s "
            f"(mean {per_request:.1f} s) round-robin:"
        )
        print_csv(csv_path, per_request)
        print(f"perf_analyzer CSV: {csv_path}")
        if memory:
            values = np.array([m for _, m in memory])
            first, last = values[: max(1, len(values) // 10)].mean(), values[-max(1, len(values) // 10) :].mean()
            print(
                f"server memory (RSS, tritonserver + stubs): start {first:.0f} MB, end {last:.0f} MB, "
                f"peak {values.max():.0f} MB over {memory[-1][0]:.0f} s ({len(values)} samples)"
            )
            (out / f"server_memory-{tag}{'-soak' if args.soak else ''}.json").write_text(json.dumps(memory))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
