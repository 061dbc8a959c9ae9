"""Memory: this process's peak, and a process tree's resident memory sampled over time.

One sampler serves both benchmarks: scripts/bench.py reads the peak of the Triton server's tree
(tritonserver and its Python stubs, every 50 ms), scripts/load_test.py its trend over a soak (every 5 s),
drawn by plot_memory(). psutil and matplotlib are imported only where used.
A worker process that reads its own peak imports neither, so that it does not carry them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; getrusage's maxrss can carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ProcessTreeMemory:
    """Resident memory (MB) of a process and all its descendants, sampled every `interval` seconds
    on a thread while the context is open.

    proportional: PSS instead of RSS. Triton and its stubs share the Python backend's shared-memory
    region, which RSS counts once per process that touched it; PSS counts each page once (slower to read).
    samples: (seconds since the start, MB) for each sample; peak: the largest sample (0 before the first).
    """

    def __init__(self, pid: int, interval: float = 0.05, proportional: bool = False):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.proportional = proportional
        self.samples: list[tuple[float, float]] = []
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        """The tree's resident memory now (RSS, or PSS when proportional), in MB."""
        procs = [self.process] + self.process.children(recursive=True)
        if self.proportional:
            return sum(p.memory_full_info().pss for p in procs) / 2**20
        return sum(p.memory_info().rss for p in procs) / 2**20

    def _run(self) -> None:
        import psutil

        start = time.monotonic()
        while not self._stop.is_set():
            try:
                mb = self.sample()
            except psutil.Error:  # a process of the tree ended while being read
                pass
            else:
                self.samples.append((time.monotonic() - start, mb))
                self.peak = max(self.peak, mb)
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessTreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def trend(samples: list[tuple[float, float]]) -> dict:
    """Start (mean of the first tenth), end (mean of the last tenth) and peak MB of samples, and their span."""
    values = np.array([mb for _, mb in samples])
    tenth = max(1, len(values) // 10)
    return {
        "start_mb": float(values[:tenth].mean()),
        "end_mb": float(values[-tenth:].mean()),
        "peak_mb": float(values.max()),
        "seconds": samples[-1][0],
        "samples": len(values),
    }


def flatness(samples: list[tuple[float, float]], warmup_s: float, window_s: float = 60.0) -> dict:
    """How flat memory is after `warmup_s`, window by window (`window_s`): the mean of each window (what the
    server keeps, with the working memory of the requests in flight averaged), its floor (the least sample:
    what it keeps beneath the work) and its peak, each set's largest deviation from its own mean (%); the
    slope of a straight line fitted to the samples (MB/min) and the samples' range."""
    after = np.array([(t, mb) for t, mb in samples if t >= warmup_s])
    windows = ((after[:, 0] - warmup_s) // window_s).astype(int)
    full = [w for w in np.unique(windows) if (windows == w).sum() >= 0.8 * window_s / _interval(samples)]
    per_window = {
        "means": np.array([after[windows == w, 1].mean() for w in full]),
        "floors": np.array([after[windows == w, 1].min() for w in full]),
        "peaks": np.array([after[windows == w, 1].max() for w in full]),
    }
    result = {"warmup_s": warmup_s, "window_s": window_s}
    for kind, values in per_window.items():
        result[f"window_{kind}_mb"] = values.round(1).tolist()
        result[f"{kind}_deviation"] = float(np.abs(values - values.mean()).max() / values.mean())
    return result | {
        "level_mb": float(per_window["means"].mean()),
        "slope_mb_per_min": float(np.polyfit(after[:, 0] / 60, after[:, 1], 1)[0]),
        "min_mb": float(after[:, 1].min()),
        "max_mb": float(after[:, 1].max()),
    }


def _interval(samples: list[tuple[float, float]]) -> float:
    """The median time between samples."""
    return float(np.median(np.diff([t for t, _ in samples])))


def plot_memory(
    samples: list[tuple[float, float]],
    path: Path,
    title: str,
    flat: dict | None = None,
    measure: str = "RSS",
    phase_ends: dict[str, float] | None = None,
) -> None:
    """A PNG of memory (MB) against time (minutes), with its start, end and peak (trend()) marked; with
    `flat` (flatness()), the window means and floors after warm-up and a band of +-5 % around their level; with
    `phase_ends` ({phase: seconds at its end}), each phase named. measure: RSS or PSS (ProcessTreeMemory)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trend(samples)
    minutes = [s / 60 for s, _ in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(minutes, [mb for _, mb in samples], ".-", markersize=3, label=f"memory ({measure})")
    ax.axhline(t["peak_mb"], color="tab:red", linestyle=":", label=f"peak {t['peak_mb']:.0f} MB")
    if flat:
        level, starts = flat["level_mb"], flat["warmup_s"] / 60
        ends = [starts + (k + 1) * flat["window_s"] / 60 for k in range(len(flat["window_means_mb"]))]
        window = f"mean of each {flat['window_s']:g} s"
        ax.step(ends, flat["window_means_mb"], where="pre", color="tab:green", label=window)
        ax.step(ends, flat["window_floors_mb"], where="pre", color="tab:olive", linestyle=":", label="its floor")
        ax.axhspan(0.95 * level, 1.05 * level, color="tab:green", alpha=0.15, label="their level +-5 %")
        ax.axvline(starts, color="grey", linestyle="--", label="end of warm-up")
    previous_end = 0.0
    for phase, end in (phase_ends or {}).items():
        ax.axvline(end / 60, color="grey", linewidth=0.8)
        ax.text((previous_end + end) / 120, 0.02, phase, transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
        previous_end = end
    summary = f"start {t['start_mb']:.0f} MB, end {t['end_mb']:.0f} MB (means of the first and last tenth)"
    ax.set_title(f"{title}\n{summary}", fontsize=10)
    ax.set_xlabel("minutes since the server started")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
