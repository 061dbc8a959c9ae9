"""Decode any audio file to what the model takes: 16 kHz mono float32.

wav, flac, ogg and mp3 are read with libsndfile (soundfile); m4a/aac and
anything else libsndfile cannot read go through FFmpeg (PyAV). Channels are
averaged to mono (as FunASR does) and the rate is converted with soxr.
The samples are then rounded to 16-bit PCM, so that processed_audio.wav holds
exactly the samples the model is given.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from e2v_common.contract import FRAME_RECEPTIVE_FIELD, SAMPLE_RATE

# Below this peak (-60 dBFS) a clip is treated as silence: there is no speech to score.
SILENCE_PEAK = 10 ** (-60 / 20)
AUDIO_EXTENSIONS = {
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".mp4",
    ".webm",
    ".wma",
    ".aif",
    ".aiff",
    ".caf",
    ".amr",
    ".3gp",
}


class AudioError(ValueError):
    """An input that cannot be scored, with a message for the user."""


@dataclass
class Clip:
    samples: np.ndarray  # float32, 16 kHz mono, values k / 32768 (16-bit PCM)
    channels: list[np.ndarray] | None = None  # each channel on its own, as samples (kept only when asked)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def pcm16(self) -> np.ndarray:
        return np.round(self.samples * 32768).astype(np.int16)


def pcm_to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1) as libsndfile converts it: k / 2^(bits-1) (16-bit: k / 32768).

    Unsigned PCM (8-bit WAV) is centred first. Float samples pass through.
    """
    if samples.dtype.kind == "u":
        half = 2 ** (8 * samples.dtype.itemsize - 1)
        return ((samples.astype(np.float64) - half) / half).astype(np.float32)
    if samples.dtype.kind == "i":
        return samples.astype(np.float32) / -np.iinfo(samples.dtype).min
    return samples.astype(np.float32)


def _read_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, rate


def _read_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        chunks = []
        for frame in container.decode(stream):
            chunk = pcm_to_float(frame.to_ndarray())
            channels = len(frame.layout.channels)
            # planar formats come as [channels, n], packed as [1, n * channels]
            chunk = chunk.reshape(channels, -1) if frame.format.is_planar else chunk.reshape(-1, channels).T
            chunks.append(chunk)
            rate = frame.sample_rate
        if not chunks:
            raise AudioError("the file holds no audio samples")
    return np.concatenate(chunks, axis=1).T, rate


def decode(data: bytes, name: str = "audio", keep_channels: bool = False) -> Clip:
    """Decode the bytes of an audio file to a 16 kHz mono clip (and, with keep_channels, each channel of a
    multichannel file on its own); AudioError if it cannot be scored."""
    if len(data) == 0:
        raise AudioError("the file is empty (0 bytes)")
    try:
        samples, rate = _read_soundfile(data)
    except Exception:  # not a format libsndfile reads: try FFmpeg
        try:
            samples, rate = _read_ffmpeg(data)
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(f"cannot decode {name} as audio ({type(exc).__name__}: {exc})") from None
    return from_samples(samples, rate, keep_channels)


def from_samples(samples: np.ndarray, rate: int, keep_channels: bool = False) -> Clip:
    """A 16 kHz mono 16-bit clip from float samples [n] or [n, channels] at any rate (with keep_channels, also
    each channel of a multichannel one on its own); AudioError if unscorable."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[:, None] if samples.ndim == 1 else samples
    clip = Clip(to_16k_pcm(samples.mean(axis=1), rate))  # channels mixed, as FunASR mixes them
    if keep_channels and samples.shape[1] > 1:
        clip.channels = [to_16k_pcm(channel, rate) for channel in samples.T]
    check_scorable(clip)
    return clip


def to_16k_pcm(signal: np.ndarray, rate: int) -> np.ndarray:
    """One channel at 16 kHz, rounded to 16-bit PCM values (k / 32768): what processed_audio.wav holds."""
    if rate != SAMPLE_RATE and len(signal):
        signal = soxr.resample(signal, rate, SAMPLE_RATE, quality="HQ")
    pcm = np.clip(np.round(signal * 32768), -32768, 32767)
    return (pcm / 32768).astype(np.float32)


def check_scorable(clip: Clip) -> None:
    if len(clip.samples) == 0:
        raise AudioError("the audio is empty (0 samples)")
    if len(clip.samples) < FRAME_RECEPTIVE_FIELD:
        raise AudioError(
            f"the audio is too short: {clip.seconds * 1000:.1f} ms; at least "
            f"{FRAME_RECEPTIVE_FIELD / SAMPLE_RATE * 1000:.0f} ms is needed"
        )


def check_not_silent(clip: Clip) -> None:
    """AudioError for silence: nothing to score as an utterance (at segment granularity it has no segments)."""
    peak = float(np.abs(clip.samples).max())
    if peak < SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        raise AudioError(f"the audio is silent ({level}): nothing to score")


def load(path: str | Path, keep_channels: bool = False) -> Clip:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode(data, path.name, keep_channels)


def write_wav(path: str | Path, clip: Clip) -> None:
    """16 kHz mono 16-bit PCM WAV: readable by scipy.io.wavfile and soundfile."""
    soundfile.write(str(path), clip.pcm16(), SAMPLE_RATE, subtype="PCM_16", format="WAV")
