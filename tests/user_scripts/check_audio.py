"""A user's script: read processed_audio.wav with scipy and check rate and duration."""
import sys
from scipy.io import wavfile

for folder in sys.argv[1:]:
    rate, data = wavfile.read(f"{folder}/processed_audio.wav")
    assert rate == 16000, rate
    assert data.ndim == 1, data.shape
    print(folder, rate, round(len(data) / rate, 3))
