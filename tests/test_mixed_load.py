"""Under mixed load (issue 23): an admitted request's wait is bounded in seconds, interactive requests go before
bulk ones, and a batch job rides out an overload by cutting its requests in flight and retrying within a time
budget. Against real tritonservers on the tiny checkpoint; the figures on the large one are
scripts/mixed_load_report.py's (docs/operations.md)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from e2v_bench.workload import call_recording
from e2v_client import audio
from e2v_client.batch import BatchOptions, run_batch
from e2v_client.client import AdaptiveConcurrency, Emotion2vecClient, RetryPolicy
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import TritonServer, free_port

WAIT_S = 1.0  # the wait bound of the bounded server
LONG = speech_like(30.0, seed=3)[None, :]  # the longest request: the queue's unit of work
BULK, INTERACTIVE = contract.PRIORITIES["bulk"], contract.PRIORITIES["interactive"]


def _server(tiny, tmp_path_factory, name: str, **options):
    """The tiny model, one request per encoder run unless `options` say otherwise (so that the queue is long and
    its order shows), no bound on the queue's length; `options`: more RepositoryOptions."""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    folder = tmp_path_factory.mktemp(name)
    options = RepositoryOptions(**({"max_batch_size": 1, "max_queue_size": 0} | options))
    repository = write_repository(load_checkpoint(tiny.model_dir), folder / "repo", options)
    return TritonServer(repository, log_file=folder / "triton.log")


@pytest.fixture(scope="module")
def bounded_server(tiny, tmp_path_factory):
    with _server(tiny, tmp_path_factory, "wait_bound", max_queue_wait=WAIT_S) as server:
        yield server


@pytest.fixture(scope="module")
def unbounded_server(tiny, tmp_path_factory):
    with _server(tiny, tmp_path_factory, "no_wait_bound", max_queue_wait=0) as server:
        yield server


async def _send(
    client, priority: int = 0, wait_us: int | None = None, model: str = contract.ENSEMBLE_MODEL
) -> tuple[str, float]:
    """One 30 s request to `model`, with the caller's own wait bound if `wait_us`: ("ok" or its status and
    message, seconds)."""
    tensor = aioclient.InferInput(contract.ENSEMBLE_INPUT, list(LONG.shape), "FP32")
    tensor.set_data_from_numpy(LONG)
    start = time.monotonic()
    try:
        await client.infer(model, [tensor], priority=priority, timeout=wait_us, client_timeout=300)
        return "ok", time.monotonic() - start
    except InferenceServerException as exc:
        return f"{exc.status()} {exc.message()}", time.monotonic() - start


async def _burst(url: str, count: int, priority: int = 0, wait_us: int | None = None) -> list[tuple[str, float]]:
    async with aioclient.InferenceServerClient(url) as client:
        return list(await asyncio.gather(*(_send(client, priority, wait_us) for _ in range(count))))


def _one_request_s(url: str) -> float:
    """How long one 30 s request takes on the idle server (the best of three)."""
    return min(asyncio.run(_burst(url, 1))[0][1] for _ in range(3))


def test_an_admitted_request_waits_at_most_the_bound_then_is_refused_retryably(bounded_server):
    one = _one_request_s(bounded_server.grpc_url)
    results = asyncio.run(_burst(bounded_server.grpc_url, 48))
    answered = [seconds for outcome, seconds in results if outcome == "ok"]
    expired = [seconds for outcome, seconds in results if "Request timeout expired" in outcome]
    other = [outcome for outcome, _ in results if outcome != "ok" and "Request timeout expired" not in outcome]
    print(f"one 30 s request alone: {one:.2f} s; 48 at once with a {WAIT_S:g} s bound: {len(answered)} answered "
          f"(max {max(answered):.2f} s), {len(expired)} refused after at most {max(expired or [0]):.2f} s")  # fmt: skip
    assert 48 * one > 2 * WAIT_S, "the burst does not outlast the bound: the test proves nothing"
    assert not other, other[:3]
    assert answered and expired
    assert all(outcome.startswith("StatusCode.UNAVAILABLE") for outcome, _ in results if outcome != "ok")
    # admitted: the bound at the preprocess step and at the encoder's, the request ahead of it and its own run
    # (one request per run here), with slack
    assert max(answered) <= 2 * WAIT_S + 3 * one + 0.5
    assert max(expired) <= 2 * WAIT_S + 3 * one + 0.5  # refused when its wait ends, not after the queue


