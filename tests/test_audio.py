"""Decoding: one convention for integer PCM (libsndfile's, k / 2^(bits-1)) whichever library decodes."""

import io

import numpy as np
import pytest
import soundfile

from e2v_client import audio
from e2v_common.contract import SAMPLE_RATE


def pcm16_wav(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.reshape(-1, channels), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [1, 2])
def test_one_16_bit_file_decodes_to_the_same_samples_through_soundfile_and_ffmpeg(channels):
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, size=SAMPLE_RATE * channels, dtype=np.int16)
    pcm[:4] = [-32768, 32767, 0, -1]  # both ends of the range
    data = pcm16_wav(pcm, channels=channels)

    through_soundfile, rate_a = audio._read_soundfile(data)
    through_ffmpeg, rate_b = audio._read_ffmpeg(data)
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
