"""Decode any audio file to what the model takes: 16 kHz mono float32.

Decoder reads a file block by block (libsndfile, or FFmpeg for what libsndfile cannot read), mixes the
channels as FunASR does and converts the rate with soxr; decode() holds the whole clip. The samples are rounded
to 16-bit PCM, so that processed_audio.wav holds exactly the samples the model is given.
"""

from __future__ import annotations

import io
import queue
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

from e2v_common.contract import FRAME_RECEPTIVE_FIELD, SAMPLE_RATE

# The longest recording held whole in memory (utterance and frame granularity): 1 h is 230 MB of 16 kHz float32,
# and more while it is decoded; segment granularity takes any length, block by block
WHOLE_RECORDING_LIMIT_S = 3600.0
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
    broken: str | None = None  # a file that broke off part-way: where decoding stopped (what came before is here)

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


BLOCK_SECONDS = 1.0  # decoded at a time: a recording of any length is held one block at a time; a file that
# breaks off loses at most the block it breaks in


class Source:
    """Audio read block by block, as batch.score_recording reads it: blocks() gives 16 kHz blocks [n, columns] of
    16-bit PCM values (k / 32768); `samples` counts those given so far, `broken` says where and why the audio broke
    off (if it did), `declared_seconds` is the length its header promises (where it has one)."""

    samples = 0
    broken: str | None = None
    declared_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Resampler:
    """Blocks [n, columns] at one rate, one after another, to 16 kHz rounded to 16-bit PCM values (k / 32768), with
    soxr's streaming resampler: what it gives, joined, equals a one-shot resample of the blocks joined."""

    def __init__(self):
        self.rate: int | None = None
        self._soxr: soxr.ResampleStream | None = None  # None at 16 kHz: nothing to convert
        self._width = 0

    def __call__(self, block: np.ndarray, rate: int) -> np.ndarray:
        if self.rate is None:
            self.rate, self._width = rate, block.shape[1]
            if rate != SAMPLE_RATE:
                self._soxr = soxr.ResampleStream(rate, SAMPLE_RATE, self._width, dtype="float64", quality="HQ")
        elif rate != self.rate:
            raise AudioError(f"the sample rate changed part-way, from {self.rate} Hz to {rate} Hz")
        return rounded_to_pcm16(self._soxr.resample_chunk(block) if self._soxr else block)

    def end(self) -> np.ndarray | None:
        """The last samples, which the resampler holds until it knows the audio has ended (None at 16 kHz)."""
        if self._soxr is None:
            return None
        return rounded_to_pcm16(self._soxr.resample_chunk(np.zeros((0, self._width)), last=True))


# An opened file: its [n, channels] float32 blocks with their rate, and the duration its header promises (where the
# format says it; to notice a file that breaks off). Each opener raises at once if it cannot open the file.
Opened = tuple[Iterator[tuple[np.ndarray, int]], float | None]


def _open_soundfile(stream: BinaryIO, block_seconds: float) -> Opened:
    """Through libsndfile: wav, flac, ogg, mp3 and more."""
    opened = soundfile.SoundFile(stream)
    declared = opened.frames / opened.samplerate
    if opened.format == "WAV":
        # libsndfile trims a WAV's length to the bytes present; the RIFF header keeps the size it was written with
        position = stream.tell()
        stream.seek(0)
        header, present = stream.read(12), stream.seek(0, io.SEEK_END)
        stream.seek(position)
        written = int.from_bytes(header[4:8], "little") + 8
        if header[:4] == b"RIFF" and present < written < 0xFFFFFFFF:
            declared *= written / present
    frames = max(1, int(opened.samplerate * block_seconds))

    def blocks():
        with opened:
            # read() until it comes back empty: SoundFile.blocks() trusts the header's length, which a truncated mp3
            # overstates (it gave the missing part as more blocks)
            while len(block := opened.read(frames, dtype="float32", always_2d=True)):
                yield block, opened.samplerate

    return blocks(), declared


def _open_ffmpeg(stream: BinaryIO, block_seconds: float) -> Opened:
    """Through FFmpeg (PyAV): m4a/aac and anything else libsndfile cannot open."""
    import av

    container = av.open(stream, mode="r")
    if not container.streams.audio:
        container.close()
        raise AudioError("the file has no audio stream")
    declared = container.duration / 1e6 if container.duration else None

    def blocks():
        with container:
            chunks, held = [], 0
            for frame in container.decode(container.streams.audio[0]):
                chunk = pcm_to_float(frame.to_ndarray())
                channels = len(frame.layout.channels)
                # planar formats come as [channels, n], packed as [1, n * channels]
                chunk = chunk.reshape(channels, -1) if frame.format.is_planar else chunk.reshape(-1, channels).T
                chunks.append(chunk.T)
                held += chunk.shape[1]
                if held >= frame.sample_rate * block_seconds:
                    yield np.concatenate(chunks), frame.sample_rate
                    chunks, held = [], 0
            if chunks:
                yield np.concatenate(chunks), frame.sample_rate

    return blocks(), declared


