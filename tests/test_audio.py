"""Decoding: one convention for integer PCM (libsndfile's, k / 2^(bits-1)) whichever library decodes."""

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from e2v_client import audio
from e2v_common.contract import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]


def pcm16_wav(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.reshape(-1, channels), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _whole(opener, data: bytes) -> tuple[np.ndarray, int]:
    """All the blocks of a file opened by one of the decoders, joined, and its rate."""
    blocks, _ = opener(io.BytesIO(data), block_seconds=0.3)
    parts = list(blocks)
    return np.concatenate([block for block, _ in parts]), parts[0][1]


@pytest.mark.parametrize("channels", [1, 2])
def test_one_16_bit_file_decodes_to_the_same_samples_through_soundfile_and_ffmpeg(channels):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, size=SAMPLE_RATE * channels, dtype=np.int16)
    pcm[:4] = [-32768, 32767, 0, -1]  # both ends of the range
    data = pcm16_wav(pcm, channels=channels)

    through_soundfile, rate_a = _whole(audio._open_soundfile, data)
    through_ffmpeg, rate_b = _whole(audio._open_ffmpeg, data)
    assert rate_a == rate_b == SAMPLE_RATE
    assert through_soundfile.dtype == through_ffmpeg.dtype == np.float32
    assert np.array_equal(through_soundfile, through_ffmpeg)
    assert np.array_equal(through_soundfile.ravel(), pcm.astype(np.float32) / 32768)


def test_pcm_to_float_scales_each_width_as_libsndfile():
    assert audio.pcm_to_float(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]
    assert audio.pcm_to_float(np.array([-(2**31), 2**30], np.int32)).tolist() == [-1.0, 0.5]
    assert audio.pcm_to_float(np.array([-128, 64], np.int8)).tolist() == [-1.0, 0.5]
    assert audio.pcm_to_float(np.array([0, 128, 192], np.uint8)).tolist() == [-1.0, 0.0, 0.5]  # 8-bit WAV
    floats = np.array([0.25, -0.5], np.float64)
    assert audio.pcm_to_float(floats).tolist() == [0.25, -0.5]


def test_a_16_bit_clip_round_trips_exactly():
    pcm = np.arange(-1000, 1000, dtype=np.int16) * 16
    clip = audio.decode(pcm16_wav(pcm))
    assert np.array_equal(clip.pcm16(), pcm)


def _encoded(samples: np.ndarray, rate: int, suffix: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format={"wav": "WAV", "flac": "FLAC", "mp3": "MP3"}[suffix])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stereo_44k() -> np.ndarray:
    """20 s of noise at 44.1 kHz in two channels (resampled, mixed and kept apart by the decoder)."""
    return (np.random.default_rng(1).standard_normal((44100 * 20, 2)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3"])
def test_a_file_cut_short_gives_what_decodes_before_the_break_and_says_where(suffix, stereo_44k):
    data = _encoded(stereo_44k, 44100, suffix)
    whole = audio.decode(data, keep_channels=True)
    assert whole.broken is None and whole.seconds == pytest.approx(20, abs=0.1)
    cut = audio.decode(data[: len(data) // 2], f"cut.{suffix}", keep_channels=True)
    print(f"{suffix} cut in half: {cut.seconds:.2f} s decoded; {cut.broken}")
    assert 8 < cut.seconds < 10.5 and cut.broken
    assert ("ends at" in cut.broken and "header declares" in cut.broken) or "decoding stopped at" in cut.broken
    # the samples that decoded are those of the whole file, bar the resampler's last few ms before the break
    settled = len(cut.samples) - 1000
    assert np.abs(cut.samples[:settled] - whole.samples[:settled]).max() <= 1 / 32768
    assert all(
        np.abs(a[:settled] - b[:settled]).max() <= 1 / 32768 for a, b in zip(cut.channels, whole.channels, strict=True)
    )


def test_a_file_that_breaks_before_any_audio_is_refused_clearly():
    with pytest.raises(audio.AudioError, match="cannot decode cut.m4a as audio"):
        audio.decode((ROOT / "examples" / "schedule.m4a").read_bytes()[:2000], "cut.m4a")
    with pytest.raises(audio.AudioError, match="empty"):
        audio.decode(b"", "empty.wav")


def test_a_recording_too_long_to_hold_whole_is_refused_up_front_naming_the_limit(stereo_44k, tmp_path):
    path = tmp_path / "long.flac"
    path.write_bytes(_encoded(stereo_44k, 44100, "flac"))
    with pytest.raises(audio.AudioError, match=r"longer than 0.005 h .*--granularity segment"):
        audio.load(path, max_seconds=18.0)
    assert audio.declared_seconds(path) == pytest.approx(20.0)
    assert audio.load(path, max_seconds=21.0).seconds == pytest.approx(20.0, abs=0.01)


def test_blocks_of_any_length_join_into_the_whole_file(stereo_44k):
    """The decoder's blocks (resampled as a stream) are the file resampled in one go."""
    data = _encoded(stereo_44k, 44100, "wav")
    with audio.Decoder(data, keep_channels=True) as decoder:
        blocks = list(decoder.blocks())
    assert len(blocks) >= 20 and all(block.shape[1] == 3 for block in blocks)
    joined = np.concatenate(blocks)
    stored = soundfile.read(io.BytesIO(data), dtype="float32")[0].astype(np.float64)  # as 16-bit PCM
    assert np.array_equal(joined[:, 0], audio.to_16k_pcm(stored.mean(axis=1), 44100))
    assert np.array_equal(joined[:, 2], audio.to_16k_pcm(stored[:, 1], 44100))


def test_audio_pushed_in_chunks_decodes_as_the_whole_file_and_a_recording_left_waiting_ends(stereo_44k):
    """e2v-web's live microphone: integer PCM chunks of any size pushed from another thread, read as they come, give
    the samples of the same audio decoded as a file; a recording aborted, or that gets no chunk for idle_seconds,
    raises AudioError where it is read."""
    data = _encoded(stereo_44k, 44100, "wav")
    pcm = soundfile.read(io.BytesIO(data), dtype="int16")[0]
    pushed = audio.Pushed("microphone")
    cuts = np.cumsum([0, 1, 7000, 0, 44100, 123, len(pcm)]).clip(max=len(pcm))
    for first, end in zip(cuts, cuts[1:], strict=False):
        pushed.push(pcm[first:end], 44100)
    pushed.end()
    joined = np.concatenate(list(pushed.blocks()))
    stored = soundfile.read(io.BytesIO(data), dtype="float32")[0].astype(np.float64)  # as 16-bit PCM
    assert np.array_equal(joined[:, 0], audio.to_16k_pcm(stored.mean(axis=1), 44100))
    assert pushed.seconds == len(joined) / SAMPLE_RATE

    aborted = audio.Pushed()
    aborted.push(pcm[:4410], 44100)
    aborted.abort("the page was closed")
    with pytest.raises(audio.AudioError, match="the page was closed"):
        list(aborted.blocks())
    with pytest.raises(audio.AudioError, match="no audio came from the microphone for 0.2 s"):
        list(audio.Pushed("microphone", idle_seconds=0.2).blocks())
    changed = audio.Pushed()
    changed.push(pcm[:4410], 44100)
    changed.push(pcm[:4800], 48000)
    with pytest.raises(audio.AudioError, match="from 44100 Hz to 48000 Hz"):
        list(changed.blocks())
