"""Deterministic speech-like audio for tests and benchmarks (no recordings needed).

A voiced source with a wandering pitch and a few harmonics, shaped by syllable
envelopes, with unvoiced noise bursts and pauses: enough structure that the
model's frames differ over time, unlike white noise.
"""

from __future__ import annotations

import numpy as np

from e2v_common.contract import SAMPLE_RATE


def speech_like(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    pitch = 120 + 40 * rng.random() + 25 * np.sin(2 * np.pi * (0.3 + rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllable_rate = 3.0 + 2.0 * rng.random()  # syllables per second
    envelope = np.clip(np.sin(np.pi * syllable_rate * t + rng.random() * np.pi), 0, None) ** 2
    pauses = (np.sin(2 * np.pi * 0.4 * t + rng.random() * 6) > -0.6).astype(np.float64)
    noise = rng.standard_normal(n) * (rng.random(n) < 0.3) * 0.3
    audio = (voiced * envelope + noise * (1 - envelope)) * pauses
    audio += 0.003 * rng.standard_normal(n)  # room noise
    return (0.3 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)
