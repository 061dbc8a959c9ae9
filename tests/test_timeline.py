"""The emotion timeline against a real Triton server: e2v-client --granularity segment, the segments model
taking a long recording in pieces, each segment scored as its own utterance, and recordings without speech.
(The segmenter itself, its accuracy and its pieces: test_segmenter.py.)"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import tritonclient.grpc as grpcclient
from scipy.io import wavfile

from e2v_bench.timeline import run_client as run_measured_client
from e2v_bench.workload import call_recording
from e2v_client import audio
from e2v_client.outputs import AUDIO_FILE, EMBEDDING_FILE, FOLDER_PREFIX, NO_SPEECH, RESULT_FILE
from e2v_common import contract, runtimes, segmenter
from expected import REAL_LABELS

ROOT = Path(__file__).resolve().parents[1]
USER_SCRIPTS = Path(__file__).parent / "user_scripts"


def run_client(url, *args):
    command = [sys.executable, "-m", "e2v_client.cli", "--url", url, "--quiet", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """A 75 s recording of the example clips (espeak-ng speech) between silences of 0.7-3 s, longer than one
    request holds (30 s); a short one; and 3 s of digital silence."""
    root = tmp_path_factory.mktemp("recordings")
    clips = [audio.load(p).samples for p in sorted((ROOT / "examples").glob("*.*")) if p.suffix != ".md"]
    rng = np.random.default_rng(0)
    parts = []
    while sum(len(p) for p in parts) < 75 * contract.SAMPLE_RATE:
        parts += [np.zeros(int(rng.uniform(0.7, 3.0) * contract.SAMPLE_RATE), np.float32), clips[len(parts) % 3]]
    files = {"long": root / "long.wav", "short": root / "short.flac", "silence": root / "silence.wav"}
    soundfile.write(files["long"], np.concatenate(parts), contract.SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(files["short"], clips[0], contract.SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(files["silence"], np.zeros(3 * contract.SAMPLE_RATE, np.int16), contract.SAMPLE_RATE)
    return files


@pytest.fixture(scope="module")
def timeline(tiny_server, recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline") / "outputs"
    done = run_client(
        tiny_server.grpc_url, *recordings.values(), "--granularity", "segment", "--embedding", "--output-dir", out
    )
    assert done.returncode == 0, done.stderr
    assert "1 without speech" in done.stdout and "segments_" in done.stdout
    results = {}
    for path in out.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}"):
        result = json.loads(path.read_text("utf-8"))
        results[Path(result["source_file"]).stem] = (path.parent, result)
    return out, results


def one_pass_segments(samples: np.ndarray) -> list[segmenter.Segment]:
    """The segmenter on the whole recording at once, outside the server, with the repository's VAD file."""
    from e2v_export.repository import vad_files

    session = runtimes.open_model(vad_files()[contract.VAD_FILE], "onnxruntime", "fp32", threads=1)
    cutter = segmenter.Segmenter(segmenter.SileroVad(session.run), segmenter.SegmentOptions())
    return cutter.feed(samples) + cutter.flush()


def test_each_segment_is_scored_as_its_own_utterance(tiny_server, timeline):
    _, results = timeline
    folder, result = results["long"]
    _, samples = wavfile.read(folder / AUDIO_FILE)
    samples = samples.astype(np.float32) / 32768
    segments = result["segments"]
    assert len(segments) >= 12  # the example clips' sentences, at least one segment each
    # taken in three pieces by the server, the segments are those of one pass over the whole recording
    expected = one_pass_segments(samples)
    assert [(s["start"], s["end"]) for s in segments] == [
        (round(s.start / contract.SAMPLE_RATE, 3), round(s.end / contract.SAMPLE_RATE, 3)) for s in expected
    ]
    client = grpcclient.InferenceServerClient(tiny_server.grpc_url)
    embedding = np.load(folder / EMBEDDING_FILE)
    assert embedding.shape == (len(segments), 64) and embedding.dtype == np.float32
    for segment, row, cut in zip(segments, embedding, expected, strict=True):
        assert list(segment["scores"]) == REAL_LABELS and segment["emotion"] == max(
            segment["scores"], key=segment["scores"].get
        )
        # the segment's own samples sent alone to the ensemble: the same numbers (the padding mask)
        tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, cut.end - cut.start], "FP32")
        tensor.set_data_from_numpy(samples[None, cut.start : cut.end])
        alone = client.infer(contract.ENSEMBLE_MODEL, [tensor])
        scores = np.array(list(segment["scores"].values()))
        assert np.abs(scores - alone.as_numpy(contract.SCORES)[0]).max() <= 1e-5 + 5e-7  # + result.json's rounding
        assert np.abs(row - alone.as_numpy(contract.EMBEDDING)[0]).max() <= 1e-5


