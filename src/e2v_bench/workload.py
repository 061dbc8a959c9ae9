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


def call_recording(path: Path, seconds: float, gaps: tuple[float, float] = (0.5, 4.0), seed: int = 0) -> Path:
    """A long recording as a call gives it: the example clips (espeak-ng speech) one after another between
    pauses of `gaps` seconds in faint noise, at 44.1 kHz in two channels (the second at half the level), written
    to path in the format its suffix names (wav, flac, mp3; m4a through FFmpeg). Written once per path."""
    if path.exists():
        return path
    from e2v_client import audio

    examples = Path(__file__).resolve().parents[2] / "examples"
    clips = [audio.load(p).samples for p in sorted(examples.glob("*.*")) if p.suffix in audio.AUDIO_EXTENSIONS]
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < seconds * SAMPLE_RATE:
        pause = rng.standard_normal(int(rng.uniform(*gaps) * SAMPLE_RATE)).astype(np.float32) * 1e-3
        parts += [pause, clips[len(parts) // 2 % len(clips)]]
        total += len(pause) + len(parts[-1])
    mono = np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]
    stereo = audio.rounded_to_pcm16(np.stack([mono, mono * 0.5], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, stereo, SAMPLE_RATE)
    return path


def write_audio(path: Path, samples: np.ndarray, rate: int, target_rate: int = 44100) -> None:
    """[n, channels] float samples at rate, resampled to target_rate, written in the format of path's suffix."""
    import soundfile
    import soxr

    resampled = soxr.resample(samples, rate, target_rate).astype(np.float32)
    if path.suffix != ".m4a":
        soundfile.write(path, resampled, target_rate)
        return
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=target_rate, layout="stereo")
        for start in range(0, len(resampled), target_rate * 10):  # 10 s frames: a 1-hour file is not held twice
            planar = np.ascontiguousarray(resampled[start : start + target_rate * 10].T)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
            frame.sample_rate = target_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
