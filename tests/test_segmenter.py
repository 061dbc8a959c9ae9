"""The speech segmenter (e2v_common.segmenter): a recording fed in pieces of any size, or piece by piece
through its JSON state as the segments model is fed, gives exactly the one-pass segments, and no segment
reaches before the keep_from() the server resumes at; the real Silero VAD finds the sentences of espeak-ng
recordings with noise, chords, melodies and clicks at the default options, the same after a round trip
through 8 kHz or 44.1 kHz or as a stereo file; silence, noise and music give no segment; bad options and
forged states are refused."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from e2v_bench.speech_recordings import Recording, clicks, espeak, music, noise, recording, score, total
from e2v_client import audio as client_audio
from e2v_common import runtimes
from e2v_common.segmenter import SAMPLE_RATE, Segment, Segmenter, SegmentOptions, SileroVad

CHUNK = 512  # samples a probability
SECOND = SAMPLE_RATE


# --- running a segmenter ----------------------------------------------------------------------------
def one_pass(vad, audio: np.ndarray, options: SegmentOptions) -> list[Segment]:
    cutter = Segmenter(vad, options)
    return cutter.feed(audio) + cutter.flush()


def check_given(given: list[Segment], before: list[Segment], keep_from: int, fed: int) -> None:
    """Segments given out by one feed or flush: in order, after those before, none reaching before the
    keep_from() said before this piece (the server has dropped that audio), none past the audio fed."""
    end = before[-1].end if before else 0
    for segment in given:
        assert keep_from <= segment.start < segment.end <= fed, (segment, keep_from, fed)
        assert segment.start >= end, (segment, end)
        end = segment.end


def in_pieces(vad, audio: np.ndarray, options: SegmentOptions, sizes: list[int], round_trip: bool) -> list[Segment]:
    """Feed audio cut into pieces of `sizes` (cycled); with round_trip each piece goes to a new Segmenter made
    from the JSON of the last one's state(), as the segments model goes on from a request's STATE."""
    cutter = Segmenter(vad, options)
    out: list[Segment] = []
    position = keep_from = 0
    for size in itertools.cycle(sizes):
        if position >= len(audio):
            break
        if round_trip:
            cutter = Segmenter(vad, options, json.loads(json.dumps(cutter.state())))
        assert cutter.fed == position
        piece = audio[position : position + size]
        given = cutter.feed(piece)
        position += len(piece)
        check_given(given, out, keep_from, position)
        out += given
        assert keep_from <= cutter.keep_from() <= position  # never moves back
        keep_from = cutter.keep_from()
    if round_trip:
        cutter = Segmenter(vad, options, json.loads(json.dumps(cutter.state())))
    given = cutter.flush()
    check_given(given, out, keep_from, len(audio))
    return out + given


def like_the_server(vad, audio: np.ndarray, options: SegmentOptions, max_seconds: float) -> list[Segment]:
    """The client's and the segments model's loop: each request holds max_seconds of the recording from the
    previous response's RESUME_AT (keep_from()) and the state as JSON; the segmenter is fed the samples from
    its `fed` on; the segments are cut out of the request's own samples."""
    piece_samples = int(max_seconds * SAMPLE_RATE)
    start, state, out = 0, None, []
    while True:
        piece = audio[start : start + piece_samples]
        last = start + len(piece) >= len(audio)
        cutter = Segmenter(vad, options, state)
        assert start <= cutter.fed <= start + len(piece)  # the server's check
        given = cutter.feed(piece[cutter.fed - start :])
        if last:
            given += cutter.flush()
        check_given(given, out, start, start + len(piece))
        out += given
        if last:
            return out
        resume_at = cutter.keep_from()
        assert start < resume_at <= start + len(piece), "the next piece must move on (the client's check)"
        start, state = resume_at, json.loads(json.dumps(cutter.state() | {"resume_at": resume_at}))


