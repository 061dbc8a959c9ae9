"""Cut a recording into speech segments, fed in pieces of any size: the same segments as in one pass.

A voice-activity detector (Silero VAD, SileroVad below) gives a speech probability per 32 ms chunk; a
hysteresis turns them into segments: speech starts at a chunk >= threshold and ends after min_silence_s
below neg_threshold; segments shorter than min_speech_s are dropped; each gets pad_s on both sides (half
the gap where two segments are closer than that); speech longer than max_segment_s is cut at its quietest
chunk within the last max_segment_s / 2 (the lowest 3-chunk mean probability, energy breaking ties); speech
that reaches max_segment_s while a silence is open is not cut: that silence ends it.

Every decision depends only on the sequence of chunks, never on where the pieces were cut. Between pieces
the Segmenter keeps its state (Segmenter.state(), plain JSON): the samples short of a chunk, the VAD's
context and recurrent state, the hysteresis, the open segment and the closed ones whose padding is not
settled yet. keep_from() says which samples a later segment may still need: a server that is handed the
state back with the next piece needs the audio from there on, and nothing before it.

Imports only numpy: e2v-export copies this file beside the segments model (as emotion2vec_segmenter.py).
Defaults measured on espeak-ng speech with noise at 10-20 dB SNR, chords, melodies and clicks in the gaps
(docs/segments.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

SAMPLE_RATE = 16000
STATE_VERSION = 1


@dataclass(frozen=True)
class SegmentOptions:
    """The segmentation's settings: request parameters of the segments model, with these defaults."""

    threshold: float = 0.7  # a chunk this likely speech starts a segment
    neg_threshold: float = 0.6  # below this a chunk counts as silence
    min_speech_s: float = 0.25  # shorter segments are dropped (one short word is kept)
    min_silence_s: float = 0.2  # silence that ends a segment
    pad_s: float = 0.05  # context added on each side
    max_segment_s: float = 20.0  # longer speech is split at its quietest point

    @classmethod
    def parse(cls, values: dict, max_seconds: float) -> SegmentOptions:
        """Options from request parameters (unknown keys ignored), checked: ValueError says what is wrong."""
        known = {f.name for f in fields(cls)}
        try:
            given = {key: float(value) for key, value in values.items() if key in known}
        except (TypeError, ValueError):
            raise ValueError(f"segment parameters must be numbers: {values}") from None
        given.setdefault("max_segment_s", min(cls.max_segment_s, longest_segment(max_seconds)))
        options = cls(**given)
        options.check(max_seconds)
        return options

    def check(self, max_seconds: float) -> None:
        if not 0 < self.neg_threshold <= self.threshold < 1:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if min(self.min_speech_s, self.min_silence_s, self.pad_s) < 0:
            raise ValueError("min_speech_s, min_silence_s and pad_s cannot be negative")
        if 2 * self.pad_s > self.min_silence_s:
            # a closed segment waits for its padding to settle; with more, a neighbour that is neither kept nor
            # dropped could hold it back, and the audio kept for it, up to max_segment_s
            raise ValueError("pad_s can be at most half of min_silence_s")
        if not 1.0 <= self.max_segment_s <= longest_segment(max_seconds):
            raise ValueError(
                f"max_segment_s must be between 1 and {longest_segment(max_seconds):g} s (two thirds of the "
                f"server's {max_seconds:g} s per request, so that every piece of a recording moves on)"
            )


def longest_segment(max_seconds: float) -> float:
    """The largest max_segment_s for a server that takes max_seconds per request."""
    return round(max_seconds * 2 / 3, 3)


@dataclass(frozen=True)
class Segment:
    start: int  # samples from the recording's start, inclusive
    end: int  # exclusive
    split: bool = False  # ended by max_segment_s, not by silence


def lowpass_taps(taps: int = 127, cutoff_hz: float = 3300.0, beta: float = 8.0) -> np.ndarray:
    """A Kaiser-windowed sinc low-pass for decimating 16 kHz to 8 kHz."""
    k = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff_hz / SAMPLE_RATE * np.sinc(2 * cutoff_hz / SAMPLE_RATE * k) * np.kaiser(taps, beta)
    return (h / h.sum()).astype(np.float32)


