"""The workload: a fixed, seeded set of speech-like utterances of 1 to 30 s, written as WAV files.

The files live in the bench cache (``.cache/bench`` of the project), one folder per (count, seed), beside a
5 s probe utterance used for the latency of a short clip alone. Every system reads and decodes them itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2v_common.contract import SAMPLE_RATE

PROBE_SECONDS = 5.0
PROBE_FILE = "probe_5s.wav"


def cache_dir(root: Path) -> Path:
    """The benchmarks' cache folder in a project checkout at root (workloads, repositories)."""
    return root / ".cache" / "bench"


def workload_lengths(count: int, seed: int) -> list[float]:
    """Utterance lengths from 1 to 30 s, most of them short, as in real recordings (log-uniform)."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(1.0), np.log(30.0), count))
    lengths[:2] = [1.0, 30.0]  # both ends always present
    return [round(float(x), 2) for x in rng.permutation(lengths)]


def write_workload(folder: Path, lengths: list[float], seed: int) -> list[Path]:
    """Write (once) one WAV per length and the probe into folder; the utterances' paths, in order."""
    from e2v_client import audio
    from e2v_common.synthetic_speech import speech_like

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, seconds in enumerate(lengths):
        path = folder / f"utt_{i:03d}_{seconds:05.2f}s.wav"
        if not path.exists():
            audio.write_wav(path, audio.from_samples(speech_like(seconds, seed + i), SAMPLE_RATE))
        paths.append(path)
    probe = folder / PROBE_FILE
    if not probe.exists():
        audio.write_wav(probe, audio.from_samples(speech_like(PROBE_SECONDS, seed + 999), SAMPLE_RATE))
    return paths


@dataclass
class Workload:
    lengths: list[float]  # seconds, as drawn
    paths: list[Path]  # one WAV per length
    probe: Path  # the 5 s probe utterance

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio in the files, as decoded."""
        from e2v_client import audio

        return sum(len(audio.load(p).samples) for p in self.paths) / SAMPLE_RATE


def prepare_workload(cache: Path, count: int, seed: int) -> Workload:
    """The workload of `count` utterances drawn with `seed`, written under cache if it is not there yet."""
    lengths = workload_lengths(count, seed)
    paths = write_workload(cache / f"workload-{count}-{seed}", lengths, seed)
    return Workload(lengths, paths, paths[0].parent / PROBE_FILE)