# --- replayed probabilities -------------------------------------------------------------------------
class ReplayedVad:
    """A VAD that gives a stored probability per chunk, in the order the chunks come; it checks that every
    row it is handed is the `context_samples` of the recording before its chunk (zeros before the start)
    and the chunk (zero-padded past the end). Its state, the next chunk's index, goes through JSON."""

    frame_samples = CHUNK

    def __init__(self, probabilities: np.ndarray, audio: np.ndarray, context_samples: int = 48):
        self.probabilities = np.asarray(probabilities, dtype=np.float32)
        self.context_samples = context_samples
        padded = np.concatenate([np.zeros(context_samples), audio, np.zeros(CHUNK)]).astype(np.float32)
        self.rows = np.lib.stride_tricks.sliding_window_view(padded, context_samples + CHUNK)[::CHUNK]

    def initial_state(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def __call__(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = int(state[0])
        assert np.array_equal(rows, self.rows[first : first + len(rows)]), f"rows from chunk {first}"
        return self.probabilities[first : first + len(rows)].copy(), np.array([first + len(rows)], dtype=np.float32)


def probability_track(seed: int, seconds: float, longest_s: float) -> np.ndarray:
    """Speech-like probabilities a chunk: silences of one chunk to 2.5 s, blips to 6 s of speech with short
    dips (some chunks between neg_threshold and threshold), and stretches of 1.2-2.5 x longest_s that force
    max_segment_s splits; the first stretch is one of them; speech across every 30 s of the recording."""
    rng = np.random.default_rng(seed)
    chunks = int(seconds * SAMPLE_RATE / CHUNK)
    track = np.zeros(chunks)
    i = 0
    while i < chunks:
        i += int(rng.integers(1, 80))
        long = i < 80 or rng.random() < 0.1
        length = int(rng.uniform(1.2, 2.5) * longest_s * SAMPLE_RATE / CHUNK) if long else int(rng.integers(1, 190))
        track[i : i + length] = rng.uniform(0.55, 1.0, size=len(track[i : i + length]))
        for _ in range(length // 40):
            dip = i + int(rng.integers(0, length))
            track[dip : dip + int(rng.integers(1, 4 if long else 12))] = rng.uniform(0.0, 0.5)
        i += length
    for mark in range(30 * SECOND, chunks * CHUNK, 30 * SECOND):  # speech across every 30 s
        track[mark // CHUNK - 24 : mark // CHUNK + 24] = rng.uniform(0.8, 1.0, size=48)
    return np.clip(track + rng.normal(0, 0.05, chunks), 0, 1)


def replay_audio(seed: int, chunks: int) -> np.ndarray:
    """Noise whose level changes every chunk (the split's energy tie-break), ending short of a whole chunk."""
    rng = np.random.default_rng(seed + 1000)
    levels = np.repeat(10 ** rng.uniform(-3, -0.5, chunks), CHUNK)
    return (rng.standard_normal(chunks * CHUNK) * levels)[: chunks * CHUNK - 100].astype(np.float32)


REPLAY_OPTIONS = {
    "defaults": SegmentOptions(),
    "library-like": SegmentOptions(
        threshold=0.5, neg_threshold=0.35, min_speech_s=0.25, min_silence_s=0.1, pad_s=0.03, max_segment_s=8.0
    ),
    # padding of half the silence that ends a segment, the most allowed: closed segments wait for their neighbour
    "wide padding": SegmentOptions(
        threshold=0.4, neg_threshold=0.3, min_speech_s=0.1, min_silence_s=0.5, pad_s=0.25, max_segment_s=5.0
    ),
    "no minimums": SegmentOptions(
        threshold=0.6, neg_threshold=0.6, min_speech_s=0.0, min_silence_s=0.0, pad_s=0.0, max_segment_s=1.0
    ),
}
PIECE_SIZES = {
    "511": [511],
    "512": [512],
    "513": [513],
    "odd mix": [CHUNK * 7 + 3, 17, 30 * SECOND + 5, 1, 12345, 777, 40000],
    "30 s": [30 * SECOND],
    "60 s": [60 * SECOND],
}


@pytest.fixture(scope="module", params=list(REPLAY_OPTIONS))
def replayed(request):
    """(options, audio, the one-pass segments, a fresh VAD for it) on 100 s of replayed probabilities."""
    options = REPLAY_OPTIONS[request.param]
    seed = list(REPLAY_OPTIONS).index(request.param)
    track = probability_track(seed, 100.0, options.max_segment_s)
    audio = replay_audio(seed, len(track))
    one = one_pass(ReplayedVad(track, audio), audio, options)
    assert len(one) > 10 and any(s.split for s in one), "the track must have segments and forced splits"
    return options, audio, one, lambda: ReplayedVad(track, audio, context_samples=seed * 40)


@pytest.mark.parametrize("sizes", list(PIECE_SIZES))
def test_replayed_probabilities_in_pieces_give_the_one_pass_segments(replayed, sizes):
    options, audio, one, vad = replayed
    pieces = PIECE_SIZES[sizes]
    assert in_pieces(vad(), audio, options, pieces, round_trip=False) == one
    assert in_pieces(vad(), audio, options, pieces, round_trip=True) == one
    crossing = [s for s in one if s.start // pieces[0] != (s.end - 1) // pieces[0]]
    assert crossing, "segments must cross the pieces' ends"


@pytest.mark.parametrize("max_seconds", [30.0, 60.0, 47.3])
def test_replayed_probabilities_fed_like_the_segments_model_give_the_one_pass_segments(replayed, max_seconds):
    options, audio, one, vad = replayed
    assert like_the_server(vad(), audio, options, max_seconds) == one


@pytest.mark.parametrize("options", ["wide padding", "no minimums"])
def test_one_sample_at_a_time_gives_the_one_pass_segments(options):
    options = REPLAY_OPTIONS[options]
    track = probability_track(7, 16.0, options.max_segment_s)
    track[100:400] = 0.9  # 9.6 s of speech: split
    audio = replay_audio(7, len(track))
    one = one_pass(ReplayedVad(track, audio), audio, options)
    assert len(one) >= 3 and any(s.split for s in one)
    assert in_pieces(ReplayedVad(track, audio), audio, options, [1], round_trip=False) == one
    # through the state after every piece of 1-3 samples, and some longer ones
    sizes = [1, 2, 3, 509, 1, 1023, 7]
    assert in_pieces(ReplayedVad(track, audio), audio, options, sizes, round_trip=True) == one


# --- the real Silero VAD ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def silero() -> SileroVad:
    spec = importlib.util.find_spec("silero_vad")  # found, not imported: its __init__ imports torch
    assert spec is not None and spec.origin is not None, "pip install --no-deps silero-vad (make setup does)"
    session = runtimes.open_model(Path(spec.origin).parent / "data" / "silero_vad.onnx", "onnxruntime", "fp32", 1)
    return SileroVad(session.run)


class Recorded:
    """A VAD that notes every probability the one it wraps gives."""

    def __init__(self, vad):
        self.vad, self.frame_samples, self.context_samples = vad, vad.frame_samples, vad.context_samples
        self.probabilities: list[np.ndarray] = []

    def initial_state(self):
        return self.vad.initial_state()

    def __call__(self, rows, state):
        probabilities, state = self.vad(rows, state)
        self.probabilities.append(probabilities)
        return probabilities, state

    def all(self) -> np.ndarray:
        return np.concatenate(self.probabilities)


@pytest.mark.parametrize("max_segment_s", [20.0, 2.0])
def test_silero_in_pieces_and_through_its_state_gives_the_one_pass_segments(silero, max_segment_s):
    options = SegmentOptions(max_segment_s=max_segment_s)
    audio = recording(2, "pink", 15).audio
    reference = Recorded(silero)
    one = one_pass(reference, audio, options)
    assert len(one) >= 10 and any(s.split for s in one) == (max_segment_s < 10)
    for sizes in ([30 * SECOND], [7777, 12345, 100003, 1, 513, 3 * SECOND + 1]):
        for through_state in (False, True):
            recorded = Recorded(silero)
            assert in_pieces(recorded, audio, options, sizes, through_state) == one, (sizes, through_state)
            assert np.array_equal(recorded.all(), reference.all())  # the very same probabilities
    assert like_the_server(silero, audio, options, max_seconds=30.0) == one


# --- accuracy on espeak-ng recordings at the default options ----------------------------------------
# Recordings of about 55 s (16 sentences, 128 in all), seeds fixed beforehand, each with its own noise.
# Measured (espeak-ng 1.51, silero-vad 6.2.3): 245/256 boundaries within 0.25 s (95.7 %; with 0.1 s of padding
# 91.8 %, ends 0.25-0.4 s late from the padding and Silero's decay after speech), 0 sentences missed, no false
# segment, 1/43 music or click gaps covered. The defaults were chosen on 8 other recordings (seeds 21-28: 95.3 %).
ACCURACY_RECORDINGS = [
    (1, "white", 20),
    (2, "pink", 15),
    (3, "white", 10),
    (4, "pink", 10),
    (5, "white", 20),
    (6, "pink", 15),
    (7, "white", 10),
    (8, "pink", 10),
]


def test_default_options_find_the_sentences_of_noisy_espeak_recordings(silero):
    scores, within_half_a_second = [], []
    for seed, kind, snr in ACCURACY_RECORDINGS:
        made = recording(seed, kind, snr)
        segments = one_pass(silero, made.audio, SegmentOptions())
        scores.append(score(segments, made))
        within_half_a_second.append(score(segments, made, tolerance_s=0.5))
        print(f"{made.name} ({made.seconds:.0f} s): {scores[-1]}")
    all_of_them, near_ends = total(scores), total(within_half_a_second)
    print(f"all: {all_of_them}")
    assert all_of_them.near_fraction >= 0.95, all_of_them  # measured 0.957
    assert all_of_them.starts_near >= 0.95 * all_of_them.sentences, all_of_them  # measured 126/128
    assert all_of_them.missed == 0, all_of_them
    assert all_of_them.false_segments == 0, all_of_them
    assert all_of_them.music_gaps_covered <= 3, all_of_them  # measured 2/43
    assert abs(all_of_them.segments - all_of_them.sentences) <= 4, all_of_them  # measured 128 for 128
    print(f"within 0.5 s: {near_ends}")
    assert near_ends.near_fraction >= 0.95, near_ends


# --- the same segments whatever the way the audio came ----------------------------------------------
def same_segments(a: list[Segment], b: list[Segment], tolerance_s: float = 0.05) -> float:
    """The largest shift of a boundary between a and b, which must have as many segments."""
    assert len(a) == len(b), (len(a), len(b))
    shifts = [abs(x.start - y.start) for x, y in zip(a, b, strict=True)]
    shifts += [abs(x.end - y.end) for x, y in zip(a, b, strict=True)]
    largest = max(shifts, default=0) / SAMPLE_RATE
    assert largest <= tolerance_s, largest
    return largest


def round_trip(audio: np.ndarray, rate: int) -> np.ndarray:
    back = soxr.resample(soxr.resample(audio, SAMPLE_RATE, rate), rate, SAMPLE_RATE).astype(np.float32)
    return np.pad(back[: len(audio)], (0, max(0, len(audio) - len(back))))


def stereo_through_the_client(audio: np.ndarray) -> np.ndarray:
    wav = io.BytesIO()
    soundfile.write(wav, np.stack([audio, audio], axis=1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return client_audio.decode(wav.getvalue(), "stereo.wav").samples


@pytest.mark.parametrize("made", [(1, "white", 20), (4, "pink", 10), (6, "pink", 15)], ids=str)
def test_resampled_or_stereo_audio_gives_the_same_segments(silero, made):
    audio = recording(*made).audio
    options = SegmentOptions()
    one = one_pass(silero, audio, options)
    for way, changed in (
        ("via 8 kHz", round_trip(audio, 8000)),
        ("via 44.1 kHz", round_trip(audio, 44100)),
        ("stereo WAV", stereo_through_the_client(audio)),
    ):
        assert len(changed) == len(audio)
        print(f"{way}: largest shift {same_segments(one, one_pass(silero, changed, options)):.3f} s")


# --- edge cases -------------------------------------------------------------------------------------
def not_speech(kind: str, seconds: float = 20.0) -> np.ndarray:
    rng = np.random.default_rng(5)
    n = int(seconds * SAMPLE_RATE)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind in ("white", "pink"):
        return (noise(n, rng, kind) * 0.1).astype(np.float32)
    if kind == "clicks":
        return (clicks(n, rng) * 0.5).astype(np.float32)
    return (music(n, rng, kind) * 0.2).astype(np.float32)


@pytest.mark.parametrize("kind", ["silence", "white", "pink", "chords", "melody", "clicks"])
def test_no_speech_gives_no_segment(silero, kind):
    audio = not_speech(kind)
    assert one_pass(silero, audio, SegmentOptions()) == []
    assert in_pieces(silero, audio, SegmentOptions(), [7 * SECOND + 3], round_trip=True) == []


def test_one_short_word_is_one_segment(silero):
    clip, first, end = espeak("en-us+m3", "Yes.")  # 0.36 s
    audio = np.concatenate([np.zeros(SECOND), clip * 0.5 / np.abs(clip).max(), np.zeros(SECOND)]).astype(np.float32)
    made = Recording("yes", audio, [(SECOND + first, SECOND + end)], [])
    segments = one_pass(silero, audio, SegmentOptions())
    assert len(segments) == 1 and not segments[0].split
    assert score(segments, made).near_fraction == 1.0
    assert segments[0].start <= SECOND + first and segments[0].end >= SECOND + end


def test_an_empty_or_tiny_recording_gives_no_segment(silero):
    for samples in (0, 1, 511, 512, 513):
        assert one_pass(silero, np.zeros(samples, dtype=np.float32), SegmentOptions()) == []


def test_options_parse_takes_request_parameters():
    assert SegmentOptions.parse({}, max_seconds=30.0) == SegmentOptions()
    assert SegmentOptions.parse({}, max_seconds=12.0).max_segment_s == 8.0  # two thirds of a request at most
    parsed = SegmentOptions.parse({"threshold": "0.5", "neg_threshold": 0.35, "last_piece": True}, 30.0)
    assert (parsed.threshold, parsed.neg_threshold, parsed.pad_s) == (0.5, 0.35, 0.05)
    assert SegmentOptions.parse({"max_segment_s": 20}, 30.0).max_segment_s == 20.0
    assert SegmentOptions.parse({"pad_s": 0.1}, 30.0).pad_s == 0.1  # at most half the silence that ends a segment


@pytest.mark.parametrize(
    "values",
    [
        {"threshold": 0.5, "neg_threshold": 0.6},  # neg_threshold above threshold
        {"threshold": 1.0},
        {"neg_threshold": 0.0},
        {"pad_s": 0.15},  # more than half of min_silence_s
        {"min_silence_s": 0.5, "pad_s": 0.6},
        {"min_speech_s": -0.1},
        {"max_segment_s": 20.001},  # beyond two thirds of max_seconds
        {"max_segment_s": 0.5},
        {"threshold": "high"},
        {"threshold": None},
    ],
    ids=str,
)
def test_options_parse_refuses_bad_values(values):
    with pytest.raises(ValueError):
        SegmentOptions.parse(values, max_seconds=30.0)


def test_options_parse_refuses_a_maximum_segment_beyond_two_thirds_of_a_request():
    assert SegmentOptions.parse({"max_segment_s": 40}, max_seconds=60.0).max_segment_s == 40.0
    with pytest.raises(ValueError, match="two thirds"):
        SegmentOptions.parse({"max_segment_s": 40.5}, max_seconds=60.0)


def a_state(silero) -> dict:
    """A real state in the middle of speech, with an open segment and leftover samples."""
    cutter = Segmenter(silero, SegmentOptions())
    cutter.feed(recording(2, "pink", 15).audio[: 3 * SECOND + 1234])
    state = json.loads(json.dumps(cutter.state()))
    assert state["speaking"] and state["probabilities"] and state["leftover"]
    return state


def forged(state: dict, **changes) -> dict:
    return {**json.loads(json.dumps(state)), **changes}


def test_segmenter_refuses_a_forged_or_mismatched_state(silero):
    state = a_state(silero)
    Segmenter(silero, SegmentOptions(), state)  # the real one goes on
    with pytest.raises(ValueError, match="segment parameters"):
        Segmenter(silero, SegmentOptions(pad_s=0.1), state)  # other options than the state's
    options = dict(state["options"], threshold=0.5)
    bad = [
        forged(state, options=options),
        forged(state, options={**state["options"], "volume": 11}),
        forged(state, version=0),
        forged(state, history=state["history"][:-1]),
        forged(state, leftover=[0.0] * CHUNK, fed=state["fed"] + CHUNK - len(state["leftover"])),
        forged(state, fed=state["fed"] + 1),
        forged(state, vad_state=state["vad_state"][:-1]),
        forged(state, probabilities=state["probabilities"][:-1]),
        forged(state, probabilities=[0.9] * 700, energies=[-30.0] * 700),
        forged(state, closed=[[0, 10]]),
        forged(state, closed=[[0, 10, False]] * 700),
        forged(state, chunks="many"),
        {key: value for key, value in state.items() if key != "energies"},
        [],
        "state",
    ]
    for number, wrong in enumerate(bad):
        with pytest.raises(ValueError):
            Segmenter(silero, SegmentOptions(), wrong)
            pytest.fail(f"forged state {number} was taken")


# --- faults found and fixed ---------------------------------------------------------------------------
@pytest.mark.parametrize("speech_chunks", [620, 622, 624])
def test_speech_ending_just_before_the_longest_segment_gives_no_segment_of_silence(speech_chunks):
    track = np.zeros(700)
    track[:speech_chunks] = 0.95  # 19.84-19.97 s of speech, then silence: max_segment_s (20 s) is 625 chunks
    audio = np.full(len(track) * CHUNK, 0.01, dtype=np.float32)
    segments = one_pass(ReplayedVad(track, audio), audio, SegmentOptions())
    speech_end = speech_chunks * CHUNK
    assert all(segment.start < speech_end for segment in segments), segments


def test_every_piece_moves_on_whatever_the_probabilities():
    """With 2 * pad_s > min_silence_s a closed segment could wait on an undecided neighbour for up to
    max_segment_s, and a piece could not move on: such options are refused; at the bound, the pieces move on."""
    with pytest.raises(ValueError, match="pad_s can be at most half of min_silence_s"):
        SegmentOptions(pad_s=0.2, min_silence_s=0.2).check(30.0)
    options = SegmentOptions(pad_s=0.1, min_silence_s=0.2)
    options.check(30.0)
    track = np.zeros(3000)
    track[10:625] = 0.95  # 19.7 s of speech, closed by the silence after it
    track[632], track[633] = 0.95, 0.1  # a candidate within 2 * pad_s, its silence open at once
    track[634:1250] = 0.65  # neither speech nor silence: not confirmed, not closed
    audio = np.full(len(track) * CHUNK, 0.01, dtype=np.float32)
    like_the_server(ReplayedVad(track, audio), audio, options, max_seconds=30.0)