def test_the_recording_answer_is_the_duration_weighted_mean_of_its_segments(timeline):
    _, results = timeline
    for name in ("long", "short"):
        _, result = results[name]
        segments = result["segments"]
        weights = [s["end"] - s["start"] for s in segments]
        mean = np.average([list(s["scores"].values()) for s in segments], axis=0, weights=weights)
        assert np.abs(np.array(list(result["scores"].values())) - mean).max() < 1e-4
        assert result["emotion"] == REAL_LABELS[int(np.argmax(mean))] and result["granularity"] == "segment"
        assert result["speech_seconds"] == pytest.approx(sum(weights), abs=2e-3) and "status" not in result
        starts, ends = [s["start"] for s in segments], [s["end"] for s in segments]
        assert all(a < b for a, b in zip(starts, ends, strict=True)) and all(
            e <= s for e, s in zip(ends, starts[1:], strict=False)
        )


def test_a_recording_without_speech_has_no_segments_and_is_not_a_failure(timeline):
    out, results = timeline
    folder, result = results["silence"]
    assert result["segments"] == [] and result["status"] == NO_SPEECH
    assert result["emotion"] is None and result["confidence"] == 0.0 and list(result["scores"]) == REAL_LABELS
    assert np.load(folder / EMBEDDING_FILE).shape == (0, 64)
    with open(sorted(out.glob("summary_*.csv"))[-1], newline="") as f:
        statuses = {Path(row["source_file"]).stem: row["status"] for row in csv.DictReader(f)}
    assert statuses == {"long": "scored", "short": "scored", "silence": NO_SPEECH}


def test_the_batch_writes_every_segment_into_one_csv(timeline):
    out, results = timeline
    (path,) = out.glob("segments_*.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = [
        (result["source_file"], s["start"], s["end"], s["emotion"], s["confidence"])
        for _, result in results.values()
        for s in result["segments"]
    ]
    found = [(r["file"], float(r["start"]), float(r["end"]), r["emotion"], float(r["confidence"])) for r in rows]
    assert sorted(found) == sorted(expected) and len(rows) >= 13


def test_user_scripts_run_unchanged_on_segment_outputs(timeline):
    out, results = timeline
    listed = sorted(str(folder) for folder, result in results.values() if result["segments"])

    def script(name, *args):
        done = subprocess.run([sys.executable, str(USER_SCRIPTS / name), *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert script("check_audio.py", *listed).count("16000") == len(listed)
    assert script("print_result.py", *listed).count("angry:") == len(listed)
    assert 0.99 < float(script("similarity.py", listed[0], listed[0])) < 1.01
    script("collect_csv.py", str(out), str(out / "user.csv"))
    assert len((out / "user.csv").read_text().splitlines()) == len(results) + 1


def test_pieces_and_state_are_checked(tiny_server):
    """A piece that does not start where the previous response said, or a forged state, is refused."""
    client = grpcclient.InferenceServerClient(tiny_server.grpc_url)
    samples = np.zeros(16000, np.float32)

    def call(state: bytes | None, **parameters):
        tensor = grpcclient.InferInput(contract.SEGMENTS_AUDIO, [1, len(samples)], "FP32")
        tensor.set_data_from_numpy(samples[None])
        inputs = [tensor]
        if state is not None:
            carried = grpcclient.InferInput(contract.SEGMENTS_STATE, [1], "BYTES")
            carried.set_data_from_numpy(np.array([state], dtype=np.object_))
            inputs.append(carried)
        return client.infer(contract.SEGMENTS_MODEL, inputs, parameters=parameters)

    first = call(None, last_piece=False)
    assert first.as_numpy(contract.SEGMENT_TIMES).shape == (0, 2)
    state = first.as_numpy(contract.SEGMENTS_STATE)[0]
    assert call(state, last_piece=True).as_numpy(contract.RESUME_AT)[0] == -1
    forged = json.loads(state) | {"fed": 10**9}
    for bad, parameters, words in [
        (json.dumps(forged).encode(), {}, "not a segments state"),
        (b"{", {}, "not a state this server gave"),
        (None, {"max_segment_s": 25.0}, "max_segment_s must be between"),
        (None, {contract.PARAM_SCORED_BY: contract.ENCODER_MODEL}, "scored_by must be one of"),  # ensembles only
    ]:
        with pytest.raises(Exception, match=words):
            call(bad, **parameters)


def test_separate_channels_give_each_its_own_timeline(tiny_server, tmp_path):
    """A call recorded on two channels (agent left, customer right): --channels separate gives each channel's
    segments, tagged with it, in one result.json; they are those of each channel scored as a recording alone."""
    clips = [audio.load(p).samples for p in sorted((ROOT / "examples").glob("*.*")) if p.suffix != ".md"]
    gap = np.zeros(contract.SAMPLE_RATE, np.float32)
    left = np.concatenate([gap, clips[0], gap, np.zeros_like(clips[1]), gap, clips[2], gap])
    right = np.concatenate([gap, np.zeros_like(clips[0]), gap, clips[1], gap, np.zeros_like(clips[2]), gap])
    stereo = tmp_path / "call.wav"
    soundfile.write(stereo, np.stack([left, right], axis=1), contract.SAMPLE_RATE, subtype="PCM_16")
    for side, samples in (("left", left), ("right", right)):
        soundfile.write(tmp_path / f"{side}.wav", samples, contract.SAMPLE_RATE, subtype="PCM_16")
    out = tmp_path / "outputs"
    done = run_client(
        tiny_server.grpc_url, stereo, "--granularity", "segment", "--channels", "separate", "--output-dir", out
    )
    assert done.returncode == 0, done.stderr
    (result_path,) = out.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}")
    result = json.loads(result_path.read_text("utf-8"))
    assert result["channels"] == "separate" and {s["channel"] for s in result["segments"]} == {0, 1}
    alone = tmp_path / "alone"
    assert (
        run_client(
            tiny_server.grpc_url,
            tmp_path / "left.wav",
            tmp_path / "right.wav",
            "--granularity",
            "segment",
            "--output-dir",
            alone,
        ).returncode
        == 0
    )
    by_side = {}
    for path in alone.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}"):
        single = json.loads(path.read_text("utf-8"))
        by_side[Path(single["source_file"]).stem] = single["segments"]
    for channel, side in enumerate(("left", "right")):
        mine = [s for s in result["segments"] if s["channel"] == channel]
        alone_segments = by_side[side]
        assert [(s["start"], s["end"], s["emotion"]) for s in mine] == [
            (s["start"], s["end"], s["emotion"]) for s in alone_segments
        ] and mine
        for ours, theirs in zip(mine, alone_segments, strict=True):  # batched with other segments or not: 1e-5
            assert max(abs(ours["scores"][k] - theirs["scores"][k]) for k in ours["scores"]) <= 1e-5 + 1e-6
    (segments_csv,) = out.glob("segments_*.csv")
    with open(segments_csv, newline="") as f:
        assert sorted(int(row["channel"]) for row in csv.DictReader(f)) == sorted(
            s["channel"] for s in result["segments"]
        )
    refused = run_client(tiny_server.grpc_url, stereo, "--channels", "separate", "--output-dir", out)
    assert refused.returncode == 2 and "--granularity segment" in refused.stderr


