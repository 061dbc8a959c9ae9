"""Memory: this process's peak, and a process tree's resident memory sampled over time.

One sampler serves both benchmarks: scripts/bench.py reads the peak of the Triton server's tree
(tritonserver and its Python stubs, every 50 ms), scripts/load_test.py its trend over a soak (every 5 s).
psutil is imported only by the sampler, so that a worker process that reads its own peak does not carry it.
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
