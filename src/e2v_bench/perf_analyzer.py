"""Triton's own perf_analyzer (from the tritonclient wheel) against the ensemble over gRPC.

Input: the workload's utterances in perf_analyzer's JSON input format, used round-robin. Each concurrency is
one perf_analyzer run with a CSV of its own; merge_csv() joins them into one file.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from e2v_common import contract


def perf_analyzer_env() -> dict:
    """perf_analyzer links libcudart.so.12 (from the nvidia-cuda-runtime-cu12 wheel) even on a CPU machine."""
    import nvidia.cuda_runtime

    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return {**os.environ, "LD_LIBRARY_PATH": f"{lib}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}"}


def write_input_data(paths: list[Path], out: Path) -> Path:
    """perf_analyzer's input format: one entry per utterance, each with its own shape."""
    from e2v_client import audio

    data = []
    for path in paths:
        samples = audio.load(path).samples
        data.append({contract.ENSEMBLE_INPUT: {"content": samples.tolist(), "shape": [len(samples)]}})
    out.write_text(json.dumps({"data": data}))
    return out


def run_perf_analyzer(
    url: str,
    input_data: Path,
    concurrency: str,
    csv_path: Path,
    seconds: float | None,
    measurement_ms: int,
    request_rate: float | None = None,
) -> str:
    """One perf_analyzer run; its stdout. seconds: a soak of that length instead of measuring until stable.
    request_rate: requests per second sent on schedule whatever the answers (an open loop, for overloads)
    instead of `concurrency` requests in flight."""
    if seconds:  # the soak test: three windows of a third each (perf_analyzer needs three to report)
        measurement_ms = int(seconds * 1000 / 3)
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
        # an open loop needs the asynchronous API: with blocking calls, its threads would cap the requests in flight
        *(
            ["--request-rate-range", f"{request_rate:g}", "--async"]
            if request_rate
            else ["--concurrency-range", concurrency]
        ),
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
    done = subprocess.run(command, env=perf_analyzer_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def reported_errors(stdout: str) -> list[str]:
    """The lines of perf_analyzer's output that mention an error or a failure."""
    return [line for line in stdout.splitlines() if "error" in line.lower() or "fail" in line.lower()]


def read_csv(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def merge_csv(parts: list[Path], csv_path: Path) -> None:
    """Join the rows of several perf_analyzer CSVs into csv_path and remove the parts."""
    rows = [row for part in parts for row in read_csv(part)]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for part in parts:
        part.unlink()


def print_csv(csv_path: Path, audio_seconds_per_request: float) -> list[dict]:
    rows = read_csv(csv_path)
    print(f"{'concurrency':>11}{'infer/s':>9}{'audio s/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for row in rows:
        ips = float(row["Inferences/Second"])
        print(
            f"{row['Concurrency']:>11}{ips:>9.2f}{ips * audio_seconds_per_request:>11.2f}"
            f"{float(row['p50 latency']) / 1000:>9.0f}{float(row['p95 latency']) / 1000:>9.0f}"
            f"{float(row['p99 latency']) / 1000:>9.0f}"
        )
    return rows