def test_the_default_bound_admits_a_full_batch_and_a_caller_may_ask_for_less(tiny, tmp_path_factory):
    """The default bound (from the speed measured at export) is at least 10 s, the time of one full batch of the
    longest requests; a caller with a deadline sends its own, shorter, timeout and is refused when it passes."""
    from e2v_export.repository import QUEUE_WAIT_LIMITS_S

    with _server(tiny, tmp_path_factory, "default_bound") as server:
        config = (server.model_repository / contract.ENCODER_MODEL / "config.pbtxt").read_text()
        bound_s = int(config.split("default_timeout_microseconds: ")[1].split()[0]) / 1e6
        assert QUEUE_WAIT_LIMITS_S[0] <= bound_s <= QUEUE_WAIT_LIMITS_S[1]
        one = _one_request_s(server.grpc_url)
        results = asyncio.run(_burst(server.grpc_url, 48, wait_us=round(WAIT_S * 1e6)))
    expired = [seconds for outcome, seconds in results if "Request timeout expired" in outcome]
    print(f"default bound {bound_s:g} s; 48 requests asking for {WAIT_S:g} s: {len(expired)} refused after at "
          f"most {max(expired or [0]):.2f} s")  # fmt: skip
    assert 48 * one > 2 * WAIT_S + 3 * one + 0.5, "the burst does not outlast the caller's bound: proves nothing"
    assert expired and max(expired) <= 2 * WAIT_S + 3 * one + 0.5 < bound_s  # the caller's bound, not the default


async def _probes_behind_bulk(url: str, level: int, bulk_model: str, probes: int) -> tuple[float, list[float]]:
    """(the median latency of `probes` requests at `level`, sent one after another behind 24 bulk ones sent to
    `bulk_model`; the bulk ones' latencies)."""
    async with aioclient.InferenceServerClient(url) as client:
        bulk = [asyncio.ensure_future(_send(client, BULK, model=bulk_model)) for _ in range(24)]
        await asyncio.sleep(0.3)  # the bulk requests are queued
        answers = [await _send(client, level) for _ in range(probes)]
        assert all(outcome == "ok" for outcome, _ in answers), answers
        return float(np.median([s for _, s in answers])), [s for _, s in await asyncio.gather(*bulk)]


def test_interactive_requests_go_before_bulk_ones(unbounded_server):
    url = unbounded_server.grpc_url
    interactive, bulk = asyncio.run(_probes_behind_bulk(url, INTERACTIVE, contract.ENSEMBLE_MODEL, 1))
    as_bulk, _ = asyncio.run(_probes_behind_bulk(url, BULK, contract.ENSEMBLE_MODEL, 1))
    print(f"one request behind 24 bulk ones: {interactive:.2f} s as interactive, {as_bulk:.2f} s as bulk; "
          f"bulk median {np.median(bulk):.2f} s")  # fmt: skip
    assert interactive < 0.5 * as_bulk
    assert interactive < np.median(bulk)


def test_interactive_requests_need_not_wait_for_a_bulk_batch_in_the_bulk_lane(tiny, tmp_path_factory):
    """Batches of 8: with priority levels alone an interactive request waits for the bulk batch the encoder is
    running; beside the bulk lane it waits for nothing, and the OS runs its encoder first (the lane's: nice 19)."""
    with _server(tiny, tmp_path_factory, "batches_of_8", max_batch_size=8, max_queue_wait=0) as server:
        url = server.grpc_url
        idle = _one_request_s(url)
        levels_only, _ = asyncio.run(_probes_behind_bulk(url, INTERACTIVE, contract.ENSEMBLE_MODEL, 3))
        beside_lane, bulk = asyncio.run(_probes_behind_bulk(url, INTERACTIVE, contract.BULK_ENSEMBLE_MODEL, 3))
    print(f"one 30 s request: idle {idle:.2f} s (best of 3); median of 3 behind 24 bulk ones, priority levels alone "
          f"{levels_only:.2f} s, beside them in the bulk lane {beside_lane:.2f} s (bulk median "
          f"{np.median(bulk):.2f} s)")  # fmt: skip
    assert beside_lane < 0.5 * levels_only and beside_lane < 2 * idle


def _inference_count(url: str, model: str) -> int:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


def _niceness(server: TritonServer, model: str) -> set[int]:
    """The nice values of every thread of `model`'s Python-backend stub (/proc/PID/task/TID/stat, field 19)."""
    tasks = list(Path(f"/proc/{server.stub_pid(model)}/task").iterdir())
    return {int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in tasks}