class Decoder(Source):
    """An audio file decoded block by block to 16 kHz: each block is [n, 1] (the channels' mix) or, with
    keep_channels and a multichannel file, [n, 1 + channels] (the mix, then each channel on its own).

    wav, flac, ogg and mp3 are read with libsndfile (soundfile); m4a/aac and anything else libsndfile cannot
    open go through FFmpeg (PyAV). Channels are averaged (as FunASR does) and the rate converted with soxr's
    streaming resampler, whose output equals a one-shot resample of the whole file. A file that breaks off
    part-way (a truncated download, a recorder that died) gives what decodes before the break, and `broken`
    says where it broke; one that decodes to nothing raises AudioError.
    """

    def __init__(self, source: str | Path | bytes, name: str = "audio", keep_channels: bool = False):
        self.name, self.keep_channels = name, keep_channels
        self.samples = 0  # decoded so far, at 16 kHz
        self.broken: str | None = None  # where and why decoding stopped early
        try:
            # closed by close() (or the with block), or once blocks() has given the last block
            self._stream = io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")  # noqa: SIM115
        except OSError as exc:
            raise AudioError(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            self._source, self.declared_seconds = self._open()
        except BaseException:
            self._stream.close()
            raise

    def close(self) -> None:
        self._stream.close()

    def _open(self) -> Opened:
        if self._stream.seek(0, io.SEEK_END) == 0:
            raise AudioError("the file is empty (0 bytes)")
        self._stream.seek(0)
        try:
            return _open_soundfile(self._stream, BLOCK_SECONDS)
        except Exception:  # not a format libsndfile reads: try FFmpeg
            self._stream.seek(0)
            try:
                return _open_ffmpeg(self._stream, BLOCK_SECONDS)
            except AudioError:
                raise
            except Exception as exc:
                raise AudioError(f"cannot decode {self.name} as audio ({type(exc).__name__}: {exc})") from None

    def blocks(self) -> Iterator[np.ndarray]:
        """The 16 kHz blocks, 16-bit PCM values (k / 32768), in order."""
        to_16k = Resampler()
        try:
            for block, rate in self._source_blocks():
                yield self._emit(to_16k(self._columns(block), rate))
            if (last := to_16k.end()) is not None:
                yield self._emit(last)
        finally:
            self._stream.close()
        declared = self.declared_seconds
        if self.broken is None and declared and self.seconds < min(declared - 0.5, declared * 0.99):
            self.broken = f"the file ends at {self.seconds:.2f} s of the {declared:.2f} s its header declares"

    def _source_blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        """The decoder's blocks at the file's rate, until the end or until the file breaks off (noted in broken)."""
        decoded = 0
        while True:
            try:
                block, rate = next(self._source)
            except StopIteration:
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if decoded == 0:
                    raise AudioError(f"cannot decode {self.name} as audio ({error})") from None
                self.broken = f"decoding stopped at {decoded / rate:.2f} s ({error})"
                return
            decoded += len(block)
            yield block, rate

    def _columns(self, block: np.ndarray) -> np.ndarray:
        block = block.astype(np.float64)
        mix = block.mean(axis=1, keepdims=True)  # channels mixed, as FunASR mixes them
        return np.hstack([mix, block]) if self.keep_channels and block.shape[1] > 1 else mix

    def _emit(self, columns: np.ndarray) -> np.ndarray:
        self.samples += len(columns)
        return columns


class RawPcm(Source):
    """Raw 16 kHz 16-bit little-endian mono PCM read from a pipe (arecord, ffmpeg or sox) block by block as it
    comes, with Decoder's interface: blocks() are [n, 1], 16-bit PCM values (k / 32768). The pipe is the caller's
    to close."""

    def __init__(self, stream: BinaryIO, name: str = "stdin", block_seconds: float = 0.1):
        self.name, self.stream = name, stream
        self.block_bytes = 2 * round(block_seconds * SAMPLE_RATE)

    def blocks(self) -> Iterator[np.ndarray]:
        pending = b""
        while data := self.stream.read(self.block_bytes):
            data, pending = pending + data, b""
            if len(data) % 2:  # half a sample: the rest comes with the next read
                data, pending = data[:-1], data[-1:]
            block = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            self.samples += len(block)
            yield block[:, None]
        if self.samples == 0:
            raise AudioError(f"{self.name} gave no audio (raw 16 kHz 16-bit mono PCM expected)")


class Pushed(Source):
    """Audio handed over chunk by chunk by another thread as it is captured (e2v-web's live microphone), with
    Decoder's interface: blocks() gives it as it comes, mixed to mono and converted to 16 kHz, until end().
    abort(reason) makes blocks() raise AudioError, and so does a wait of more than idle_seconds for a chunk: a
    recording nobody ends (its page was closed) does not hold its reader for ever."""

    def __init__(self, name: str = "live audio", idle_seconds: float = 60.0):
        self.name, self.idle_seconds = name, idle_seconds
        self._chunks: queue.Queue = queue.Queue()  # (samples, rate) as pushed, then None or an AudioError

    def push(self, samples: np.ndarray, rate: int) -> None:
        """The next samples, [n] or [n, channels], integer PCM (as a browser's recorder gives them) or float.
        Returns at once: they are converted as blocks() reads them."""
        if len(samples):
            self._chunks.put((np.asarray(samples), int(rate)))

    def end(self) -> None:
        self._chunks.put(None)

    def abort(self, reason: str) -> None:
        self._chunks.put(AudioError(reason))

    def blocks(self) -> Iterator[np.ndarray]:
        to_16k = Resampler()
        while True:
            try:
                chunk = self._chunks.get(timeout=self.idle_seconds)
            except queue.Empty:
                raise AudioError(f"no audio came from the {self.name} for {self.idle_seconds:g} s") from None
            if isinstance(chunk, AudioError):
                raise chunk
            if chunk is None:
                break
            samples, rate = chunk
            samples = pcm_to_float(samples.reshape(len(samples), -1)).astype(np.float64)
            block = to_16k(samples.mean(axis=1, keepdims=True), rate)  # channels mixed, as FunASR mixes them
            self.samples += len(block)
            yield block
        if (last := to_16k.end()) is not None:
            self.samples += len(last)
            yield last


def decode(
    source: str | Path | bytes, name: str = "audio", keep_channels: bool = False, max_seconds: float | None = None
) -> Clip:
    """Decode a whole audio file (its bytes or its path) to a 16 kHz mono clip (and, with keep_channels, each
    channel of a multichannel file on its own); AudioError if it cannot be scored, or if it is longer than
    max_seconds (refused from its header where it declares its length, before decoding)."""
    with Decoder(source, name, keep_channels) as decoder:
        _check_held_whole(decoder.declared_seconds or 0.0, max_seconds, name)
        blocks = []
        for block in decoder.blocks():
            _check_held_whole(decoder.seconds, max_seconds, name)
            blocks.append(block)
    check_length(sum(len(block) for block in blocks))
    columns = np.concatenate(blocks)
    return Clip(columns[:, 0], [columns[:, i] for i in range(1, columns.shape[1])] or None, decoder.broken)


def _check_held_whole(seconds: float, max_seconds: float | None, name: str) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{name} is longer than {max_seconds / 3600:g} h ({seconds / 3600:.1f} h or more): at utterance and "
            "frame granularity a recording is held whole; --granularity segment scores any length in bounded memory"
        )


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
    return rounded_to_pcm16(signal)


