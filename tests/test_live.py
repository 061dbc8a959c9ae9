"""Live streams against a real Triton server (issue 24): audio in chunks over gRPC's bidirectional stream to the
decoupled stream model (sequence batcher, correlation IDs), a segment's emotion back as it closes; the same
segments as the offline timeline; a restart, the stream limit, an idle stream, a client that sends too fast."""

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from scipy.io import wavfile
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from e2v_bench.workload import call_recording
from e2v_client import audio
from e2v_client.client import Emotion2vecClient, RetryPolicy
from e2v_client.live import LiveStream
from e2v_client.outputs import FOLDER_PREFIX, RESULT_FILE
from e2v_common import contract
from e2v_server import gateway
from e2v_server.serve import TritonServer, free_port
from test_any_language import Clip, assert_timeline, needs_node, run_node

RATE = contract.SAMPLE_RATE


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    """A 40 s call (espeak-ng sentences between pauses), decoded as the client decodes it."""
    path = call_recording(tmp_path_factory.mktemp("live") / "call.wav", 40.0)
    return path, audio.load(path).samples


@pytest.fixture(scope="module")
def limited_server(tiny, tmp_path_factory):
    """The tiny model with small stream limits: 2 streams, dropped after 1 s idle, 2 s of audio waiting, 20 s of
    audio a stream (and segments of at most 10 s)."""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    folder = tmp_path_factory.mktemp("limited")
    options = RepositoryOptions(
        max_streams=2, stream_idle_seconds=1.0, max_backlog_seconds=2.0, max_seconds=10.0, max_stream_seconds=20.0
    )
    repository = write_repository(load_checkpoint(tiny.model_dir), folder / "repo", options)
    with TritonServer(repository, log_file=folder / "triton.log") as server:
        yield server


@pytest.fixture(scope="module")
def limited_gateway(limited_server, tmp_path_factory):
    """The shipped gateway (nginx, TLS, a token, the repository's limits) in front of limited_server."""
    folder = tmp_path_factory.mktemp("limited_gateway")
    token = secrets.token_urlsafe(32)
    cert, key = gateway.self_signed_certificate("127.0.0.1", folder / "tls")
    front = gateway.Gateway(
        f"127.0.0.1:{free_port()}",
        token,
        cert,
        key,
        triton_grpc=limited_server.grpc_url,
        triton_http=f"{limited_server.host}:{limited_server.http_port}",
        limits=gateway.RequestLimits.of_repository(limited_server.model_repository),
        run_dir=folder / "nginx",
    )
    with front:
        yield front, token, cert


async def offline_segments(url: str, samples: np.ndarray):
    async with Emotion2vecClient(url) as client:
        timeline = client.timeline()
        await timeline.feed(samples, last=True)
        return timeline.segments


async def live_segments(
    url: str, samples: np.ndarray, chunk_s: float, pause_s: float = 0.0, on_fed=None, **client_options
):
    """The stream model's segments of `samples` sent in chunks of chunk_s (pause_s apart); (segments, the
    samples fed when each arrived, the stream)."""
    async with Emotion2vecClient(url, retry=RetryPolicy(retry_for=120), **client_options) as client:
        fed_at_arrival = []
        stream = LiveStream(client, on_segment=lambda _: fed_at_arrival.append(stream.received))
        step = max(1, round(chunk_s * RATE))
        for first in range(0, len(samples), step):
            await stream.feed(samples[first : first + step])
            if on_fed:
                on_fed(first + step)
            if pause_s:
                await asyncio.sleep(pause_s)
        await stream.feed(np.zeros(0, np.float32), last=True)
        return stream.segments, fed_at_arrival, stream


def assert_same_segments(streamed, offline):
    assert len(streamed) == len(offline) >= 8, (len(streamed), len(offline))
    bounds = max(max(abs(a.start - b.start), abs(a.end - b.end)) for a, b in zip(streamed, offline, strict=True))
    scores = max(float(np.max(np.abs(a.scores - b.scores))) for a, b in zip(streamed, offline, strict=True))
    print(f"{len(streamed)} segments; boundaries max |diff| {bounds:.4f} s, scores max |diff| {scores:.2e}")
    assert bounds <= 0.1 and scores <= 1e-5


@pytest.mark.parametrize("chunk_s", [0.02, 0.37, 1.0])
def test_a_live_stream_gives_the_offline_segments_in_chunks_of_any_size(tiny_server, call, chunk_s):
    _, samples = call
    offline = asyncio.run(offline_segments(tiny_server.grpc_url, samples))
    streamed, _, stream = asyncio.run(live_segments(tiny_server.grpc_url, samples, chunk_s))
    assert stream.restarts == 0
    assert_same_segments(streamed, offline)


