"""Faults a production server meets: a model process that dies, a launcher that dies, a stop with a model down.

Real processes throughout: e2v-serve and tritonserver on the tiny repository, its Python-backend stubs killed
with SIGKILL as the kernel's OOM killer would, e2v-client batches in their own processes.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import e2v_serve_command, launch_e2v_serve
from e2v_client import audio
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import PYTHON_STUB, TritonServer, _running, _stat, _stub_children, free_port, stub_pid


def _python_instances(repository: Path) -> list[str]:
    """The stub names the repository's configs ask for: `<model>_0_<i>` for each Python model's instances."""
    names = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text()
        if 'backend: "python"' in text:
            count = int(re.search(r"instance_group \[ \{ count: (\d+)", text).group(1))
            names += [f"{config.parent.name}_0_{i}" for i in range(count)]
    return names


def _tritonserver_pid(launcher_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat and stat[0] == "tritonserver" and stat[2] == launcher_pid:
            return int(entry.name)
    raise AssertionError(f"no tritonserver child of {launcher_pid}")


def _score(url: str, seconds: float = 1.0) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        samples = speech_like(seconds, seed=11)[None, :]
        tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, list(samples.shape), "FP32")
        tensor.set_data_from_numpy(samples)
        output = grpcclient.InferRequestedOutput(contract.SCORES)
        return client.infer(contract.ENSEMBLE_MODEL, [tensor], outputs=[output]).as_numpy(contract.SCORES)


class Serve:
    """`e2v-serve` on the tiny repository in its own process, with its ports."""

    def __init__(self, repository: Path, folder: Path):
        self.grpc_port, self.http_port = free_port(), free_port()
        self.log = folder / "e2v-serve.log"
        command = e2v_serve_command(repository, folder, self.grpc_port, self.http_port)
        self.process = launch_e2v_serve(command, self.log, "Ctrl-C stops")
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"

    def ready(self) -> bool:
        """What a probe sees: Triton's HTTP readiness (strict: every model ready)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture
def serve(tiny, tmp_path):
    server = Serve(tiny.repository, tmp_path)
    yield server
    server.stop()


def test_kill_9_of_the_launcher_takes_tritonserver_and_its_stubs_down(serve, tiny):
    triton = _tritonserver_pid(serve.process.pid)
    stubs = list(_stub_children(triton))
    assert len(stubs) == len(_python_instances(tiny.repository))  # preprocess, encoder, classifier, segments
    serve.process.kill()
    serve.process.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in [triton, *stubs]) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in [triton, *stubs] if _running(pid)]
    print(f"after kill -9 of e2v-serve: all gone in {15 - (deadline - time.monotonic()):.1f} s")
    assert not left, f"still running after kill -9 of e2v-serve: {left}"


def test_term_stops_everything_within_seconds(serve):
    triton = _tritonserver_pid(serve.process.pid)
    stubs = list(_stub_children(triton))
    start = time.monotonic()
    serve.process.terminate()
    assert serve.process.wait(15) == 0
    seconds = time.monotonic() - start
    assert not any(_running(pid) for pid in [triton, *stubs])
    assert seconds < 8, f"TERM took {seconds:.1f} s"


def test_stop_with_a_dead_stub_does_not_wait_for_the_exit_timeout(tiny, tmp_path):
    server = TritonServer(tiny.repository, log_file=tmp_path / "triton.log").start()
    try:
        os.kill(stub_pid(server.process.pid, contract.ENCODER_MODEL), signal.SIGKILL)
        with pytest.raises(InferenceServerException, match="not healthy"):
            _score(server.grpc_url)  # touching the dead model makes Triton's own shutdown wait its exit timeout
        assert server.dead_stubs() == [f"{contract.ENCODER_MODEL}_0_0"]
        stubs = list(_stub_children(server.process.pid))
        regions = set(server.stubs.shm_regions)
        assert len(regions) == len(_python_instances(tiny.repository)), regions
        assert all(region.exists() for region in regions), regions
        start = time.monotonic()
        server.stop()
        seconds = time.monotonic() - start
    finally:
        server.kill()
    assert seconds < 3, f"stop() took {seconds:.1f} s"
    assert not any(_running(pid) for pid in stubs)
    assert not any(region.exists() for region in regions), "a killed server's shared memory left in /dev/shm"