def rounded_to_pcm16(signal: np.ndarray) -> np.ndarray:
    """Float samples rounded to 16-bit PCM values, k / 32768, as float32."""
    return (np.clip(np.round(signal * 32768), -32768, 32767) / 32768).astype(np.float32)


def check_scorable(clip: Clip) -> None:
    check_length(len(clip.samples))


def check_length(num_samples: int) -> None:
    """AudioError for audio too short for the model to give one frame."""
    if num_samples == 0:
        raise AudioError("the audio is empty (0 samples)")
    if num_samples < FRAME_RECEPTIVE_FIELD:
        raise AudioError(
            f"the audio is too short: {num_samples / SAMPLE_RATE * 1000:.1f} ms; at least "
            f"{FRAME_RECEPTIVE_FIELD / SAMPLE_RATE * 1000:.0f} ms is needed"
        )


def check_not_silent(clip: Clip) -> None:
    """AudioError for silence: nothing to score as an utterance (at segment granularity it has no segments)."""
    peak = float(np.abs(clip.samples).max())
    if peak < SILENCE_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        raise AudioError(f"the audio is silent ({level}): nothing to score")


def declared_seconds(path: str | Path) -> float:
    """The duration a file's header declares, without decoding it (0.0 where it declares none, or cannot be read)."""
    try:
        with Decoder(path, Path(path).name) as decoder:
            return decoder.declared_seconds or 0.0
    except AudioError:
        return 0.0


def load(path: str | Path, keep_channels: bool = False, max_seconds: float | None = None) -> Clip:
    return decode(Path(path), Path(path).name, keep_channels, max_seconds)


def write_wav(path: str | Path, clip: Clip) -> None:
    """16 kHz mono 16-bit PCM WAV: readable by scipy.io.wavfile and soundfile."""
    soundfile.write(str(path), clip.pcm16(), SAMPLE_RATE, subtype="PCM_16", format="WAV")
