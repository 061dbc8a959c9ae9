"""What a benchmark run reports: one summary row per system, the table, the plot and bench.json."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FUNASR = "funasr"  # the system every other one is compared with (x FunASR), measured first
SERIES = re.compile(r"^(?P<series>triton\S*) c(?P<concurrency>\d+)$")  # a Triton variant at one concurrency
# each Triton variant's (marker and line, colour), the same in every run; others get the last
STYLES = {
    "triton": ("o-", "tab:blue"),
    "triton-int8": ("s-", "tab:orange"),
    "triton-openvino": ("^-", "tab:green"),
    "triton-openvino-bf16": ("D-", "tab:purple"),
    "triton-pad": ("x:", "tab:gray"),
    "triton-2x1": ("o--", "tab:cyan"),
    "triton-openvino-2x1": ("^--", "tab:olive"),
    "triton-tuned": ("*-", "tab:red"),
    "": ("v-", "tab:brown"),
}


@dataclass
class Skipped:
    """Systems this CPU cannot run as asked, named once in the output with the reason."""

    systems: list[str]
    reason: str


def cpu_record(cpu) -> dict:
    """An e2v_common.cpu.CpuInfo as bench.json records it: model, flags, cores, clock and peaks."""
    from e2v_common.cpu import REPORTED_FLAGS

    return {
        "model": cpu.model,
        "vendor": cpu.vendor,
        "cores": cpu.cores,
        "ghz": cpu.ghz,
        "flags": [flag for flag in REPORTED_FLAGS if flag in cpu.flags],
        "all_flags": sorted(cpu.flags),
        "bf16": cpu.bf16,
        "vnni": cpu.vnni,
        "peak_gflops": {p: cpu.peak_gflops(p) for p in ("fp32", "bf16", "int8")},
        "describe": cpu.describe(),
    }


def summarize(name: str, precision: str, result: dict, workload: tuple[float, float], peak: float) -> dict:
    """One system's row from a worker's result: throughput, achieved GFLOP/s and its share of the CPU's peak
    at `precision` (peak GFLOP/s), latency percentiles, memory. workload: (audio seconds, GFLOP)."""
    audio_seconds, gflop = workload
    lat = np.array(result["latencies"] or [np.nan]) * 1000
    probe = np.array(result["probe"] or [np.nan]) * 1000
    return {
        "system": name,
        "precision": precision,
        "audio_s_per_s": audio_seconds / result["wall"],
        "rtf": result["wall"] / audio_seconds,
        "gflop_per_s": gflop / result["wall"],
        "peak_pct": 100 * gflop / result["wall"] / peak,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "probe5s_p50_ms": float(np.percentile(probe, 50)),
        "probe5s_p95_ms": float(np.percentile(probe, 95)),
        "client_mb": result.get("client_mb"),
        "server_mb": result.get("server_mb"),
        "wall_s": result["wall"],
    }


class Results:
    """The rows of one run, in the order measured, each worker's raw result and the systems skipped;
    prints a line per system."""

    def __init__(self, audio_seconds: float, gflop: float, cpu):
        self.audio_seconds = audio_seconds
        self.gflop = gflop
        self.cpu = cpu  # e2v_common.cpu.CpuInfo: the peaks the rows are judged against
        self.rows: list[dict] = []
        self.raw: dict[str, dict] = {}
        self.skipped: list[Skipped] = []

    def record(self, name: str, precision: str, result: dict) -> None:
        self.raw[name] = result
        workload = (self.audio_seconds, self.gflop)
        row = summarize(name, precision, result, workload, self.cpu.peak_gflops(precision))
        if self.rows and self.rows[0]["system"] == FUNASR:  # not in a run of Triton variants only (--only)
            row["x_funasr"] = row["audio_s_per_s"] / self.rows[0]["audio_s_per_s"]
            # FunASR at its best on this CPU (bf16 autocast where it has native bf16): its rows come first
            best = max(r["audio_s_per_s"] for r in self.rows if r["system"].startswith(FUNASR))
            row["x_best_funasr"] = row["audio_s_per_s"] / best
        self.rows.append(row)
        print(f"  {name}: {row['audio_s_per_s']:.2f} audio s/s, p95 {row['p95_ms']:.0f} ms", flush=True)


def _cell(value, spec: str) -> str:
    if isinstance(value, (int, float)) and not np.isnan(value):
        return format(value, spec)
    return "-".rjust(int(spec.split(".")[0]))


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'system':<24}{'prec':>5}{'audio s/s':>10}{'RTF':>7}{'GFLOP/s':>9}{'% peak':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'5s p95 ms':>11}{'server MB':>11}{'client MB':>11}{'x FunASR':>10}{'x best':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['system']:<24}{r['precision']:>5}{_cell(r['audio_s_per_s'], '10.2f')}{_cell(r['rtf'], '7.3f')}"
            f"{_cell(r['gflop_per_s'], '9.1f')}{_cell(r['peak_pct'], '8.1f')}{_cell(r['p50_ms'], '9.0f')}"
            f"{_cell(r['p95_ms'], '9.0f')}{_cell(r['p99_ms'], '9.0f')}{_cell(r['probe5s_p95_ms'], '11.0f')}"
            f"{_cell(r.get('server_mb') or np.nan, '11.0f')}{_cell(r['client_mb'] or np.nan, '11.0f')}"
            f"{_cell(r.get('x_funasr', np.nan), '10.2f')}{_cell(r.get('x_best_funasr', np.nan), '8.2f')}"
        )


def print_skipped(skipped: list[Skipped]) -> None:
    for item in skipped:
        print(f"skipped on this CPU: {', '.join(item.systems)}: {item.reason}")


def print_accuracy(accuracy: dict[str, dict]) -> None:
    """One line per encoder choice: its agreement with ONNX Runtime fp32 on the workload."""
    for a in accuracy.values():
        print(
            f"{a['candidate']} vs {a['reference']} on the workload: "
            f"argmax agreement {a['argmax_agreement'] * 100:.1f}% ({a['utterances']} utterances), "
            f"max score diff {a['max_score_diff']:.4f}, "
            f"min embedding cosine {a['min_embedding_cosine']:.5f}"
        )


def triton_series(rows: list[dict]) -> dict[str, dict[int, dict]]:
    """{Triton variant: {concurrency: row}}, the variants in the order measured."""
    series: dict[str, dict[int, dict]] = {}
    for row in rows:
        match = SERIES.match(row["system"])
        if match:
            series.setdefault(match["series"], {})[int(match["concurrency"])] = row
    return series


def funasr_lines(rows: list[dict]) -> list[tuple[dict, str, str]]:
    """The FunASR rows drawn as horizontal lines: (row, label, line style): one at a time, its best fp32
    setting (if another), and each other precision (autocast bf16)."""
    funasr = [r for r in rows if r["system"].startswith(FUNASR)]
    if not funasr:
        return []
    first = funasr[0]
    lines = [(first, "FunASR PyTorch (one at a time)", "--")]
    best = max((r for r in funasr if r["precision"] == first["precision"]), key=lambda r: r["audio_s_per_s"])
    if best is not first:
        lines.append((best, f"FunASR, best {best['precision']} setting ({best['system']})", ":"))
    others = [r for r in funasr if r["precision"] != first["precision"]]
    lines += [(r, f"FunASR {r['system'].removeprefix(FUNASR).strip()} (torch.autocast)", "-.") for r in others]
    return lines


def plot(rows: list[dict], path: Path, size: str, cores: int, cpu_model: str = "") -> None:
    """Throughput and p95 latency of the Triton variants against concurrency, FunASR as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    concurrencies: set[int] = set()
    for name, points in triton_series(rows).items():
        xs = sorted(points)
        concurrencies.update(xs)
        style, color = STYLES.get(name, STYLES[""])
        label = f"ours: {name} ({points[xs[0]]['precision']})"
        left.plot(xs, [points[c]["audio_s_per_s"] for c in xs], style, color=color, label=label)
        right.plot(xs, [points[c]["p95_ms"] / 1000 for c in xs], style, color=color, label=label)
    for ax, key, scale in ((left, "audio_s_per_s", 1), (right, "p95_ms", 1000)):
        for row, label, style in funasr_lines(rows):
            if not np.isnan(row[key]):
                ax.axhline(row[key] / scale, color="tab:red", linestyle=style, label=label)
        ax.set_xlabel("requests in flight (concurrency)")
        ax.set_xticks(sorted(concurrencies))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left.set_ylabel("audio seconds per second")
    left.set_title("Throughput (higher is better)")
    right.set_ylabel("p95 latency per request (s)")
    right.set_title("Latency (lower is better)")
    fig.suptitle(f"emotion2vec+ {size} (random weights), {cores}-core CPU" + (f" ({cpu_model})" if cpu_model else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, workload: dict, results: Results, accuracy: dict[str, dict]) -> None:
    """bench.json: the workload, the machine and its CPU, the rows, the systems skipped, the accuracy of each
    encoder choice against ONNX Runtime fp32 and every worker's raw result."""
    document = {
        "workload": workload,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "cpu": cpu_record(results.cpu),
        "rows": results.rows,
        "skipped": [{"systems": s.systems, "reason": s.reason} for s in results.skipped],
        "accuracy": accuracy,
        "raw": results.raw,
    }
    path.write_text(json.dumps(document, indent=2))
