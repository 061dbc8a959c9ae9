"""What a benchmark run reports: one summary row per system, the table, the plot and bench.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np

FUNASR = "funasr"  # the system every other one is compared with (x FunASR), measured first


def summarize(name: str, result: dict, audio_seconds: float, gflop: float, funasr: dict | None) -> dict:
    """One system's row from a worker's result: throughput, achieved GFLOP/s, latency percentiles, memory."""
    lat = np.array(result["latencies"] or [np.nan]) * 1000
    probe = np.array(result["probe"] or [np.nan]) * 1000
    row = {
        "system": name,
        "audio_s_per_s": audio_seconds / result["wall"],
        "rtf": result["wall"] / audio_seconds,
        "gflop_per_s": gflop / result["wall"],
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "probe5s_p50_ms": float(np.percentile(probe, 50)),
        "probe5s_p95_ms": float(np.percentile(probe, 95)),
        "client_mb": result.get("client_mb"),
        "server_mb": result.get("server_mb"),
        "wall_s": result["wall"],
    }
    if funasr:
        row["x_funasr"] = row["audio_s_per_s"] / funasr["audio_s_per_s"]
    return row


class Results:
    """The rows of one run, in the order measured, and each worker's raw result; prints a line per system."""

    def __init__(self, audio_seconds: float, gflop: float):
        self.audio_seconds = audio_seconds
        self.gflop = gflop
        self.rows: list[dict] = []
        self.raw: dict[str, dict] = {}

    def record(self, name: str, result: dict) -> None:
        self.raw[name] = result
        row = summarize(name, result, self.audio_seconds, self.gflop, self.rows[0] if self.rows else None)
        self.rows.append(row)
        print(f"  {name}: {row['audio_s_per_s']:.2f} audio s/s, p95 {row['p95_ms']:.0f} ms", flush=True)


def _cell(value, spec: str) -> str:
    if isinstance(value, (int, float)) and not np.isnan(value):
        return format(value, spec)
    return "-".rjust(int(spec.split(".")[0]))


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'system':<24}{'audio s/s':>10}{'RTF':>7}{'GFLOP/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'5s p95 ms':>11}{'server MB':>11}{'client MB':>11}{'x FunASR':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['system']:<24}{_cell(r['audio_s_per_s'], '10.2f')}{_cell(r['rtf'], '7.3f')}"
            f"{_cell(r['gflop_per_s'], '9.1f')}{_cell(r['p50_ms'], '9.0f')}{_cell(r['p95_ms'], '9.0f')}"
            f"{_cell(r['p99_ms'], '9.0f')}{_cell(r['probe5s_p95_ms'], '11.0f')}"
            f"{_cell(r.get('server_mb') or np.nan, '11.0f')}{_cell(r['client_mb'] or np.nan, '11.0f')}"
            f"{_cell(r.get('x_funasr', np.nan), '10.2f')}"
        )


def print_accuracy(accuracy: dict) -> None:
    print(
        f"\nint8 vs fp32 on the workload: argmax agreement {accuracy['argmax_agreement'] * 100:.1f}%, "
        f"max score diff {accuracy['max_score_diff']:.4f}, "
        f"min embedding cosine {accuracy['min_embedding_cosine']:.5f}"
    )


def plot(rows: list[dict], concurrencies: list[int], path: Path) -> None:
    """Throughput and p95 latency of the Triton variants against concurrency, FunASR as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    funasr = next(r for r in rows if r["system"] == FUNASR)
    best = max((r for r in rows if r["system"].startswith(FUNASR)), key=lambda r: r["audio_s_per_s"])
    for prefix, style in (("triton", "o-"), ("triton-int8", "s-"), ("triton-pad", "x:")):
        series = [next((r for r in rows if r["system"] == f"{prefix} c{c}"), None) for c in concurrencies]
        xs = [c for c, r in zip(concurrencies, series, strict=True) if r]
        if xs:
            left.plot(xs, [r["audio_s_per_s"] for r in series if r], style, label=f"ours: {prefix}")
            right.plot(xs, [r["p95_ms"] / 1000 for r in series if r], style, label=f"ours: {prefix}")
    for ax, key, scale in ((left, "audio_s_per_s", 1), (right, "p95_ms", 1000)):
        ax.axhline(funasr[key] / scale, color="tab:red", linestyle="--", label="FunASR PyTorch (one at a time)")
        if best is not funasr and not np.isnan(best[key]):
            ax.axhline(
                best[key] / scale, color="tab:red", linestyle=":", label=f"FunASR, best setting ({best['system']})"
            )
        ax.set_xlabel("requests in flight (concurrency)")
        ax.set_xticks(concurrencies)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("audio seconds per second")
    left.set_title("Throughput (higher is better)")
    right.set_ylabel("p95 latency per request (s)")
    right.set_title("Latency (lower is better)")
    fig.suptitle("emotion2vec+ large (random weights), 2-core CPU, fp32 and int8")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_json(path: Path, workload: dict, results: Results, accuracy: dict | None) -> None:
    """bench.json: the workload, the machine, the rows, the int8 accuracy and every worker's raw result."""
    document = {
        "workload": workload,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": results.rows,
        "int8_accuracy": accuracy,
        "raw": results.raw,
    }
    path.write_text(json.dumps(document, indent=2))