def test_a_dead_stub_is_noticed_readiness_drops_and_the_server_comes_back(serve):
    before = _score(serve.grpc_url)
    readiness: list[tuple[float, bool]] = []
    watching = threading.Event()

    def probe():
        while not watching.is_set():
            readiness.append((time.monotonic(), serve.ready()))
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        os.kill(stub_pid(_tritonserver_pid(serve.process.pid), contract.ENCODER_MODEL), signal.SIGKILL)
        deadline = time.monotonic() + 120
        while "READY again" not in serve.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        watching.set()
        prober.join()
    assert "READY again" in serve.log.read_text(), serve.log.read_text()
    assert "stub of ['encoder_0_0'] died" in serve.log.read_text()
    down = [t for t, ready in readiness if t > killed_at and not ready]
    assert down, "readiness never turned false while the encoder was dead"
    print(f"readiness false {down[0] - killed_at:.2f} s after the kill, for {down[-1] - down[0]:.2f} s")
    assert down[0] - killed_at < 3
    assert readiness[-1][1], "readiness did not come back"
    np.testing.assert_array_equal(_score(serve.grpc_url), before)


def test_a_batch_survives_a_stub_killed_mid_batch_with_nothing_lost(serve, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(40):
        audio.write_wav(inputs / f"utt_{i:02d}.wav", audio.from_samples(speech_like(1.0 + (i % 4) * 0.5, i), 16000))
    out = tmp_path / "outputs"
    command = [sys.executable, "-m", "e2v_client.cli", "--url", serve.grpc_url, "--quiet", "--concurrency", "2"]
    client = subprocess.Popen([*command, "--output-dir", str(out), str(inputs)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("outputs_*"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    # the encoder this batch runs on: e2v-client's batches are bulk, scored in the bulk lane
    os.kill(stub_pid(_tritonserver_pid(serve.process.pid), contract.BULK_ENCODER_MODEL), signal.SIGKILL)
    _, stderr = client.communicate(timeout=300)
    assert client.returncode == 0, stderr
    assert "READY again" in serve.log.read_text()
    summary = next(out.glob("summary_*.csv"))
    rows = list(csv.DictReader(summary.open()))
    assert len(rows) == 40 and all(row["status"] == "scored" for row in rows), rows
    assert len(list(out.glob("outputs_*"))) == 40


def test_the_stub_process_name_is_what_the_watch_looks_for(tiny, tmp_path):
    with TritonServer(tiny.repository, log_file=tmp_path / "triton.log") as server:
        stubs = _stub_children(server.process.pid)
        assert sorted(instance for _, instance in stubs.values()) == _python_instances(tiny.repository)
        assert {instance.rsplit("_", 2)[0] for _, instance in stubs.values()} >= {
            contract.PREPROCESS_MODEL,
            contract.ENCODER_MODEL,
            contract.CLASSIFIER_MODEL,
            contract.SEGMENTS_MODEL,
            contract.STREAM_MODEL,
        }
        assert all(_stat(pid)[0] == PYTHON_STUB for pid in stubs)
        assert server.dead_stubs() == []


@pytest.fixture(scope="module")
def short_queue_server(tiny, tmp_path_factory):
    """The tiny model with an encoder queue of 2 (and no wait bound: tests/test_mixed_load.py has it): an easy
    overload."""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    folder = tmp_path_factory.mktemp("short_queue")
    options = RepositoryOptions(max_queue_size=2, max_batch_size=2, max_queue_wait=0)
    repository = write_repository(load_checkpoint(tiny.model_dir), folder / "repo", options)
    with TritonServer(repository, log_file=folder / "triton.log") as server:
        yield server


def test_an_overload_is_refused_at_once_with_a_retryable_status(short_queue_server):
    import asyncio

    import tritonclient.grpc.aio as aioclient

    samples = speech_like(10.0, seed=12)[None, :]

    async def burst(n: int) -> list[tuple[str, float]]:
        async with aioclient.InferenceServerClient(short_queue_server.grpc_url) as client:

            async def one():
                tensor = aioclient.InferInput(contract.ENSEMBLE_INPUT, list(samples.shape), "FP32")
                tensor.set_data_from_numpy(samples)
                start = time.monotonic()
                try:
                    await client.infer(contract.ENSEMBLE_MODEL, [tensor])
                    return "ok", time.monotonic() - start
                except InferenceServerException as exc:
                    return f"{exc.status()} {exc.message()}", time.monotonic() - start

            return await asyncio.gather(*[one() for _ in range(n)])

    results = asyncio.run(burst(48))
    refused = [seconds for outcome, seconds in results if "Exceeds maximum queue size" in outcome]
    admitted = [seconds for outcome, seconds in results if outcome == "ok"]
    other = [outcome for outcome, _ in results if outcome != "ok" and "Exceeds maximum queue size" not in outcome]
    print(f"48 at once: {len(admitted)} admitted (max {max(admitted):.1f} s), {len(refused)} refused")
    assert not other, other[:3]
    assert refused and admitted
    assert all(outcome.startswith("StatusCode.UNAVAILABLE") for outcome, _ in results if outcome != "ok")


def test_the_client_backs_off_and_scores_every_file_of_an_overload(short_queue_server, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(24):
        audio.write_wav(inputs / f"utt_{i:02d}.wav", audio.from_samples(speech_like(2.0 + (i % 3), i), 16000))
    out = tmp_path / "outputs"
    command = [sys.executable, "-m", "e2v_client.cli", "--url", short_queue_server.grpc_url, "--quiet"]
    done = subprocess.run(
        [*command, "--concurrency", "16", "--output-dir", str(out), str(inputs)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(next(out.glob("summary_*.csv")).open()))
    assert len(rows) == 24 and all(row["status"] == "scored" for row in rows)


def _burst_memory(repository: Path, log: Path) -> tuple[float, float, float]:
    """The server's memory (MB, PSS of tritonserver and its stubs) idle, at its peak through a burst of 16
    maximum-length (30 s) requests at concurrency 8, and idle after it."""
    from concurrent.futures import ThreadPoolExecutor

    from e2v_bench.memory import ProcessTreeMemory

    with (
        TritonServer(repository, log_file=log) as server,
        ProcessTreeMemory(server.process.pid, 0.2, proportional=True) as memory,
    ):
        for seconds in (2.0, 4.0, 6.0, 3.0, 5.0) * 2:
            _score(server.grpc_url, seconds)
        time.sleep(1.0)
        idle_before = memory.sample()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: _score(server.grpc_url, 30.0), range(16)))
        time.sleep(1.0)
        idle_after = memory.sample()
        peak = memory.peak
    print(f"{repository}: idle {idle_before:.0f} MB, burst peak {peak:.0f} MB, idle after {idle_after:.0f} MB")
    return idle_before, peak, idle_after


def test_the_memory_of_a_burst_of_long_requests_comes_back_and_is_capped(tiny, tmp_path):
    """After a burst of maximum-length requests the idle server gives back at least 80 % of the memory the
    burst took. ONNX Runtime's CPU arena kept all of it for good (tiny: 180 -> 995 MB idle, 98 %, measured);
    without it, and with glibc's heap trimmed after each batch, what stays is mostly the Python backend's
    shared memory, which grows to what was in flight and is reused, never shrunk. Shown with the batches
    uncapped (--max-run-seconds 240), where the burst takes the most; with the default cap (one 30 s request
    per ONNX Runtime call) the same burst takes less than half of that (measured: 30 %).
    (The issue's bar, back within 20 % of idle on the large checkpoint, is scripts/spike_report.py's.)"""
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    uncapped = write_repository(
        load_checkpoint(tiny.model_dir), tmp_path / "uncapped", RepositoryOptions(max_run_seconds=240.0)
    )
    idle_before, peak, idle_after = _burst_memory(uncapped, tmp_path / "uncapped.log")
    taken, kept = peak - idle_before, idle_after - idle_before
    assert taken > 0.5 * idle_before, "the burst did not need memory: the test proves nothing"
    assert kept < 0.2 * taken, f"kept {kept / taken:.0%} of what the burst took"
    idle_before, capped_peak, _ = _burst_memory(tiny.repository, tmp_path / "capped.log")
    assert capped_peak - idle_before < 0.5 * taken, "the default cap did not bound the burst's working memory"
