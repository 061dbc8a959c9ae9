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

    samples: (seconds since the start, MB) for each sample; peak: the largest sample (0 before the first).
    """

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        """The tree's resident memory now, in MB."""
        procs = [self.process] + self.process.children(recursive=True)
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


def plot_memory(samples: list[tuple[float, float]], path: Path, title: str) -> None:
    """A PNG of memory (MB) against time (minutes), with its start, end and peak (trend()) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trend(samples)
    minutes = [s / 60 for s, _ in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(minutes, [mb for _, mb in samples], ".-", markersize=3, label="resident memory (RSS)")
    ax.axhline(t["peak_mb"], color="tab:red", linestyle=":", label=f"peak {t['peak_mb']:.0f} MB")
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
