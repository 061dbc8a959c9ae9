"""The thin client against a real Triton server: outputs folders, parity with FunASR, failures, resume."""

import asyncio
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from audio_files import bad_files, good_files
from e2v_client import audio
from e2v_client.client import Emotion2vecClient, RetryPolicy, ServerError
from e2v_client.outputs import AUDIO_FILE, EMBEDDING_FILE, FOLDER_PREFIX, RESULT_FILE
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_export.compare import UtteranceResult, compare
from e2v_export.parity import funasr_reference
from expected import REAL_LABELS

USER_SCRIPTS = Path(__file__).parent / "user_scripts"


def run_client(url, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "e2v_client.cli", "--url", url, "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(FOLDER_PREFIX))


def summary(root: Path) -> list[dict]:
    newest = sorted(root.glob("summary_*.csv"))[-1]
    with open(newest, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return good_files(root / "good"), bad_files(root / "bad")


def check_folder_against_spec(folder: Path, granularity: str, embedding: bool, dim: int):
    assert FOLDER_PREFIX in folder.name
    rate, samples = wavfile.read(folder / AUDIO_FILE)
    assert rate == 16000 and samples.ndim == 1 and samples.dtype == np.int16
    result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    for key in ("emotion", "confidence", "scores", "granularity", "timestamp"):
        assert key in result
    assert result["granularity"] == granularity
    time.strptime(result["timestamp"], "%Y-%m-%d %H:%M:%S")
    frames = contract.frames_for_samples(len(samples))
    if granularity in ("utterance", "segment"):  # a segment's scores: its segments', weighted by their durations
        assert list(result["scores"]) == REAL_LABELS
        assert abs(sum(result["scores"].values()) - 1) < 1e-4
        assert result["emotion"] == max(result["scores"], key=result["scores"].get)
        assert result["confidence"] == result["scores"][result["emotion"]]
    else:
        assert len(result["scores"]) == frames
        for frame in result["scores"]:
            assert list(frame) == REAL_LABELS and abs(sum(frame.values()) - 1) < 1e-4
    if granularity == "segment":  # the speech segments, in order, inside the audio
        ends = [0.0] + [s["end"] for s in result["segments"]]
        for segment, end_before in zip(result["segments"], ends, strict=False):
            assert end_before <= segment["start"] < segment["end"] <= len(samples) / rate + 0.05
            assert list(segment["scores"]) == REAL_LABELS
            assert segment["emotion"] == max(segment["scores"], key=segment["scores"].get)
    assert 0 <= result["confidence"] <= 1 and result["emotion"] in REAL_LABELS
    if embedding:
        array = np.load(folder / EMBEDDING_FILE)
        assert array.dtype == np.float32
        rows = {"utterance": (), "frame": (frames,), "segment": (len(result.get("segments", [])),)}[granularity]
        assert array.shape == (*rows, dim)
    else:
        assert not (folder / EMBEDDING_FILE).exists()
    return samples, result


@pytest.mark.parametrize("granularity", ["utterance", "frame"])
def test_batch_writes_spec_folders_that_match_funasr(served, inputs, tmp_path, granularity):
    exported, server = served
    good, _ = inputs
    out = tmp_path / "outputs"
    done = run_client(server.grpc_url, *good.values(), "--granularity", granularity, "--embedding", "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert len(folders(out)) == len(good)
    rows = summary(out)
    assert {r["source_file"] for r in rows} == {str(p.resolve()) for p in good.values()}
    assert all(r["status"] == "scored" and r["error"] == "" for r in rows)
    dim = 64 if exported.size == "tiny" else 768
    for folder in folders(out):
        samples, result = check_folder_against_spec(folder, granularity, True, dim)
        # FunASR's own inference on the exact samples the model was given
        reference = funasr_reference(exported.automodel, samples.astype(np.float32) / 32768)
        embedding = np.load(folder / EMBEDDING_FILE)
        scores = np.array(list((result["utterance_scores"] if granularity == "frame" else result["scores"]).values()))
        ours = UtteranceResult(
            scores=scores,
            embedding=embedding if granularity == "utterance" else embedding.mean(axis=0),
            frames=embedding if granularity == "frame" else reference.frames,
            frame_scores=(
                np.array([list(f.values()) for f in result["scores"]])
                if granularity == "frame"
                else reference.frame_scores
            ),
        )
        row = compare(ours, reference, len(samples) / 16000)
        # result.json rounds scores to 6 decimals: allow that on top of the parity bound
        assert row.scores_max_abs <= 1e-5 + 5e-7, row
        assert row.embedding_cosine >= 0.99999 and row.frames_max_abs <= 1e-4 and row.argmax_equal, row


def test_user_scripts_run_unchanged_on_a_batch(tiny_server, inputs, tmp_path):
    good, _ = inputs
    utterance, frame = tmp_path / "utterance", tmp_path / "frame"
    assert run_client(tiny_server.grpc_url, *good.values(), "--embedding", "--output-dir", utterance).returncode == 0
    assert (
        run_client(
            tiny_server.grpc_url, *good.values(), "--granularity", "frame", "--embedding", "--output-dir", frame
        ).returncode
        == 0
    )

    def script(name, *args):
        done = subprocess.run(
            [sys.executable, str(USER_SCRIPTS / name), *map(str, args)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for root in (utterance, frame):
        listed = folders(root)
        assert script("check_audio.py", *listed).count("16000") == len(listed)
        assert 0.99 < float(script("similarity.py", listed[0], listed[0])) < 1.01
        script("similarity.py", listed[0], listed[1])
        csv_path = root / "user.csv"
        script("collect_csv.py", root, csv_path)
        assert len(csv_path.read_text().splitlines()) == len(listed) + 1
        assert script("find_failures.py", root).count("\n") == len(listed)
    printed = script("print_result.py", *folders(utterance))
    assert printed.count("angry:") == len(good)


def test_bad_inputs_get_error_rows_and_the_rest_goes_on(tiny_server, inputs, tmp_path):
    good, bad = inputs
    out = tmp_path / "outputs"
    done = run_client(tiny_server.grpc_url, *bad.values(), good["wav16k"], "--output-dir", out)
    assert done.returncode == 1  # some inputs failed
    rows = {Path(r["source_file"]).name: r for r in summary(out)}
    assert rows["speech_16k.wav"]["status"] == "scored"
    expected = {
        "empty.wav": "empty",
        "notes.wav": "cannot decode",
        "corrupt.flac": "cannot decode",
        "silence.wav": "silent",
    }
    for name, message in expected.items():
        assert rows[name]["status"] == "failed" and message in rows[name]["error"], rows[name]
        assert name in done.stderr
    assert len(folders(out)) == 1


def test_unreachable_server_is_a_clear_error(tmp_path, inputs):
    from e2v_server.serve import free_port

    good, _ = inputs
    done = run_client(f"127.0.0.1:{free_port()}", good["wav16k"], "--retries", "1", "--output-dir", tmp_path)
    assert done.returncode == 2
    assert "cannot use the server" in done.stderr and "e2v-serve" in done.stderr


def test_long_audio_is_windowed_and_short_audio_is_exactly_the_servers_answer(tiny_server):
    async def scenario():
        async with Emotion2vecClient(tiny_server.grpc_url) as client:
            max_samples = int(client.info.max_seconds * 16000)
            long = speech_like(client.info.max_seconds * 2.2, seed=11)
            windows = client.windows(len(long))
            assert len(windows) == 3 and max(w.stop - w.start for w in windows) <= max_samples
            scored = await client.score(long, "frame")
            parts = [await client.score(long[w], "frame") for w in windows]
            just_under = await client.score(long[:max_samples], "utterance")
            direct = await client._infer(long[:max_samples], (contract.SCORES,))
            return scored, parts, just_under, direct

    scored, parts, just_under, direct = asyncio.run(scenario())
    assert scored.windows == 3
    counts = np.array([len(p.frame_embedding) for p in parts])
    assert len(scored.frame_embedding) == counts.sum()
    assert np.array_equal(scored.frame_embedding, np.concatenate([p.frame_embedding for p in parts]))
    expected = np.sum([c * p.embedding for c, p in zip(counts, parts, strict=True)], axis=0) / counts.sum()
    assert np.abs(scored.embedding - expected).max() < 1e-5
    assert abs(scored.scores.sum() - 1) < 1e-5
    assert just_under.windows == 1
    assert np.array_equal(just_under.scores, direct[contract.SCORES])


def test_server_killed_mid_batch_then_resume_loses_and_duplicates_nothing(tiny, tmp_path):
    from e2v_server.serve import TritonServer, free_port

    inputs_dir = tmp_path / "many"
    inputs_dir.mkdir()
    for i in range(120):
        audio.write_wav(inputs_dir / f"utt_{i:03d}.wav", audio.from_samples(speech_like(1.0 + (i % 5) * 0.5, i), 16000))
    out = tmp_path / "outputs"
    port = free_port()
    server = TritonServer(tiny.repository, grpc_port=port, log_file=tmp_path / "triton.log").start()
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2v_client.cli",
            "--url",
            server.grpc_url,
            "--quiet",
            "--concurrency",
            "2",
            "--retries",
            "2",
            "--output-dir",
            str(out),
            str(inputs_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (not out.exists() or len(folders(out)) < 10) and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # mid-batch, no warning
        stdout, stderr = client.communicate(timeout=300)
    finally:
        server.kill()
    assert client.returncode == 1, stderr
    first = summary(out)
    scored_first = {r["source_file"] for r in first if r["status"] == "scored"}
    assert 10 <= len(scored_first) < 120
    assert any("unavailable" in r["error"].lower() for r in first if r["status"] == "failed")
    assert len(folders(out)) == len(scored_first)  # every folder is complete, none half-written

    with TritonServer(tiny.repository, grpc_port=port, log_file=tmp_path / "triton2.log"):
        time.sleep(1.1)  # a new second: the summaries must not share a name
        done = run_client(f"127.0.0.1:{port}", "--resume", "--output-dir", out, inputs_dir)
    assert done.returncode == 0, done.stderr
    second = summary(out)
    assert {r["source_file"] for r in second if r["status"] == "skipped"} == scored_first
    assert all(r["status"] in ("skipped", "scored") for r in second)
    sources = [json.loads((f / RESULT_FILE).read_text())["source_file"] for f in folders(out)]
    assert len(sources) == 120 and len(set(sources)) == 120  # nothing lost, nothing twice
    assert not list(out.glob(".partial_*"))


def test_make_run_scores_the_example_audio(tiny, tmp_path):
    # `make run` on an existing (tiny) repository: server up, examples scored, server down.
    import os
    import shutil

    root = Path(__file__).resolve().parent.parent
    repository = tmp_path / "repo"
    shutil.copytree(tiny.repository, repository)
    env = {**os.environ, "E2V_REPOSITORY": str(repository), "E2V_OUTPUT_DIR": str(tmp_path / "outputs")}
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "run.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    examples = sorted(p.name for p in (root / "examples").iterdir() if p.suffix in (".ogg", ".mp3", ".m4a"))
    assert len(examples) == 3
    assert len(folders(tmp_path / "outputs")) == 3
    for name in examples:
        assert name in done.stdout
    assert "server READY" in done.stdout and "stopping the server" in done.stdout
    assert "using the model repository" in done.stdout

    # a repository written by other code (an older checkout) is exported again from the same checkpoint
    stamp_path = repository / contract.ENSEMBLE_MODEL / "export_stamp.json"
    stamp = json.loads(stamp_path.read_text())
    stamp_path.write_text(json.dumps({**stamp, "code": "older"}))
    again = subprocess.run(
        [sys.executable, str(root / "scripts" / "run.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert "exporting again" in again.stdout and str(tiny.model_dir) in again.stdout
    assert json.loads(stamp_path.read_text())["code"] != "older"


def test_requests_spread_over_several_servers_and_fail_over(tiny, tiny_server, tmp_path):
    import tritonclient.grpc as grpcclient

    from e2v_server.serve import TritonServer, free_port

    def executions(url):  # e2v-client's batch is bulk: the bulk lane's ensemble
        with grpcclient.InferenceServerClient(url) as client:
            stats = client.get_inference_statistics(contract.BULK_ENSEMBLE_MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_stats", {}).get("success", {}).get("count", 0))

    files = []
    for i in range(12):
        files.append(tmp_path / f"clip_{i}.wav")
        audio.write_wav(files[-1], audio.from_samples(speech_like(1.0, 50 + i), 16000))
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with TritonServer(tiny.repository, log_file=tmp_path / "second.log") as second:
        before = executions(tiny_server.grpc_url), executions(second.grpc_url)
        urls = ",".join([tiny_server.grpc_url, dead, second.grpc_url])
        done = run_client(urls, *files, "--output-dir", tmp_path / "spread", "--concurrency", "4")
        assert done.returncode == 0, done.stderr
        assert len(folders(tmp_path / "spread")) == 12
        after = executions(tiny_server.grpc_url), executions(second.grpc_url)
        assert after[0] > before[0] and after[1] > before[1], (before, after)  # both servers served
        assert after[0] - before[0] + after[1] - before[1] == 12
        second.kill()  # one server gone: everything still scores on the other
        done = run_client(f"{second.grpc_url},{tiny_server.grpc_url}", *files, "--output-dir", tmp_path / "failover")
        assert done.returncode == 0, done.stderr
        assert len(folders(tmp_path / "failover")) == 12


def test_one_client_rides_out_a_server_restart(tiny, tmp_path):
    # The same client (one gRPC channel) before, during and after a restart on the same port.
    from e2v_server.serve import TritonServer, free_port

    port = free_port()
    audio_in = speech_like(1.0, seed=9)

    async def scenario():
        first = TritonServer(tiny.repository, grpc_port=port, log_file=tmp_path / "a.log").start()
        client = Emotion2vecClient(f"127.0.0.1:{port}", retry=RetryPolicy(attempts=8, first_delay=0.5, max_delay=4))
        try:
            before = await client.score(audio_in)
            first.kill()
            with pytest.raises(ServerError):
                await Emotion2vecClient(f"127.0.0.1:{port}", retry=RetryPolicy(attempts=1)).connect()
            restart = asyncio.get_running_loop().run_in_executor(
                None, lambda: TritonServer(tiny.repository, grpc_port=port, log_file=tmp_path / "b.log").start()
            )
            after = await client.score(audio_in)  # retries while the server comes back
            second = await restart
            second.stop()
            return before, after
        finally:
            await client.close()
            first.kill()

    before, after = asyncio.run(scenario())
    assert np.array_equal(before.scores, after.scores)
