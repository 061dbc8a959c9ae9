#!/usr/bin/env python
"""Live streams: how late each segment's emotion comes back, how many real-time streams the machine sustains, whether
they keep that delay beside an offline flood, and what streams opened and dropped leave behind.

    .venv/bin/python scripts/live_report.py                                     # tiny random checkpoint
    .venv/bin/python scripts/live_report.py --size large --streams 1 2 4 6 8 --seconds 60
    .venv/bin/python scripts/live_report.py --size large --runtime openvino --precision bf16   # another precision
    .venv/bin/python scripts/live_report.py --streams 1 2 --seconds 10 --dropped 20   # a smoke run

It starts the embedded server on the benchmarks' repository of --size, its encoder in --runtime at --precision
(random weights: speed does not depend on them; --repository serves another). Then, for each count in
--streams, that many e2v-client live streams (e2v_client.live.LiveStream) at once, each sending a call (the
example clips between pauses, e2v_bench.workload.call_recording) in real time, 0.1 s at a time, for --seconds.
For every segment: the delay from its end, in audio time, to its result at the client. Printed per count:
segments, p50, p95 and max delay; the capacity is the most streams with p95 <= 1.0 s (issue 24's bar). Beside
it, what the machine scores offline: the same calls through e2v-client's timeline (--granularity segment) as
fast as it goes, in audio seconds per second, i.e. the real-time streams that throughput would carry.

Beside a flood (--flood-cases): the capacity's streams again (--flood-streams), while an open loop of 0.5-30 s
requests at twice the offline capacity (requests per second, measured here) runs beside them, in one run: the
streams' delays and the flood's answered, refused and latency. The flood goes where e2v-client's bulk jobs go
(the bulk lane), or into the public ensemble at the bulk priority or at the default one, as a raw caller sends.

Then --dropped streams opened, given one chunk and dropped without their end, --dropped-rounds times; the
server's PSS before and after each round has idled out, and the live streams it then takes again. Writes
live-<name>.json and live-<name>.png (p50/p95 against streams; --also draws earlier reports beside it) into
--out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import encoder_suffix, export_repository, random_checkpoint, repository_dir
from e2v_bench.open_loop import capacity, mixed_clips, open_loop, summarize
from e2v_bench.workload import cache_dir, call_recording
from e2v_client import audio
from e2v_client.client import Emotion2vecClient, RetryPolicy
from e2v_client.live import LiveStream
from e2v_common import contract
from e2v_common.cpu import CpuInfo
from e2v_common.runtimes import PRECISIONS, RUNTIMES
from e2v_export.random_checkpoint import SIZES
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
RATE = contract.SAMPLE_RATE
STEP_S = 0.1  # each stream sends this much audio at a time, when it would have been heard
P95_BAR_S = 1.0
BULK = contract.PRIORITIES["bulk"]
# beside a flood: (name, the flood's priority (0: the server's default), where it goes, what the case is)
FLOOD_CASES = {
    "bulk_lane": (BULK, contract.BULK_ENSEMBLE_MODEL, "e2v-client's bulk jobs (the bulk lane)"),
    "shared_bulk": (BULK, contract.ENSEMBLE_MODEL, "a raw flood in the public ensemble at bulk priority"),
    "shared": (0, contract.ENSEMBLE_MODEL, "a raw flood in the public ensemble at the default priority"),
}
FLOOD_CLIPS = 24
FLOOD_HEAD_START_S = 6.0  # the flood's process starts (about 2 s) and fills the queues before the streams start


async def one_stream(client: Emotion2vecClient, samples: np.ndarray) -> tuple[list[float], int]:
    """Send `samples` in real time; the delay of each segment's result after its end was heard (s), and how many
    times the stream was opened again (refused, e.g. when a segment could not be scored in time)."""
    delays, start = [], time.monotonic()
    stream = LiveStream(client, on_segment=lambda s: delays.append(time.monotonic() - (start + s.end)))
    step = round(STEP_S * RATE)
    for first in range(0, len(samples), step):
        await asyncio.sleep(max(0.0, start + first / RATE - time.monotonic()))
        await stream.feed(samples[first : first + step])
    await stream.feed(np.zeros(0, np.float32), last=True)
    return delays, stream.restarts


async def streams_at_once(url: str, calls: list[np.ndarray], count: int) -> dict:
    async with Emotion2vecClient(url, retry=RetryPolicy(retry_for=60)) as client:
        per_stream = await asyncio.gather(*(one_stream(client, calls[i % len(calls)]) for i in range(count)))
    delays = np.array([d for stream_delays, _ in per_stream for d in stream_delays])
    return {
        "streams": count,
        "reopened": sum(restarts for _, restarts in per_stream),
        "segments": len(delays),
        "p50_s": float(np.percentile(delays, 50)) if len(delays) else None,
        "p95_s": float(np.percentile(delays, 95)) if len(delays) else None,
        "max_s": float(delays.max()) if len(delays) else None,
    }


async def offline_speed(url: str, calls: list[np.ndarray]) -> float:
    """Audio seconds per second of the same calls through the offline timeline, all at once."""
    async with Emotion2vecClient(url) as client:
        await client.connect()
        start = time.monotonic()

        async def one(samples):
            timeline = client.timeline()
            await timeline.feed(samples, last=True)

        await asyncio.gather(*(one(samples) for samples in calls))
        return sum(len(c) for c in calls) / RATE / (time.monotonic() - start)


async def streams_beside_flood(
    url: str, calls: list[np.ndarray], count: int, flood: list[np.ndarray], rate: float, case: str, seconds: float
) -> dict:
    """`count` real-time streams while an open loop of `flood` clips at `rate` a second runs beside them (it starts
    earlier, to fill the queues, and runs until the streams are done): both measured in the same run."""
    priority, model, _ = FLOOD_CASES[case]
    # in a process of its own, as a flood comes from other clients: it does not hold up the streams' event loop
    # (spawned: a forked child would share this process's gRPC state); it starts about 4 s before the streams
    flood_seconds = FLOOD_HEAD_START_S + seconds + 2.0  # until the last segments are back
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as flooder:
        load = asyncio.wrap_future(flooder.submit(open_loop, url, flood, rate, flood_seconds, priority, model))
        await asyncio.sleep(FLOOD_HEAD_START_S)
        streams = await streams_at_once(url, calls, count)
        outcomes = await load
    return {**streams, "case": case, "flood_rate_per_s": rate, "flood": summarize(outcomes, flood_seconds)}


def dropped_streams(url: str, count: int, idle_s: float, memory: ProcessTreeMemory) -> dict:
    """`count` streams opened with one chunk and dropped without END, a few at a time; PSS before and after."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import InferInput

    before = memory.sample()
    chunk = np.random.default_rng(0).standard_normal((1, RATE // 2)).astype(np.float32) * 0.1
    refused = 0
    for first in range(0, count, 8):
        answers: list = []
        client = grpcclient.InferenceServerClient(url)
        client.start_stream(callback=lambda result, error, answers=answers: answers.append(error))
        for stream_id in range(first + 1, min(first + 8, count) + 1):
            tensor = InferInput(contract.SEGMENTS_AUDIO, list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            client.async_stream_infer(contract.STREAM_MODEL, [tensor], sequence_id=stream_id, sequence_start=True)
        deadline = time.monotonic() + 30
        while len(answers) < min(8, count - first) and time.monotonic() < deadline:
            time.sleep(0.01)
        refused_now = sum(error is not None for error in answers)
        refused += refused_now
        client.stop_stream(cancel_requests=True)  # dropped: no END
        client.close()
        if refused_now:  # over the stream limit: wait for the dropped ones to idle out
            time.sleep(idle_s + 1)
    time.sleep(idle_s + 2)  # every dropped stream idles out
    after = memory.sample()
    return {"dropped": count, "refused_over_the_limit": refused, "pss_before_mb": before, "pss_after_mb": after}


def plot(series: dict[str, list[dict]], path: Path, title: str) -> None:
    """p95 and p50 against the number of streams, one line each per series (a repository variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, results), color in zip(series.items(), colors, strict=False):  # one colour per series
        rows = [r for r in results if r["p95_s"] is not None]
        streams = [r["streams"] for r in rows]
        ax.plot(streams, [r["p95_s"] for r in rows], "o-", color=color, label=f"{name}: p95")
        ax.plot(streams, [r["p50_s"] for r in rows], "s--", color=color, alpha=0.6, label=f"{name}: p50")
    ax.axhline(P95_BAR_S, color="grey", linestyle=":", label=f"bar: p95 <= {P95_BAR_S:g} s")
    ax.set(xlabel="real-time streams at once", ylabel="delay after a segment's end (s)", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES, help="the encoder's runtime")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the encoder's precision")
    parser.add_argument("--repository", type=Path, help="serve this repository (default: the benchmarks' one)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio each stream sends (default: %(default)s)")
    parser.add_argument(
        "--flood-cases", nargs="*", default=list(FLOOD_CASES), choices=list(FLOOD_CASES), help="none: no flood"
    )
    parser.add_argument(
        "--flood-streams", type=int, nargs="+", help="stream counts beside the flood (default: the capacity, >= 1)"
    )
    parser.add_argument("--dropped", type=int, default=1000, help="streams opened and dropped (default: %(default)s)")
    parser.add_argument("--dropped-rounds", type=int, default=3, help="times --dropped (default: %(default)s)")
    parser.add_argument(
        "--also", type=Path, nargs="*", default=[], help="earlier reports (live-*.json) drawn beside this one"
    )
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    host = f"{CpuInfo.this_machine().describe()}; {platform.node()}"
    print(f"host: {host}")
    variant = args.size + encoder_suffix(args.runtime, args.precision)
    repository = args.repository or export_repository(
        random_checkpoint(CACHE, args.size), repository_dir(CACHE, variant), args.runtime, args.precision
    )
    paths = [call_recording(CACHE / "live" / f"call-{args.seconds:g}s-{s}.wav", args.seconds, seed=s) for s in range(4)]
    calls = [audio.load(path).samples for path in paths]
    flood = mixed_clips(FLOOD_CLIPS)
    config = (repository / contract.STREAM_MODEL / "config.pbtxt").read_text()
    idle_s = int(config.split("max_sequence_idle_microseconds:")[1].split()[0]) / 1e6
    with TritonServer(repository, log_file=out / f"triton-live-{variant}.log") as server:
        memory = ProcessTreeMemory(server.process.pid, proportional=True)
        offline = asyncio.run(offline_speed(server.grpc_url, calls))
        print(f"offline timeline: {offline:.2f} audio s/s (= that many real-time streams of throughput)", flush=True)
        results = []
        for count in args.streams:
            results.append(asyncio.run(streams_at_once(server.grpc_url, calls, count)))
            r = results[-1]
            print(f"{count} streams: {r['segments']} segments, delay p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
                  f"max {r['max_s']:.2f} s", flush=True)  # fmt: skip
        capacity_streams = max(
            [r["streams"] for r in results if r["p95_s"] is not None and r["p95_s"] <= P95_BAR_S], default=0
        )
        beside = []
        if args.flood_cases:
            flood_rps = asyncio.run(capacity(server.grpc_url, flood, max(5.0, args.seconds / 3)))
            counts = args.flood_streams or [max(1, capacity_streams)]
            print(f"offline capacity: {flood_rps:.2f} requests/s of 0.5-30 s; the flood sends {2 * flood_rps:.2f}")
            for case, count in ((case, count) for case in args.flood_cases for count in counts):
                r = asyncio.run(
                    streams_beside_flood(server.grpc_url, calls, count, flood, 2 * flood_rps, case, args.seconds)
                )
                beside.append(r)
                f = r["flood"]
                print(f"{count} streams beside {FLOOD_CASES[case][2]}: delay p50 {r['p50_s']:.2f} s, p95 "
                      f"{r['p95_s']:.2f} s, reopened {r['reopened']}; flood {f['answered']} answered, {f['refused']} "
                      f"refused, p50 {f['p50_ms'] / 1000:.1f} s", flush=True)  # fmt: skip
        rounds = []
        for _ in range(args.dropped_rounds if args.dropped else 0):
            rounds.append(dropped_streams(server.grpc_url, args.dropped, idle_s, memory))
            print(f"{args.dropped} streams dropped: PSS {rounds[-1]['pss_after_mb']:.0f} MB", flush=True)
        after_drop = asyncio.run(streams_at_once(server.grpc_url, calls, 1)) if rounds else None
    print(f"\n{args.size} checkpoint ({repository.name}); host: {host}")
    print(f"{'streams':>8}{'segments':>10}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for r in results:
        print(f"{r['streams']:>8}{r['segments']:>10}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}{r['max_s']:>8.2f}")
    print(f"capacity (p95 <= {P95_BAR_S:g} s): {capacity_streams} real-time streams; offline: {offline:.2f} audio s/s")
    if beside:
        print(f"\n{'beside a flood at 2x offline capacity':<62}{'p50 s':>7}{'p95 s':>7}{'reopened':>9}"
              f"{'answered':>10}{'refused':>9}")  # fmt: skip
        for r in beside:
            f = r["flood"]
            print(f"{r['streams']} streams, {FLOOD_CASES[r['case']][2]:<52}{r['p50_s']:>7.2f}{r['p95_s']:>7.2f}"
                  f"{r['reopened']:>9}{f['answered']:>10}{f['refused']:>9}")  # fmt: skip
    if rounds:
        pss = ", ".join(f"{r['pss_after_mb']:.0f}" for r in rounds)
        print(f"\n{args.dropped} streams opened and dropped, {len(rounds)} times: server PSS "
              f"{rounds[0]['pss_before_mb']:.0f} MB before, {pss} MB after each round had idled out "
              f"({sum(r['refused_over_the_limit'] for r in rounds)} refused over the stream limit on the way); "
              f"a stream after them: {after_drop['segments']} segments")  # fmt: skip
    report = {
        "host": host, "size": args.size, "variant": variant, "repository": str(repository),
        "offline_audio_s_per_s": offline, "capacity_streams": capacity_streams, "results": results,
        "beside_flood": beside, "dropped_rounds": rounds, "after_drop": after_drop,
    }  # fmt: skip
    (out / f"live-{variant}.json").write_text(json.dumps(report, indent=1))
    earlier = [json.loads(path.read_text()) for path in args.also]
    series = {r.get("variant", r["size"]): r["results"] for r in earlier} | {variant: results}
    plot(series, out / f"live-{variant}.png", f"live streams on {CpuInfo.this_machine().model}")
    print(f"wrote {out / f'live-{variant}.json'} and {out / f'live-{variant}.png'}")


if __name__ == "__main__":
    main()
