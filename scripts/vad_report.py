#!/usr/bin/env python
"""Which voice-activity detector cuts the timeline: Silero VAD (its 8 kHz mode, ours, and its 16 kHz mode),
WebRTC's VAD (modes 0-3) and an energy detector, each through the same hysteresis (e2v_common.segmenter).

    .venv/bin/python scripts/vad_report.py                     # 8 tuning and 8 held-out recordings
    .venv/bin/python scripts/vad_report.py --recordings 1      # a smoke run

The recordings are espeak-ng sentences in 8 languages and many voices between gaps of 0.3-2 s holding nothing,
chords, a melody or clicks, in white or pink noise at 20, 15 or 10 dB SNR or none (e2v_bench.speech_recordings;
tuning seeds 21-28, held-out seeds 1-8, the tests' recordings). Each detector gets the hysteresis parameters
that did best on the tuning recordings (boundaries within 0.25 s, no miss and no false segment first); the
table is on the held-out ones: boundaries within 0.25 s of the truth, speech stretches of 0.5 s or more missed,
false segments, music or click gaps covered, audio-s/s on one thread, and in how many recordings the segments
moved by more than 0.05 s after a round trip through 8 kHz (a phone call). Prints the host and its CPU flags.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np
import soxr

from e2v_bench.speech_recordings import SAMPLE_RATE, Recording, recording, score, total
from e2v_common import contract, runtimes, segmenter
from e2v_common.cpu import REPORTED_FLAGS, CpuInfo
from e2v_export.repository import vad_files

KINDS = [("white", 20), ("pink", 15), ("white", 10), ("pink", 10), ("none", 20), ("pink", 20), ("white", 15)]
TUNING_SEEDS, HELD_OUT_SEEDS = range(21, 29), range(1, 9)
# the hysteresis settings tried for every detector (threshold, neg_threshold, pad_s); the rest at the defaults
GRID = list(itertools.product([(0.5, 0.35), (0.7, 0.6), (0.85, 0.7)], [0.1, 0.05]))


class Silero16k:
    """Silero VAD in its own 16 kHz mode: 512 new samples and 64 of context per chunk."""

    frame_samples, context_samples = 512, 64

    def __init__(self, run):
        self.run, self.rate = run, np.array(16000, dtype=np.int64)

    def initial_state(self) -> np.ndarray:
        return np.zeros((2, 1, 128), dtype=np.float32)

    def __call__(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = np.empty(len(rows), dtype=np.float32)
        for i, row in enumerate(rows):
            output, state = self.run({"input": row[None].astype(np.float32), "state": state, "sr": self.rate})
            probabilities[i] = output[0, 0]
        return probabilities, state


class WebRtc:
    """WebRTC's VAD (webrtcvad-wheels): the share of its 10 ms frames called speech in each 32 ms chunk."""

    frame_samples, context_samples = 512, 0

    def __init__(self, mode: int):
        import webrtcvad

        self.vad = webrtcvad.Vad(mode)

    def initial_state(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def __call__(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pcm = np.clip(np.round(rows * 32768), -32768, 32767).astype(np.int16)
        share = [np.mean([self.vad.is_speech(row[k : k + 160].tobytes(), SAMPLE_RATE) for k in (0, 160, 320)])
                 for row in pcm]  # fmt: skip
        return np.array(share, dtype=np.float32), state


class Energy:
    """The floor: a chunk's level against the recording's noise floor (its 10th percentile), 0 to 1 over 12 dB
    from `margin_db` above it."""

    frame_samples, context_samples = 512, 0

    def __init__(self, audio: np.ndarray, margin_db: float):
        chunks = audio[: len(audio) // 512 * 512].reshape(-1, 512)
        self.floor = np.percentile(self.level(chunks), 10)
        self.margin = margin_db

    @staticmethod
    def level(rows: np.ndarray) -> np.ndarray:
        return 10 * np.log10(np.mean(rows.astype(np.float64) ** 2, axis=1) + 1e-12)

    def initial_state(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def __call__(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        above = self.level(rows) - self.floor - self.margin
        return np.clip(above / 12, 0, 1).astype(np.float32), state


def detectors(silero_run) -> dict[str, object]:
    """name -> a function of the recording giving its detector (energy needs the recording's floor)."""
    found = {
        "Silero, 8 kHz mode (ours)": lambda audio: segmenter.SileroVad(silero_run),
        "Silero, 16 kHz mode": lambda audio: Silero16k(silero_run),
    }
    found |= {f"WebRTC VAD, mode {mode}": (lambda audio, mode=mode: WebRtc(mode)) for mode in range(4)}
    found |= {f"energy, {m} dB over the floor": (lambda audio, m=m: Energy(audio, m)) for m in (6, 12)}
    return found


def segments(make_vad, audio: np.ndarray, options: segmenter.SegmentOptions) -> list[segmenter.Segment]:
    cutter = segmenter.Segmenter(make_vad(audio), options)
    return cutter.feed(audio) + cutter.flush()


def options_of(setting) -> segmenter.SegmentOptions:
    (threshold, neg_threshold), pad_s = setting
    return segmenter.SegmentOptions(threshold=threshold, neg_threshold=neg_threshold, pad_s=pad_s)


def rank(overall) -> tuple:
    """Fewer misses and false segments first, then more boundaries near the truth."""
    return (overall.missed + overall.false_segments, -overall.near_fraction, overall.music_gaps_covered)


def moved(a: list[segmenter.Segment], b: list[segmenter.Segment]) -> bool:
    if len(a) != len(b):
        return True
    return any(abs(x.start - y.start) > 0.05 * SAMPLE_RATE or abs(x.end - y.end) > 0.05 * SAMPLE_RATE
               for x, y in zip(a, b, strict=True))  # fmt: skip


def through_8k(audio: np.ndarray) -> np.ndarray:
    return soxr.resample(soxr.resample(audio, SAMPLE_RATE, 8000, quality="HQ"), 8000, SAMPLE_RATE, quality="HQ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=8, help="tuning and held-out recordings each (1-8)")
    args = parser.parse_args()
    cpu = CpuInfo.this_machine()
    flags = " ".join(flag for flag in REPORTED_FLAGS if flag in cpu.flags)
    print(f"host: {cpu.model} ({platform.machine()}), {cpu.cores} cores, flags: {flags}; one thread per detector")

    def made(seeds) -> list[Recording]:
        return [recording(seed, *KINDS[i % len(KINDS)]) for i, seed in enumerate(seeds[: args.recordings])]

    tuning, held_out = made(TUNING_SEEDS), made(HELD_OUT_SEEDS)
    session = runtimes.open_model(vad_files()[contract.VAD_FILE], "onnxruntime", "fp32", threads=1)
    rows = []
    for name, make_vad in detectors(session.run).items():
        tried = {s: total([score(segments(make_vad, r.audio, options_of(s)), r) for r in tuning]) for s in GRID}
        best = min(GRID, key=lambda s: rank(tried[s]))
        options = options_of(best)
        start = time.monotonic()
        found = [segments(make_vad, r.audio, options) for r in held_out]
        speed = sum(r.seconds for r in held_out) / (time.monotonic() - start)
        overall = total([score(f, r) for f, r in zip(found, held_out, strict=True)])
        after_8k = [segments(make_vad, through_8k(r.audio), options) for r in held_out]
        shifted = sum(moved(a, b) for a, b in zip(found, after_8k, strict=True))
        rows.append((name, best, overall, speed, shifted))
        print(f"{name}: {overall}; {speed:.0f} audio-s/s", flush=True)

    print(f"\nheld-out: {len(held_out)} recordings, {sum(r.seconds for r in held_out):.0f} s; parameters chosen on "
          f"{len(tuning)} others")  # fmt: skip
    print("| detector | threshold / neg / pad | boundaries within 0.25 s | stretches >= 0.5 s missed | false segments "
          "| music/click gaps covered | audio-s/s, 1 thread | moved after 8 kHz |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, ((threshold, neg), pad), overall, speed, shifted in rows:
        print(
            f"| {name} | {threshold} / {neg} / {pad} | {overall.near_fraction:.1%} | {overall.missed} of "
            f"{overall.long_stretches} | {overall.false_segments} | {overall.music_gaps_covered} of "
            f"{overall.music_gaps} | {speed:,.0f} | {shifted} of {len(held_out)} |"
        )


if __name__ == "__main__":
    main()
