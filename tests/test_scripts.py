"""Every script that README.md, docs/ or the Makefile names runs here, as a user runs it, at its smallest size:
the tiny random-weight checkpoint and the fewest utterances, requests and seconds each script takes. A command a
user copies must not fail after its work (load_test.py once printed its table and then died formatting --soak).
`make run` is tests/test_client.py's, `parity_report.py --model` tests/test_export.py's; tests/test_readme.py
checks that each named script runs in some test.

The benchmark scripts keep their models and workloads in the project's bench cache (.cache/bench), as for a
user; what they write goes to a temporary folder (--out).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TIMEOUT_S = 600


def run_script(name: str, *args, timeout: float = TIMEOUT_S, env: dict | None = None) -> str:
    """scripts/<name> with these arguments, as `.venv/bin/python scripts/<name> ...`; its stdout once it succeeded."""
    command = [sys.executable, str(SCRIPTS / name), *map(str, args)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def copy_repository(tiny, tmp_path: Path) -> Path:
    """A copy of the session's tiny repository, for a script that starts its own server on it."""
    return Path(shutil.copytree(tiny.repository, tmp_path / "model_repository"))


# --- make bench: scripts/bench.py, then scripts/load_test.py ---


def test_load_test_sweep_prints_its_table_and_exits_cleanly(tmp_path):
    """`make bench`'s second step without --soak (the user's `--size tiny --concurrency 1 4`, smaller)."""
    out = run_script(
        "load_test.py", "--size", "tiny", "--utterances", "2", "--concurrency", "1", "--measurement-ms", "4000",
        "--out", tmp_path,
    )  # fmt: skip
    assert "perf_analyzer reported no errors" in out
    with open(tmp_path / "perf_analyzer-tiny.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["Concurrency"] == "1" and float(row["Inferences/Second"]) > 0
    assert "server memory (PSS, tritonserver + stubs)" in out  # printed after the table, where it used to fail
    assert json.loads((tmp_path / "server_memory-tiny.json").read_text())["samples"]
    assert not (tmp_path / "memory-tiny.png").exists()  # the plot is the soak's


def test_load_test_soak_reports_and_draws_the_servers_memory(tmp_path):
    out = run_script(
        "load_test.py", "--size", "tiny", "--utterances", "2", "--concurrency", "1", "--soak", "9", "--out", tmp_path
    )
    assert "concurrency 1, 9 s" in out and "perf_analyzer reported no errors" in out
    assert (tmp_path / "perf_analyzer-tiny-soak.csv").is_file()
    assert json.loads((tmp_path / "server_memory-tiny-soak.json").read_text())["samples"]
    assert (tmp_path / "memory-tiny.png").stat().st_size > 0


def test_load_test_reports_how_flat_a_long_soak_stays(tmp_path, capsys):
    """What a soak longer than its warm-up prints (the smallest soak above is too short for it), on samples of a
    30-minute soak: load_test.py's own report_memory, in this process."""
    spec = importlib.util.spec_from_file_location("load_test", SCRIPTS / "load_test.py")
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    samples = [(t * 5.0, 1000.0 + (t % 7) * 10) for t in range(12 * 30)]
    load_test.report_memory(samples, tmp_path / "memory.json", tmp_path / "memory.png", "a soak", 300.0)
    out = capsys.readouterr().out
    assert "after 300 s of warm-up" in out and "minute floors" in out and "slope" in out
    assert json.loads((tmp_path / "memory.json").read_text())["flatness"]["means_deviation"] < 0.05
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_bench_runs_and_redraws_its_plot(tmp_path):
    """`make bench`'s first step, one Triton system on two utterances; then --plot-only on what it wrote."""
    out = run_script(
        "bench.py", "--size", "tiny", "--utterances", "2", "--concurrency", "1", "--only", "triton", "--out", tmp_path
    )
    assert "triton c1" in out
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [row["system"] for row in rows if row["system"].startswith("triton")] == ["triton c1"]
    (tmp_path / "bench.png").unlink()
    run_script("bench.py", "--plot-only", "--out", tmp_path)
    assert (tmp_path / "bench.png").stat().st_size > 0


# --- the memory reports ---


def test_overload_report_compares_the_unbounded_and_bounded_queue(tmp_path):
    run_script(
        "overload_report.py", "--size", "tiny", "--utterances", "2", "--seconds", "2", "--measurement-ms", "3000",
        "--out", tmp_path,
    )  # fmt: skip
    results = json.loads((tmp_path / "overload.json").read_text())
    assert [r["queue"] for r in results] == ["unbounded", "bounded-16"]
    assert all(r["capacity_rps"] > 0 and r["answered"] > 0 for r in results)
    for r in results:
        assert (tmp_path / f"overload-memory-{r['queue']}.png").stat().st_size > 0


def test_mixed_load_report_runs_every_phase_before_and_after(tmp_path):
    out = run_script(
        "mixed_load_report.py", "--seconds", "3", "--clips", "4", "--files", "3", "--flood", "6", "--out", tmp_path,
    )  # fmt: skip
    report = json.loads((tmp_path / "mixed-load.json").read_text())
    assert [r["repository"] for r in report["results"]] == ["no-wait-bound", "default"]
    bounds = [r["max_queue_wait_s"] for r in report["results"]]
    from e2v_export.repository import QUEUE_WAIT_LIMITS_S

    assert bounds[0] == 0 and bounds[1] >= QUEUE_WAIT_LIMITS_S[0]  # the default: measured at export, at least 10 s
    for r in report["results"]:
        assert r["capacity_rps"] > 0 and r["open_loop"]["answered"] > 0 and r["idle_p95_s"] > 0
        # each case ran (at this size its probes may not fit in the phase: NaN)
        assert all(f"busy_p95_s_{name}" in r for name in ("as_bulk", "interactive", "bulk_lane"))
        assert 0 < r["bulk_lane_pss_mb"] < r["idle_pss_mb"]
        for name in ("before", "after"):
            assert r[f"batch_{name}"]["scored"] == 3 and r[f"batch_{name}"]["in_flight"]
    assert "bulk lane" in out and (tmp_path / "mixed-load.png").stat().st_size > 0


def test_live_report_measures_the_delay_of_real_time_streams_and_drops(tiny, tmp_path):
    repository = copy_repository(tiny, tmp_path)
    out = run_script(
        "live_report.py", "--repository", repository, "--streams", "1", "2", "--seconds", "12", "--dropped", "16",
        "--dropped-rounds", "2", "--flood-cases", "bulk_lane", "--flood-streams", "1", "--out", tmp_path / "live",
    )  # fmt: skip
    report = json.loads((tmp_path / "live" / "live-tiny.json").read_text())
    assert [r["streams"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["segments"] >= 2 * r["streams"] and 0 < r["p50_s"] <= r["p95_s"] <= r["max_s"] < 10
    assert report["offline_audio_s_per_s"] > 1 and report["capacity_streams"] in (0, 1, 2)
    [beside] = report["beside_flood"]
    assert beside["case"] == "bulk_lane" and beside["segments"] >= 2 and beside["p95_s"] < 10
    flood = beside["flood"]
    assert flood["sent"] >= 10 and flood["answered"] + flood["refused"] == flood["sent"]
    assert [r["dropped"] for r in report["dropped_rounds"]] == [16, 16]
    assert all(r["pss_after_mb"] > 0 for r in report["dropped_rounds"])
    assert report["after_drop"]["segments"] >= 2  # the server takes streams again
    assert "capacity" in out and (tmp_path / "live" / "live-tiny.png").stat().st_size > 0


def test_spike_report_follows_the_memory_through_a_burst(tiny, tmp_path):
    repository = copy_repository(tiny, tmp_path)
    out = run_script(
        "spike_report.py", "--repository", repository, "--time-scale", "0.05", "--max-seconds", "10",
        "--out", tmp_path / "spike",
    )  # fmt: skip
    assert "burst peak" in out and "nan" not in out
    marks = json.loads((tmp_path / "spike" / "spike.json").read_text())["marks"]
    assert list(marks) == ["load", "idle", "burst", "idle after", "load after"]
    assert 8 < marks["load after"] < 120  # a twentieth of the full run's 200 s, and the requests in flight
    assert (tmp_path / "spike" / "spike-memory.png").stat().st_size > 0


def test_lengths_report_follows_the_memory_over_distinct_lengths(tiny, tmp_path):
    repository = copy_repository(tiny, tmp_path)
    out = run_script("lengths_report.py", "--repository", repository, "--requests", "40", "--out", tmp_path / "out")
    assert "40 requests of distinct lengths" in out and "per 100 requests" in out
    assert len(json.loads((tmp_path / "out" / "lengths.json").read_text())["answered"]) == 40
    assert (tmp_path / "out" / "lengths-memory.png").stat().st_size > 0


# --- the other reports ---


def test_serve_report_measures_start_up_latency_and_batches():
    out = run_script("serve_report.py", "--size", "tiny", "--repeats", "2")
    assert "READY" in out and "2 requests: p50" in out
    assert "encoder" in out and "average batch" in out


def test_bench_export_reports_the_export_of_a_checkpoint():
    out = run_script("bench_export.py", "--size", "tiny")
    header, row = out.strip().splitlines()[-2:]
    assert header.split()[:2] == ["size", "params"] and row.split()[0] == "tiny"
    assert int(row.split()[1].replace(",", "")) > 0


@pytest.mark.parametrize(
    "runtime, precision, matmul", [("onnxruntime", "fp32", "MatMul"), ("openvino", "fp32", "FullyConnected")]
)
def test_profile_encoder_names_the_operators_that_take_the_time(runtime, precision, matmul):
    out = run_script("profile_encoder.py", "--size", "tiny", "--runs", "1", "--seconds", "2", "--runtime", runtime,
                     "--precision", precision)  # fmt: skip
    assert out.startswith("CPU: ") and f"tiny encoder in {runtime} at {precision}" in out
    rows = out.strip().splitlines()[3:-1]  # under the header, above "all"
    assert matmul in out and len(rows) >= 3  # each runtime's name for the weight products
    shares = [float(row.split()[-1].rstrip("%")) for row in rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5


# --- make web: scripts/run.py web ---


def test_make_web_serves_the_page_and_stops_the_server_on_sigterm(tiny, tmp_path):
    """`make web` (scripts/run.py web ...): the embedded server and the page; SIGTERM stops both."""
    from e2v_server.serve import free_port

    port = free_port()
    env = {
        **os.environ,
        "E2V_REPOSITORY": str(copy_repository(tiny, tmp_path)),
        "E2V_OUTPUT_DIR": str(tmp_path / "outputs"),
        "GRADIO_TEMP_DIR": str(tmp_path / "uploads"),
    }
    log = tmp_path / "run-web.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "run.py"), "web", "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"run.py web exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no page after 180 s:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "server READY" in text and "run: stopping the server" in text
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


# --- docs/segments.md: scripts/timeline_bench.py ---


def test_timeline_bench_measures_a_long_recording_and_a_killed_batch_resumed(tmp_path):
    """The scale benchmark at its smallest: a 72 s recording as mp3, then 6 recordings of 1-1.5 min killed after
    2 s (about a third of the batch) and resumed; every number it prints is recorded, and the resumed batch has
    one folder per recording."""
    stdout = run_script(
        "timeline_bench.py", "--size", "tiny", "--hours", "0.02", "--formats", "mp3", "--files", "6",
        "--file-minutes", "1", "1.5", "--kill-after", "2", "--concurrency", "1", "--out", tmp_path,
    )  # fmt: skip
    print(stdout)
    report = json.loads((tmp_path / "timeline-tiny.json").read_text())
    (row,) = report["recordings"]
    assert row["audio_s"] == pytest.approx(72, abs=0.1) and row["segments"] >= 10 and 0 < row["speech_s"] < 72
    assert 40 < row["client_peak_mb"] < 500 and row["detector_audio_s_per_s"] > 20
    assert row["speech_s_per_s"] > 0 and row["utterance_path_speech_s_per_s"] > 0
    resume = report["resume"]
    assert resume["done_at_kill"] < resume["files"]  # the kill came mid-batch
    assert resume["folders"] == resume["files"] == 6 and not resume["missing"] and not resume["duplicated"]
    assert resume["partial_left"] == 0 and resume["failed"] == 0
    assert "client peak memory" in stdout and "the detector alone" in stdout and "--resume finished" in stdout


def test_vad_report_compares_the_detectors_on_known_speech():
    """docs/segments.md's detector table, at its smallest: one tuning and one held-out recording."""
    stdout = run_script("vad_report.py", "--recordings", "1")
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in stdout.splitlines() if line.startswith("| ")
    }
    assert {"Silero, 8 kHz mode (ours)", "Silero, 16 kHz mode", "WebRTC VAD, mode 3"} <= set(rows)
    ours = rows["Silero, 8 kHz mode (ours)"]
    assert float(ours[2].rstrip("%")) >= 90 and ours[3] == "0 of 13" and ours[7].startswith("0 of 1")
    assert "host:" in stdout and "flags:" in stdout