def test_segments_arrive_while_the_audio_is_still_coming(tiny_server, call):
    _, samples = call
    segments, fed_at_arrival, _ = asyncio.run(live_segments(tiny_server.grpc_url, samples, 0.5, pause_s=0.02))
    # each segment came back within a few chunks of its end, long before the recording's end
    lags = [fed / RATE - segment.end for segment, fed in zip(segments, fed_at_arrival, strict=True)]
    print(f"audio fed past each segment's end when it arrived: max {max(lags):.2f} s, median {np.median(lags):.2f}")
    assert sum(fed < len(samples) for fed in fed_at_arrival) >= len(segments) - 1
    assert max(lags[:-1]) < 5.0


def test_a_stream_goes_on_after_a_server_restart_without_losing_or_repeating_a_segment(limited_server, call):
    _, samples = call
    offline = asyncio.run(offline_segments(limited_server.grpc_url, samples))
    restarted = threading.Event()

    def restart_once(fed: int) -> None:
        # in this (the main) thread, which outlives the server: tritonserver dies with the thread that started it
        if fed >= 15 * RATE and not restarted.is_set():
            restarted.set()
            limited_server.restart()  # the stream's connection drops; the event loop waits meanwhile

    streamed, _, stream = asyncio.run(
        live_segments(limited_server.grpc_url, samples, 0.5, pause_s=0.05, on_fed=restart_once)
    )
    print(f"streams opened again after the restart: {stream.restarts}")
    assert restarted.is_set() and stream.restarts >= 1
    assert_same_segments(streamed, offline)


def _chunk_request(stream_id: int, seconds: float, start: bool, end: bool = False) -> dict:
    audio_input = InferInput(contract.SEGMENTS_AUDIO, [1, round(seconds * RATE)], "FP32")
    audio_input.set_data_from_numpy(np.zeros((1, round(seconds * RATE)), np.float32))
    return {"inputs": [audio_input], "sequence_id": stream_id, "sequence_start": start, "sequence_end": end}


def _raw_stream(url: str, root_cert=None, headers=None):
    """A plain tritonclient stream: (client, the (result, error) pairs that come back)."""
    answers = []
    tls = {"ssl": True, "root_certificates": str(root_cert)} if root_cert else {}
    client = grpcclient.InferenceServerClient(url, **tls)
    client.start_stream(callback=lambda result, error: answers.append((result, error)), headers=headers)
    return client, answers