def test_bulk_jobs_go_to_their_own_lane_whose_encoder_yields_the_cpu(unbounded_server, tmp_path):
    """The bulk lane: a bulk client's utterances and segments go to the bulk ensemble, whose encoder (the same
    model file, hard-linked) runs every thread at the lowest CPU priority; interactive ones to the public one."""
    url, repository = unbounded_server.grpc_url, unbounded_server.model_repository
    onnx = f"1/{contract.ONNX_FILE}"
    encoder, lane = repository / contract.ENCODER_MODEL / onnx, repository / contract.BULK_ENCODER_MODEL / onnx
    assert os.stat(encoder).st_ino == os.stat(lane).st_ino
    assert _niceness(unbounded_server, contract.BULK_ENCODER_MODEL) == {contract.BULK_NICENESS}
    assert _niceness(unbounded_server, contract.ENCODER_MODEL) == {0}

    clip = audio.load(call_recording(tmp_path / "call.wav", 12.0)).samples  # speech between pauses

    async def score(priority: str, granularity: str) -> None:
        async with Emotion2vecClient(url, priority=priority) as client:
            await client.score(clip, granularity)

    for priority, granularity in [(p, g) for p in contract.PRIORITIES for g in ("utterance", "segment")]:
        models = (contract.ENCODER_MODEL, contract.BULK_ENCODER_MODEL)
        before = [_inference_count(url, model) for model in models]
        asyncio.run(score(priority, granularity))
        ran = [_inference_count(url, model) - count for model, count in zip(models, before, strict=True)]
        print(f"{priority} {granularity}: encoder runs {ran[0]}, bulk lane's {ran[1]}")
        assert (ran[0] > 0, ran[1] > 0) == (priority == "interactive", priority == "bulk"), ran


def test_requests_without_a_priority_are_interactive(unbounded_server):
    """Callers in other languages send no priority: the server's default level is the interactive one."""
    config = (unbounded_server.model_repository / contract.ENCODER_MODEL / "config.pbtxt").read_text()
    assert f"default_priority_level: {INTERACTIVE}" in config
    assert f"priority_levels: {max(contract.PRIORITIES.values())}" in config


def test_the_adaptive_concurrency_halves_on_refusals_and_grows_back_with_answers():
    async def scenario():
        limit = AdaptiveConcurrency(16)
        limit.refused()
        limit.refused()  # the same overload: cut once
        assert limit.limit == 8 and limit.busy and limit.refusals == 2
        for _ in range(8):
            limit.answered()
        assert limit.limit == pytest.approx(9.0, abs=0.1)
        one = AdaptiveConcurrency(1)
        async with one:
            waiting = asyncio.ensure_future(one.__aenter__())
            await asyncio.sleep(0.05)
            assert not waiting.done() and one.in_flight == 1  # the second waits for the first
        await asyncio.wait_for(waiting, 1)
        assert one.in_flight == 1

    asyncio.run(scenario())


def test_the_retry_budget_is_in_seconds():
    start = time.monotonic()
    waits = list(RetryPolicy(retry_for=3.0, first_delay=0.1, max_delay=0.5).delays())
    assert 2.0 <= sum(waits) <= 3.0 and time.monotonic() - start < 0.1  # drawn lazily, not slept here
    assert len(list(RetryPolicy(retry_for=60.0, attempts=3).delays())) == 2  # an optional cap in tries


def test_a_batch_beside_a_flood_slows_down_and_scores_every_file(bounded_server, tmp_path):
    """A flood of raw 30 s requests, and a batch at concurrency 16 beside it: the batch is refused again and
    again, cuts its requests in flight, and still scores every file, with no failure row and no --resume."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = []
    for i in range(24):
        files.append(inputs / f"utt_{i:02d}.wav")
        audio.write_wav(files[-1], audio.from_samples(speech_like(10.0 + (i % 3) * 10, i), 16000))

    async def flood_and_batch():
        client = Emotion2vecClient(bounded_server.grpc_url, priority="bulk", max_in_flight=16, retry=RetryPolicy(120))
        await client.connect()
        limits = []

        async def watch():
            while True:
                limits.append(client.concurrency.limit)
                await asyncio.sleep(0.05)

        watcher = asyncio.ensure_future(watch())
        options = BatchOptions(tmp_path / "outputs", "utterance", False, 16, False, "mix")
        flood = asyncio.ensure_future(_burst(bounded_server.grpc_url, 48))
        report = await run_batch(client, files, options)
        await flood
        watcher.cancel()
        await client.close()
        return report, client.concurrency.refusals, min(limits)

    report, refusals, lowest = asyncio.run(flood_and_batch())
    statuses = [row.status for row in report.rows]
    print(f"batch beside a flood: {statuses.count('scored')}/24 scored, {refusals} refusals, limit down to {lowest}")
    assert refusals > 0, "the batch was never refused: the test proves nothing"
    assert lowest <= 8
    assert statuses == ["scored"] * 24 and not report.failed


def test_a_server_gone_for_longer_than_the_budget_fails_the_client(tmp_path):
    """--retry-for bounds how long a server that is down is waited for; then the client says so and stops."""
    audio.write_wav(tmp_path / "a.wav", audio.from_samples(speech_like(1.0, 0), 16000))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "e2v_client.cli", "--url", f"127.0.0.1:{free_port()}", "--quiet", "--retry-for", "3",
         "--output-dir", str(tmp_path / "out"), str(tmp_path / "a.wav")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - start
    assert done.returncode == 2 and "cannot use the server" in done.stderr, done.stderr
    assert 1.0 <= took <= 3.0 + 10.0, f"{took:.1f} s"  # back-off within the 3 s, plus the client's start-up
