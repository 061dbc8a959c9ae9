"""Audio files of every kind a user sends, good and bad, written for the tests."""

from pathlib import Path

import av
import numpy as np
import soundfile as sf

from e2v_common.synthetic_speech import speech_like


def write_m4a(path: Path, samples: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format="ipod") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def good_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "wav16k": folder / "speech_16k.wav",
        "flac22k": folder / "speech_22k.flac",
        "ogg48k": folder / "speech_48k.ogg",
        "stereo_mp3": folder / "stereo_44k.mp3",
        "m4a": folder / "speech_44k.m4a",
        "clip_0.1s": folder / "clip_0.1s.wav",
    }
    sf.write(files["wav16k"], speech_like(3.0, 1), 16000, subtype="PCM_16")
    sf.write(files["flac22k"], speech_like(1.5, 2, 22050), 22050)
    sf.write(files["ogg48k"], speech_like(2.0, 3, 48000), 48000, format="OGG", subtype="VORBIS")
    stereo = np.stack([speech_like(2.5, 4, 44100), speech_like(2.5, 5, 44100)], axis=1)
    sf.write(files["stereo_mp3"], stereo, 44100, format="MP3")
    write_m4a(files["m4a"], speech_like(2.0, 6, 44100), 44100)
    sf.write(files["clip_0.1s"], speech_like(0.1, 7), 16000)
    return files


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "empty": folder / "empty.wav",
        "text_as_wav": folder / "notes.wav",
        "corrupt_flac": folder / "corrupt.flac",
        "silence": folder / "silence.wav",
    }
    files["empty"].write_bytes(b"")
    files["text_as_wav"].write_text("meeting notes, not audio\n" * 40)
    sf.write(folder / "whole.flac", speech_like(1.0, 8), 16000)
    files["corrupt_flac"].write_bytes((folder / "whole.flac").read_bytes()[:300])
    (folder / "whole.flac").unlink()
    sf.write(files["silence"], np.zeros(32000, np.float32), 16000)
    return files