def _wait_for(answers: list, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(answers) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(answers) >= count, answers


def test_streams_over_the_limit_are_refused_and_idle_ones_are_dropped(limited_server):
    client, answers = _raw_stream(limited_server.grpc_url)
    try:
        for stream_id in (1, 2, 3):  # the server takes 2
            client.async_stream_infer(contract.STREAM_MODEL, **_chunk_request(stream_id, 0.5, start=True))
            _wait_for(answers, stream_id)
        errors = [error for _, error in answers if error is not None]
        assert len(errors) == 1 and "maximum of 2 live streams" in errors[0].message(), errors
        time.sleep(2.5)  # both live streams idle for longer than the server waits
        client.async_stream_infer(contract.STREAM_MODEL, **_chunk_request(1, 0.5, start=False))
        _wait_for(answers, 4)
        idle_error = answers[3][1]
        assert idle_error is not None, "an idle stream still took audio"
        print(f"a chunk on a stream idle for 2.5 s: {idle_error.message()}")
        assert "START" in idle_error.message() or "idle" in idle_error.message()
        for stream_id in (4, 5):  # the dropped streams' places are free again
            client.async_stream_infer(contract.STREAM_MODEL, **_chunk_request(stream_id, 0.5, start=True))
        _wait_for(answers, 6)
        assert [error for _, error in answers[4:]] == [None, None]
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()


def test_a_stream_sent_much_faster_than_it_is_scored_is_told_to_back_off(limited_server):
    """60 s of 1 s chunks sent at once: the server holds at most 2 s of a stream's audio waiting, refuses the
    rest with a message that says what to do, and stays up."""
    time.sleep(2.5)  # the streams other tests left open are dropped as idle
    client, answers = _raw_stream(limited_server.grpc_url)
    try:
        noise = np.random.default_rng(0).standard_normal((1, RATE)).astype(np.float32) * 0.1
        for i in range(60):
            request = _chunk_request(7, 1.0, start=i == 0)
            request["inputs"][0].set_data_from_numpy(noise)
            client.async_stream_infer(contract.STREAM_MODEL, **request)
        _wait_for(answers, 60, timeout=120)
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
    refusals = [error.message() for _, error in answers if error is not None]
    print(f"{60 - len(refusals)} chunks taken, {len(refusals)} refused: {refusals[:1]}")
    assert any("faster than it is scored" in message for message in refusals)
    with grpcclient.InferenceServerClient(limited_server.grpc_url) as check:
        assert check.is_server_live() and check.is_model_ready(contract.STREAM_MODEL)


def run_client(url, *args, stdin=None):
    command = [sys.executable, "-m", "e2v_client.cli", "--url", url, "--quiet", *map(str, args)]
    return subprocess.run(command, capture_output=True, timeout=600, input=stdin)


def test_the_stream_command_prints_each_segment_and_writes_the_segment_outputs(tiny_server, call, tmp_path):
    path, samples = call
    offline = run_client(tiny_server.grpc_url, path, "--granularity", "segment", "--output-dir", tmp_path / "offline")
    live = run_client(tiny_server.grpc_url, path, "--stream", "--output-dir", tmp_path / "live")
    pcm = audio.rounded_to_pcm16(samples[:, None])[:, 0]
    piped = run_client(
        tiny_server.grpc_url, "-", "--stream", "--output-dir", tmp_path / "piped",
        stdin=np.round(pcm * 32768).astype("<i2").tobytes(),
    )  # fmt: skip
    for done in (offline, live, piped):
        assert done.returncode == 0, done.stderr.decode()
    results = {}
    for name in ("offline", "live", "piped"):
        (folder,) = (tmp_path / name).glob(f"{FOLDER_PREFIX}*")
        results[name] = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    lines = [json.loads(line) for line in live.stdout.decode().splitlines() if line.startswith("{")]
    assert len(lines) == len(results["offline"]["segments"]) >= 8
    assert lines[0]["file"] == str(path.resolve()) and set(lines[0]) >= {"start", "end", "emotion", "scores"}
    for name in ("live", "piped"):
        assert results[name]["granularity"] == "segment"
        for got, want in zip(results[name]["segments"], results["offline"]["segments"], strict=True):
            assert abs(got["start"] - want["start"]) <= 0.1 and abs(got["end"] - want["end"]) <= 0.1
            assert max(abs(got["scores"][k] - want["scores"][k]) for k in want["scores"]) <= 1e-5
    assert results["piped"]["source_file"] == "stdin"


def test_through_the_gateway_a_stream_longer_than_its_limit_goes_on_in_new_streams_and_loses_nothing(
    limited_server, limited_gateway, call
):
    """The 40 s call through nginx (TLS, token) to a server that takes 20 s of audio a stream: the stream model
    refuses each stream at its limit, the client goes on in a new one from its STATE, and the segments are
    those of the offline timeline. nginx's own per-stream size limit is never met by such a client."""
    front, token, cert = limited_gateway
    _, samples = call
    offline = asyncio.run(offline_segments(limited_server.grpc_url, samples))
    streamed, _, stream = asyncio.run(live_segments(front.url, samples, 0.25, root_cert=str(cert), token=token))
    print(f"40 s through the gateway, 20 s a stream: {stream.restarts} new streams")
    assert stream.restarts >= 2
    assert_same_segments(streamed, offline)
    assert "too large body" not in (front.run_dir / "error.log").read_text()


def test_the_gateway_refuses_a_stream_without_the_token_a_chunk_too_long_and_a_body_over_its_limit(
    limited_server, limited_gateway
):
    front, token, cert = limited_gateway
    bearer = {contract.TOKEN_HEADER: f"Bearer {token}"}
    limits = gateway.RequestLimits.of_repository(limited_server.model_repository)
    cases = [
        ({}, 0.5, "UNAUTHENTICATED", "bearer token"),  # refused by nginx before Triton sees it
        (bearer, 2.0, "", "a chunk holds at most 1 s"),  # the stream model's limit, as an answer in the stream
        # one message bigger than a whole stream may send: nginx cuts it before Triton has read it all
        (bearer, limits.stream_bytes / 4 / RATE + 1, "RESOURCE_EXHAUSTED", "live stream too large"),
    ]
    for headers, seconds, status, message in cases:
        client, answers = _raw_stream(front.url, cert, headers)
        try:
            # refused before the chunk went (nginx answers the headers at once): the callback has the status
            with contextlib.suppress(InferenceServerException):
                client.async_stream_infer(contract.STREAM_MODEL, **_chunk_request(11, seconds, start=True))
            _wait_for(answers, 1)
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()
        error = answers[0][1]
        assert error is not None and message in error.message(), (seconds, error)
        assert status in str(error.status()), (seconds, error.status())
    with grpcclient.InferenceServerClient(limited_server.grpc_url) as check:
        assert check.is_server_live() and check.is_model_ready(contract.STREAM_MODEL)


@needs_node
def test_the_node_example_streams_through_the_gateway_and_goes_on_in_new_streams(
    limited_server, limited_gateway, call, tmp_path
):
    front, token, cert = limited_gateway
    pcm = np.round(call[1] * 32768).clip(-32768, 32767).astype(np.int16)
    clip = Clip(tmp_path / "call.wav", tmp_path / "unused.f32", pcm.astype(np.float32) / 32768)
    wavfile.write(clip.wav, RATE, pcm)
    (tmp_path / "token").write_text(token + "\n")

    async def offline():
        async with Emotion2vecClient(limited_server.grpc_url) as client:
            return await client.score(clip.samples, "segment")

    done = run_node(SimpleNamespace(url=front.url, root_cert=cert), clip, tmp_path / "token", "--stream")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_timeline(done.stdout, asyncio.run(offline()))  # 40 s in streams of at most 20 s