def test_a_long_recording_is_held_one_piece_at_a_time(tiny_server, tmp_path):
    """At segment granularity the client decodes, writes and sends a recording block by block: its peak memory
    does not grow with the recording's length (held whole, 12 min of 44.1 kHz stereo is 250 MB of float32)."""
    peaks = {}
    for minutes in (2, 12):
        path = call_recording(tmp_path / f"call_{minutes}.flac", minutes * 60, gaps=(10, 30))
        out = tmp_path / f"out_{minutes}"
        run = run_measured_client(tiny_server.grpc_url, path, "--granularity", "segment", "--output-dir", out)
        assert run.returncode == 0, run.stderr
        peaks[minutes] = run.peak_mb
        (folder,) = out.glob(f"{FOLDER_PREFIX}*")
        result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
        rate, samples = wavfile.read(folder / AUDIO_FILE)
        assert rate == contract.SAMPLE_RATE and len(samples) / rate == pytest.approx(minutes * 60, abs=0.1)
        assert result["duration"] == pytest.approx(minutes * 60, abs=0.1) and len(result["segments"]) >= minutes * 2
    print(f"client peak RSS: {peaks[2]:.0f} MB for 2 min, {peaks[12]:.0f} MB for 12 min of 44.1 kHz stereo flac")
    assert peaks[12] - peaks[2] < 40 and peaks[12] < 500


def test_a_file_cut_short_is_scored_up_to_the_break_and_says_where(tiny_server, recordings, tmp_path):
    """A truncated download: what decodes is scored, result.json and the summary say where the file broke."""
    whole = audio.load(recordings["long"]).samples
    cut = tmp_path / "cut.mp3"
    soundfile.write(tmp_path / "whole.mp3", whole, contract.SAMPLE_RATE)
    data = (tmp_path / "whole.mp3").read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "outputs"
    done = run_client(tiny_server.grpc_url, cut, "--granularity", "segment", "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "incomplete" in done.stderr
    (folder,) = out.glob(f"{FOLDER_PREFIX}*")
    result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    print(result["incomplete"])
    assert "header declares" in result["incomplete"] or "decoding stopped" in result["incomplete"]
    assert 40 < result["duration"] < 60 and result["segments"][-1]["end"] <= result["duration"]
    _, samples = wavfile.read(folder / AUDIO_FILE)
    expected = one_pass_segments(samples.astype(np.float32) / 32768)
    assert [(s["start"], s["end"]) for s in result["segments"]] == [
        (round(s.start / contract.SAMPLE_RATE, 3), round(s.end / contract.SAMPLE_RATE, 3)) for s in expected
    ]
    with open(next(out.glob("summary_*.csv")), newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["status"] == "scored" and row["error"].startswith("incomplete: ")
