"""Recordings with known speech: espeak-ng sentences in a few voices at 16 kHz, gaps of known silence,
background noise at a given SNR, and chords, a vibrato melody or clicks in some gaps; and how a segmentation
is scored against them. The segmenter's tests (tests/test_segmenter.py) and the detectors' comparison
(scripts/vad_report.py, which chose the defaults in docs/segments.md) build them with their own seeds.

The truth of a sentence is its espeak-ng clip trimmed of the clip's own leading and trailing silence
(|x| above 2 % of the clip's peak, 1 ms guard); the gaps between sentences hold no speech.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
ESPEAK = shutil.which("espeak-ng") or "/usr/bin/espeak-ng"

SENTENCES = [
    ("en-us", "The quick brown fox jumps over the lazy dog near the river bank."),
    ("en-us+f3", "Please remember to bring the documents to the meeting tomorrow morning."),
    ("en-gb", "I cannot believe how much the city has changed over the last ten years."),
    ("en-us+m3", "Yes."),
    ("de", "Das Wetter ist heute schoen und wir gehen spazieren."),
    ("fr+m4", "Elle a achete des fleurs au marche pour sa grand mere."),
    ("es+f3", "Mi hermano trabaja en un hospital cerca de la estacion."),
    ("en-us+f2", "Why would anyone leave the door open in the middle of winter?"),
    ("en-gb-x-rp", "Absolutely not."),
    ("en-gb-scotland", "The children played football in the park until it got dark."),
    ("en-us+m1", "No way."),
    ("it", "Domani andiamo al mare con tutta la famiglia."),
]

GAP_KINDS = ("none", "none", "chords", "melody", "clicks")


@dataclass(frozen=True)
class Recording:
    name: str
    audio: np.ndarray  # float32 at 16 kHz
    truth: list[tuple[int, int]]  # the sentences' speech, [start, end) in samples
    gaps: list[tuple[int, int, str]]  # [start, end) and what the gap holds: none, chords, melody or clicks

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@functools.cache
def espeak(voice: str, text: str) -> tuple[np.ndarray, int, int]:
    """(the clip at 16 kHz, first speech sample, end of speech); synthesized once per test session."""
    wav = subprocess.run([ESPEAK, "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    clip = soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)
    loud = np.nonzero(np.abs(clip) > 0.02 * np.abs(clip).max())[0]
    guard = SAMPLE_RATE // 1000
    clip.setflags(write=False)
    return clip, max(0, int(loud[0]) - guard), min(len(clip), int(loud[-1]) + guard)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    size = 1 << max(1, n - 1).bit_length()  # a power of two: fast
    spectrum = np.fft.rfft(rng.standard_normal(size))
    frequency = np.fft.rfftfreq(size, 1 / SAMPLE_RATE)
    frequency[0] = frequency[1]
    noise = np.fft.irfft(spectrum / np.sqrt(frequency), size)[:n]
    return noise / noise.std()


def music(n: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Music-like tones, unit RMS: decaying major chords with an octave and harmonics, or a vibrato melody."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    if kind == "chords":
        step = int(rng.uniform(0.25, 0.5) * SAMPLE_RATE)
        for a in range(0, n, step):
            piece = slice(a, min(n, a + step))
            root, tt = rng.choice([220.0, 246.9, 261.6, 293.7, 329.6, 196.0]), t[piece] - t[a]
            envelope = np.exp(-tt * rng.uniform(1.5, 4)) * (1 - np.exp(-tt * 200))
            for ratio in (1.0, 1.26, 1.5, 2.0):
                for harmonic, amplitude in ((1, 1.0), (2, 0.4), (3, 0.2)):
                    phase = 2 * np.pi * root * ratio * harmonic * tt + rng.uniform(0, 2 * np.pi)
                    out[piece] += amplitude * envelope * np.sin(phase)
    else:  # a sung-like melody: 5.5 Hz vibrato, four harmonics
        step, start_phase = int(0.3 * SAMPLE_RATE), 0.0
        for a in range(0, n, step):
            piece = slice(a, min(n, a + step))
            f0, tt = rng.choice([330, 392, 440, 494, 523, 587]), t[piece] - t[a]
            phase = start_phase + 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * tt))) / SAMPLE_RATE
            start_phase = phase[-1]
            for harmonic, amplitude in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.15)):
                out[piece] += amplitude * np.sin(harmonic * phase)
    fade = min(n // 4, 160)
    if fade:
        out[:fade] *= np.linspace(0, 1, fade)
        out[-fade:] *= np.linspace(1, 0, fade)
    return out / (out.std() + 1e-9)


def clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    """4-12 decaying noise bursts a second, peaks of 0.5-1."""
    out = np.zeros(n)
    for position in rng.integers(0, max(1, n - 64), int(n / SAMPLE_RATE * rng.uniform(4, 12)) + 1):
        length = int(rng.integers(16, 64))
        burst = rng.standard_normal(length).clip(-2, 2) * np.exp(-np.arange(length) / 6.0)
        out[position : position + length] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * burst
    return out


def noise(n: int, rng: np.random.Generator, kind: str) -> np.ndarray:
    return rng.standard_normal(n) if kind == "white" else pink_noise(n, rng)


def make_recording(seed: int, noise_kind: str = "none", snr_db: float = 20.0, sentences: int = 16) -> Recording:
    """About 4 s a sentence: sentences from SENTENCES (random gain -6..0 dB) with gaps of 0.3-2 s, each gap
    holding nothing (2 in 5), chords, a melody (6 dB below the speech RMS) or clicks, 50 ms clear of the
    speech; noise_kind none, white or pink over the whole recording at snr_db below the speech RMS."""
    rng = np.random.default_rng(seed)
    lead = int(rng.uniform(0.5, 1.5) * SAMPLE_RATE)
    parts, truth, gaps, inserted = [np.zeros(lead)], [], [], []
    position = lead
    margin = int(0.05 * SAMPLE_RATE)
    for index in rng.integers(0, len(SENTENCES), sentences):
        clip, first, end = espeak(*SENTENCES[index])
        gain = 10 ** (rng.uniform(-6, 0) / 20) * 0.5 / np.abs(clip).max()
        speech = clip[first:end].astype(np.float64) * gain
        truth.append((position, position + len(speech)))
        parts.append(speech)
        position += len(speech)
        gap = np.zeros(int(rng.uniform(0.3, 2.0) * SAMPLE_RATE))
        kind = str(rng.choice(GAP_KINDS))
        if kind != "none" and len(gap) > 2 * margin + 160:
            inner = len(gap) - 2 * margin
            gap[margin:-margin] = clicks(inner, rng) if kind == "clicks" else music(inner, rng, kind)
            inserted.append((position + margin, position + len(gap) - margin, kind))
        gaps.append((position, position + len(gap), kind))
        parts.append(gap)
        position += len(gap)
    audio = np.concatenate(parts)
    speech_rms = np.sqrt(np.mean(np.concatenate([audio[a:b] for a, b in truth]) ** 2))
    for a, b, kind in inserted:
        audio[a:b] *= 0.5 if kind == "clicks" else speech_rms * 10 ** (-6 / 20)
    name = f"seed{seed}"
    if noise_kind != "none":
        audio += noise(len(audio), rng, noise_kind) * speech_rms * 10 ** (-snr_db / 20)
        name += f"_{noise_kind}{snr_db:g}dB"
    return Recording(name, np.clip(audio, -1, 1).astype(np.float32), truth, gaps)


@functools.cache
def recording(seed: int, noise_kind: str = "none", snr_db: float = 20.0) -> Recording:
    """make_recording, built once per test session (its audio must not be written to)."""
    made = make_recording(seed, noise_kind, snr_db)
    made.audio.setflags(write=False)
    return made


@dataclass(frozen=True)
class Score:
    sentences: int
    starts_near: int  # truth starts with a detected start within the tolerance
    ends_near: int  # truth ends with a detected end within the tolerance
    long_stretches: int  # sentences of at least 0.5 s
    missed: int  # of which less than half is covered by segments
    segments: int
    false_segments: int  # segments less than 10 % of which is speech
    music_gaps: int  # gaps of at least 1 s holding chords, a melody or clicks
    music_gaps_covered: int  # of which more than 0.1 s of the core (0.3 s in from each side) is in a segment

    @property
    def near_fraction(self) -> float:
        """Truth boundaries (starts and ends) with a detected boundary of the same kind within the tolerance."""
        return (self.starts_near + self.ends_near) / (2 * self.sentences)

    def __str__(self) -> str:
        return (
            f"boundaries within tolerance {self.starts_near + self.ends_near}/{2 * self.sentences} "
            f"({self.near_fraction:.1%}; starts {self.starts_near}, ends {self.ends_near}), "
            f"missed {self.missed}/{self.long_stretches}, segments {self.segments} for {self.sentences} sentences, "
            f"false {self.false_segments}, music/click gaps covered {self.music_gaps_covered}/{self.music_gaps}"
        )


def score(segments, recording: Recording, tolerance_s: float = 0.25) -> Score:
    """segments: objects with .start and .end in samples."""
    detected = np.zeros(len(recording.audio), dtype=bool)
    speech = np.zeros(len(recording.audio), dtype=bool)
    for segment in segments:
        detected[segment.start : segment.end] = True
    for a, b in recording.truth:
        speech[a:b] = True
    far = np.array([-(10**12)])
    starts = np.array([s.start for s in segments]) if segments else far
    ends = np.array([s.end for s in segments]) if segments else far
    tolerance = tolerance_s * SAMPLE_RATE
    long = [(a, b) for a, b in recording.truth if b - a >= 0.5 * SAMPLE_RATE]
    core = int(0.3 * SAMPLE_RATE)
    music_gaps = [(a, b) for a, b, kind in recording.gaps if kind != "none" and b - a >= SAMPLE_RATE]
    return Score(
        sentences=len(recording.truth),
        starts_near=sum(int(np.abs(starts - a).min() <= tolerance) for a, _ in recording.truth),
        ends_near=sum(int(np.abs(ends - b).min() <= tolerance) for _, b in recording.truth),
        long_stretches=len(long),
        missed=sum(1 for a, b in long if detected[a:b].mean() < 0.5),
        segments=len(segments),
        false_segments=sum(1 for s in segments if s.end <= s.start or speech[s.start : s.end].mean() < 0.1),
        music_gaps=len(music_gaps),
        music_gaps_covered=sum(1 for a, b in music_gaps if detected[a + core : b - core].sum() > 0.1 * SAMPLE_RATE),
    )


def total(scores: list[Score]) -> Score:
    return Score(*(sum(getattr(s, name) for s in scores) for name in Score.__dataclass_fields__))