class SileroVad:
    """Silero VAD's silero_vad.onnx in its 8 kHz mode: a speech probability per 512 samples (32 ms) at 16 kHz.

    The 16 kHz audio is low-passed below 3.3 kHz and decimated to 8 kHz first, so that a recording that went
    through 8 kHz on its way (a phone call) gets the same segments as one that did not; Silero's own 16 kHz
    mode reacts to the band above 4 kHz, and its segments moved by up to 4 s after such a round trip.

    `run(feeds) -> [output, stateN]` runs the ONNX file: inputs `input` [1, 288] float32 (32 samples of
    context and 256 new ones at 8 kHz), `state` [2, 1, 128] float32 and `sr` (int64 8000).
    """

    frame_samples = 512  # at 16 kHz

    def __init__(self, run):
        self.run = run
        self.taps = lowpass_taps()
        # 16 kHz samples before a chunk that its row needs: the model's 32 samples of 8 kHz context, and the filter
        self.context_samples = 64 + len(self.taps) - 1
        self.rate = np.array(8000, dtype=np.int64)

    def initial_state(self) -> np.ndarray:
        return np.zeros((2, 1, 128), dtype=np.float32)

    def __call__(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows: [n, context + 512] float32 at 16 kHz -> (speech probability [n], the state after them)."""
        windows = np.lib.stride_tricks.sliding_window_view(rows, len(self.taps), axis=1)[:, ::2]
        decimated = np.ascontiguousarray(windows @ self.taps[::-1], dtype=np.float32)  # [n, 288] at 8 kHz
        probabilities = np.empty(len(rows), dtype=np.float32)
        for i in range(len(rows)):
            output, state = self.run({"input": decimated[i : i + 1], "state": state, "sr": self.rate})
            probabilities[i] = output[0, 0]
        return probabilities, state


@dataclass
class _Closed:
    start: int
    end: int
    split: bool


class Segmenter:
    """Feed a recording's 16 kHz float samples piece by piece; segments come out as soon as they are final."""

    def __init__(self, vad, options: SegmentOptions, state: dict | None = None):
        self.vad, self.options = vad, options
        self.chunk, self.context = vad.frame_samples, vad.context_samples
        seconds = lambda s: int(round(s * SAMPLE_RATE))  # noqa: E731
        self.min_speech, self.min_silence = seconds(options.min_speech_s), seconds(options.min_silence_s)
        self.pad, self.max_segment = seconds(options.pad_s), seconds(options.max_segment_s)
        self.split_window = seconds(options.max_segment_s / 2)
        self._new()
        if state is not None:
            self._restore(state)

    def _new(self) -> None:
        self.leftover = np.zeros(0, dtype=np.float32)  # < one chunk, not yet run
        self.history = np.zeros(self.context, dtype=np.float32)  # the samples before the next chunk
        self.vad_state = self.vad.initial_state()
        self.chunks = 0  # chunks run
        self.fed = 0  # samples fed
        # the hysteresis and the open segment
        self.speaking = False
        self.start = 0
        self.silent_since: int | None = None
        self.continued = False  # the open segment continues a split one: it is kept whatever its length
        self.confirmed = False  # the open segment is long enough to be kept whatever follows
        self.probabilities: list[float] = []  # per chunk of the open segment
        self.energies: list[float] = []
        self.closed: list[_Closed] = []  # kept, waiting for their padding to settle
        self.last_end: int | None = None  # unpadded end of the last segment given out

    # --- feeding --------------------------------------------------------------------------------------
    def feed(self, audio: np.ndarray) -> list[Segment]:
        """The next samples, any number; returns the segments that no later audio can change."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.fed += len(audio)
        data = np.concatenate([self.leftover, audio])
        count = len(data) // self.chunk
        self.leftover = data[count * self.chunk :].copy()
        out: list[Segment] = []
        for first in range(0, count, 512):  # at most 512 chunks (16 s) of rows at a time
            n = min(512, count - first)
            self._run(data[first * self.chunk : (first + n) * self.chunk].reshape(n, self.chunk), out)
        return out

    def flush(self) -> list[Segment]:
        """The end of the recording: the last partial chunk (zero-padded) is run, every segment closed."""
        out: list[Segment] = []
        if len(self.leftover):
            last = np.zeros((1, self.chunk), dtype=np.float32)
            last[0, : len(self.leftover)] = self.leftover
            self.leftover = np.zeros(0, dtype=np.float32)
            self._run(last, out)
        if self.speaking:
            end = min(self.silent_since if self.silent_since is not None else self.fed, self.fed)
            if self.continued or end - self.start >= self.min_speech:
                self.closed.append(_Closed(self.start, end, False))
            self.speaking = False
        self._give_out(out, final=True)
        return out

    def keep_from(self) -> int:
        """The first sample that a segment given out later may contain: audio before it is no longer needed."""
        starts = [c.start for c in self.closed] + [self.chunks * self.chunk]
        if self.speaking:
            starts.append(self.start)
        return max(0, min(starts) - self.pad)

    # --- the hysteresis -------------------------------------------------------------------------------
    def _run(self, frames: np.ndarray, out: list[Segment]) -> None:
        rows = np.empty((len(frames), self.context + self.chunk), dtype=np.float32)
        rows[:, self.context :] = frames
        joined = np.concatenate([self.history, frames.reshape(-1)])
        for i in range(len(frames)):  # each row: the `context` samples before its chunk, then the chunk
            rows[i, : self.context] = joined[i * self.chunk : i * self.chunk + self.context]
        self.history = joined[len(joined) - self.context :].copy()
        probabilities, self.vad_state = self.vad(rows, self.vad_state)
        energies = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
        for probability, energy in zip(probabilities, energies, strict=True):
            self._step(float(probability), float(energy))
            self._give_out(out)

    def _step(self, probability: float, energy: float) -> None:
        here = self.chunks * self.chunk  # this chunk's first sample
        self.chunks += 1
        after = here + self.chunk
        if not self.speaking:
            if probability >= self.options.threshold:
                self.speaking, self.start, self.silent_since = True, here, None
                self.continued = self.confirmed = False
                self.probabilities, self.energies = [probability], [energy]
                self._confirm(after)
            return
        self.probabilities.append(probability)
        self.energies.append(energy)
        if probability >= self.options.threshold:
            self.silent_since = None
        elif probability < self.options.neg_threshold:
            if self.silent_since is None:
                self.silent_since = here
            if after - self.silent_since >= self.min_silence:
                if self.continued or self.silent_since - self.start >= self.min_speech:
                    self.closed.append(_Closed(self.start, self.silent_since, False))
                self.speaking, self.silent_since = False, None
                self.probabilities, self.energies = [], []
                return
        self._confirm(after)
        # no split while a silence is open: it ends the segment within min_silence_s anyway, and a cut inside it
        # would leave a piece of silence
        if self.silent_since is None and after - self.start >= self.max_segment:
            self._split()

    def _confirm(self, after: int) -> None:
        # speech that has lasted min_speech with no silence open is kept, however it ends
        if not self.confirmed and self.silent_since is None and after - self.start >= self.min_speech:
            self.confirmed = True

    def _split(self) -> None:
        """Close the open segment at its quietest chunk within the last split_window; the rest goes on."""
        probabilities = np.asarray(self.probabilities)
        energies = np.asarray(self.energies)
        first = max(1, len(probabilities) - self.split_window // self.chunk)
        edged = np.concatenate([probabilities[:1], probabilities, probabilities[-1:]])
        smooth = (edged[:-2] + edged[1:-1] + edged[2:]) / 3.0
        window_energy = energies[first:]
        spread = window_energy.max() - window_energy.min()
        rank = (window_energy - window_energy.min()) / spread if spread > 0 else 0.0
        cut_chunk = first + int(np.argmin(smooth[first:] + 0.05 * rank))
        cut = self.start + cut_chunk * self.chunk
        self.closed.append(_Closed(self.start, cut, True))
        self.start = cut
        self.probabilities, self.energies = self.probabilities[cut_chunk:], self.energies[cut_chunk:]
        self.continued = self.confirmed = True

    def _give_out(self, out: list[Segment], final: bool = False) -> None:
        """Pad the closed segments whose neighbours are known, and give them out in order."""
        heard = self.chunks * self.chunk
        while self.closed:
            segment = self.closed[0]
            next_start = None
            if len(self.closed) > 1:
                next_start = self.closed[1].start
            elif self.speaking and self.confirmed:
                next_start = self.start
            elif not final:
                settled = segment.end + 2 * self.pad
                if heard < settled or (self.speaking and self.start < settled):
                    break  # a neighbour close enough to share the padding may still come
            if self.last_end is not None and segment.start - self.last_end < 2 * self.pad:
                start = self.last_end + (segment.start - self.last_end) // 2
            else:
                start = max(0, segment.start - self.pad)
            if next_start is not None and next_start - segment.end < 2 * self.pad:
                end = segment.end + (next_start - segment.end) // 2
            else:
                end = segment.end + self.pad
            out.append(Segment(int(start), int(min(end, self.fed)), segment.split))
            self.last_end = segment.end
            self.closed.pop(0)

    # --- state between pieces -------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to go on with the next piece, as plain JSON values."""
        return {
            "version": STATE_VERSION,
            "options": asdict(self.options),
            "leftover": self.leftover.tolist(),
            "history": self.history.tolist(),
            "vad_state": self.vad_state.reshape(-1).tolist(),
            "chunks": self.chunks,
            "fed": self.fed,
            "speaking": self.speaking,
            "start": self.start,
            "silent_since": self.silent_since,
            "continued": self.continued,
            "confirmed": self.confirmed,
            "probabilities": self.probabilities,
            "energies": self.energies,
            "closed": [[c.start, c.end, c.split] for c in self.closed],
            "last_end": self.last_end,
        }

    def _restore(self, state: dict) -> None:
        """Go on from state(); ValueError for a state this code did not write or that does not fit."""
        try:
            if state["version"] != STATE_VERSION or SegmentOptions(**state["options"]) != self.options:
                raise ValueError("the state was written by another version or with other segment parameters")
            self.leftover = np.asarray(state["leftover"], dtype=np.float32)
            self.history = np.asarray(state["history"], dtype=np.float32)
            self.vad_state = np.asarray(state["vad_state"], dtype=np.float32).reshape(self.vad_state.shape)
            self.chunks, self.fed = int(state["chunks"]), int(state["fed"])
            self.speaking, self.start = bool(state["speaking"]), int(state["start"])
            self.silent_since = None if state["silent_since"] is None else int(state["silent_since"])
            self.continued, self.confirmed = bool(state["continued"]), bool(state["confirmed"])
            self.probabilities = [float(p) for p in state["probabilities"]]
            self.energies = [float(e) for e in state["energies"]]
            self.closed = [_Closed(int(s), int(e), bool(split)) for s, e, split in state["closed"]]
            self.last_end = None if state["last_end"] is None else int(state["last_end"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a segments state: {exc}") from None
        fits = (
            len(self.leftover) < self.chunk
            and len(self.history) == self.context
            and self.fed == self.chunks * self.chunk + len(self.leftover)
            and len(self.probabilities) == len(self.energies) <= (self.max_segment + self.min_silence) // self.chunk + 2
            and len(self.closed) <= self.max_segment // self.chunk + 2
        )
        if not fits:
            raise ValueError("not a segments state: its sizes do not fit")


# --- handing the state to a client and back --------------------------------------------------------------
def resume_state(cutter: Segmenter) -> bytes:
    """What a client hands back to go on where `cutter` is: its state and the sample to send audio from."""
    return json.dumps(cutter.state() | {"resume_at": cutter.keep_from()}).encode()


def resumed(vad, text: bytes) -> tuple[Segmenter, int]:
    """(the segmenter that resume_state() described, the sample the next audio must start at); ValueError for
    anything else."""
    try:
        state = json.loads(text)
        options = SegmentOptions(**state["options"])
        resume_at = int(state["resume_at"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a state this server gave: {exc}") from None
    cutter = Segmenter(vad, options, state)
    if not 0 <= resume_at <= cutter.keep_from():
        raise ValueError("not a state this server gave: its resume point is past what it still needs")
    return cutter, resume_at
