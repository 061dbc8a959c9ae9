#!/usr/bin/env python
"""The emotion timeline at scale: e2v-client --granularity segment end to end on long recordings.

    .venv/bin/python scripts/timeline_bench.py                  # large: a 1-hour call as mp3 and as m4a, then
                                                                # 100 recordings of 5-10 min killed and resumed
    .venv/bin/python scripts/timeline_bench.py --hours 6 --formats mp3 --files 0   # the 6-hour recording
    .venv/bin/python scripts/timeline_bench.py --size tiny --hours 0.02 --files 3 --file-minutes 0.5 1  # smoke run

It starts the embedded server on the benchmarks' repository of --size (random weights: speed does not depend on
them), or uses --url with --repository. The recordings are the example clips between pauses of 0.5-4 s in
faint noise, 44.1 kHz stereo (e2v_bench.workload.call_recording), written once into the bench cache.
For each recording it prints:
  - e2v-client's wall time, audio-s/s and speech-s/s (its progress bar, in audio time, on this terminal),
    and its peak memory (issue bar: under 500 MB);
  - the server's memory (PSS of tritonserver and its stubs) before, at its peak and after;
  - the utterance path over the same speech: the segments' samples sent as utterances by the client library
    at the same concurrency (issue bar: the timeline's speech-s/s within 10 % of it);
  - the detector's own speed (the segmenter with the repository's Silero file, one thread).
Then a batch of --files recordings (flac) of --file-minutes is killed with SIGKILL part-way and finished with
--resume: every recording must have exactly one outputs folder. Everything goes to timeline-<size>.json in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
from pathlib import Path

import numpy as np

from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import bench_repository
from e2v_bench.timeline import detector_speed, kill_and_resume, run_client, segment_samples, utterance_path
from e2v_bench.workload import cache_dir, call_recording
from e2v_client import audio
from e2v_client.outputs import FOLDER_PREFIX, RESULT_FILE
from e2v_common.cpu import REPORTED_FLAGS, CpuInfo
from e2v_export.random_checkpoint import SIZES

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
CLIENT_BAR_MB = 500


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start the embedded one)")
    parser.add_argument("--repository", type=Path, help="the served repository (with --url; for the detector)")
    parser.add_argument("--size", default="large", choices=SIZES)
    parser.add_argument("--hours", type=float, default=1.0, help="the long recording's length")
    parser.add_argument("--formats", nargs="+", default=["mp3", "m4a"], choices=["mp3", "m4a", "flac", "wav"])
    parser.add_argument("--files", type=int, default=100, help="recordings in the kill-and-resume batch (0: none)")
    parser.add_argument("--file-minutes", type=float, nargs=2, default=[5.0, 10.0], metavar=("MIN", "MAX"))
    parser.add_argument("--kill-after", type=float, help="seconds before the batch is killed (default: a third)")
    parser.add_argument("--concurrency", type=int, default=8, help="e2v-client's requests in flight")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results")
    args = parser.parse_args()
    if args.url and not args.repository:
        parser.error("--url needs --repository (the served repository, for the detector's file)")
    return args


@contextlib.contextmanager
def server(args: argparse.Namespace):
    """(url, repository, memory sampler or None): the embedded server on the bench repository, or --url."""
    if args.url:
        yield args.url, args.repository, None
        return
    from e2v_server.serve import TritonServer

    repository = bench_repository(CACHE, args.size)
    triton = TritonServer(repository, log_file=args.out / f"triton-timeline-{args.size}.log")
    with triton, ProcessTreeMemory(triton.process.pid, 1.0, proportional=True) as memory:
        yield triton.grpc_url, repository, memory


def long_recording(url: str, repository: Path, path: Path, args, memory) -> dict:
    """One long recording through e2v-client, then the utterance path over its speech and the detector."""
    out = args.out / f"timeline-{path.stem}{path.suffix.replace('.', '-')}"
    before = memory.sample() if memory else float("nan")
    mark = len(memory.samples) if memory else 0
    print(f"\n{path.name}: e2v-client --granularity segment (concurrency {args.concurrency})", flush=True)
    run = run_client(url, path, "--granularity", "segment", "--output-dir", out, "--concurrency", args.concurrency,
                     quiet=False)  # fmt: skip
    if run.returncode != 0:
        raise SystemExit(f"e2v-client failed ({run.returncode}): {run.stderr}")
    folder = max(out.glob(f"{FOLDER_PREFIX}*"), key=lambda p: p.stat().st_mtime)
    result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    after = memory.sample() if memory else float("nan")
    peak = max((mb for _, mb in memory.samples[mark:]), default=after) if memory else float("nan")
    cuts = segment_samples(folder)
    speech = sum(len(cut) for cut in cuts) / 16000
    utterance_s = utterance_path(url, cuts, args.concurrency)
    samples = audio.load(folder / "processed_audio.wav").samples[: 16000 * 600]  # 10 min are enough for a speed
    row = {
        "file": path.name,
        "audio_s": result["duration"],
        "segments": len(result["segments"]),
        "speech_s": speech,
        "client_wall_s": run.wall_s,
        "client_peak_mb": run.peak_mb,
        "audio_s_per_s": result["duration"] / run.wall_s,
        "speech_s_per_s": speech / run.wall_s,
        "utterance_path_speech_s_per_s": speech / utterance_s,
        "detector_audio_s_per_s": detector_speed(repository, samples),
        "server_pss_mb": {"before": before, "peak": peak, "after": after},
    }
    ratio = row["speech_s_per_s"] / row["utterance_path_speech_s_per_s"]
    print(
        f"  {row['audio_s'] / 3600:.2f} h, {row['segments']} segments, {speech / 60:.1f} min of speech; "
        f"{run.wall_s:.0f} s: {row['audio_s_per_s']:.1f} audio-s/s, {row['speech_s_per_s']:.2f} speech-s/s\n"
        f"  client peak memory {run.peak_mb:.0f} MB (bar {CLIENT_BAR_MB} MB: "
        f"{'met' if run.peak_mb < CLIENT_BAR_MB else 'NOT met'})\n"
        f"  the same speech as utterances: {row['utterance_path_speech_s_per_s']:.2f} speech-s/s; the timeline "
        f"gives {ratio:.0%} of it (bar: within 10 %: {'met' if ratio >= 0.9 else 'NOT met'})\n"
        f"  the detector alone: {row['detector_audio_s_per_s']:.0f} audio-s/s on one thread\n"
        f"  server PSS: {before:.0f} MB before, {peak:.0f} MB at its peak, {after:.0f} MB after",
        flush=True,
    )
    return row


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpu = CpuInfo.this_machine()
    flags = " ".join(flag for flag in REPORTED_FLAGS if flag in cpu.flags)
    print(f"host: {cpu.model} ({platform.machine()}), {cpu.cores} cores, flags: {flags}; model: {args.size}")
    recordings = CACHE / "recordings"
    report = {"host": cpu.model, "cores": cpu.cores, "flags": flags, "size": args.size, "recordings": []}
    with server(args) as (url, repository, memory):
        for suffix in args.formats:
            path = call_recording(recordings / f"call-{args.hours:g}h.{suffix}", args.hours * 3600)
            report["recordings"].append(long_recording(url, repository, path, args, memory))
        if args.files:
            rng = np.random.default_rng(7)
            lengths = rng.uniform(*args.file_minutes, args.files) * 60
            inputs = [
                call_recording(recordings / f"batch-{i:03d}-{seconds:.0f}s.flac", seconds, seed=i)
                for i, seconds in enumerate(lengths)
            ]
            out = args.out / f"timeline-batch-{args.size}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh batch each run
            estimate = sum(lengths) / report["recordings"][0]["audio_s_per_s"] if report["recordings"] else 60.0
            kill_after = args.kill_after or max(5.0, estimate / 3)
            print(f"\n{args.files} recordings of {lengths.min() / 60:.1f}-{lengths.max() / 60:.1f} min: killed "
                  f"after {kill_after:.0f} s, then --resume", flush=True)  # fmt: skip
            check = kill_and_resume(url, inputs, out, kill_after, args.concurrency)
            print(
                f"  {check.done_at_kill} done when killed; --resume finished in {check.resumed_s:.0f} s; "
                f"{check.folders} folders for {check.files} recordings: {len(check.missing)} missing, "
                f"{len(check.duplicated)} duplicated, {check.partial_left} half-written left, exit code {check.failed}",
                flush=True,
            )
            report["resume"] = check.__dict__
    path = args.out / f"timeline-{args.size}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nrecorded in {path}")
    resume = report.get("resume")
    if resume and (resume["missing"] or resume["duplicated"] or resume["partial_left"] or resume["failed"]):
        raise SystemExit("the resumed batch lost or duplicated recordings")


if __name__ == "__main__":
    main()
