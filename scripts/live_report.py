#!/usr/bin/env python
"""Live streams: how late each segment's emotion comes back, how many real-time streams the machine sustains, and
what 1,000 streams opened and dropped leave behind.

    .venv/bin/python scripts/live_report.py                                     # tiny random checkpoint
    .venv/bin/python scripts/live_report.py --size large --streams 1 2 4 6 8 --seconds 60
    .venv/bin/python scripts/live_report.py --streams 1 2 --seconds 10 --dropped 20   # a smoke run

It starts the embedded server on the benchmarks' repository of --size (random weights: speed does not depend on
them; --repository serves another, e.g. a faster precision). Then, for each count in --streams, that many
e2v-client live streams (e2v_client.live.LiveStream) at once, each sending a call (the example clips between
pauses, e2v_bench.workload.call_recording) in real time, 0.1 s at a time, for --seconds. For every segment: the
delay from its end, in audio time, to its result at the client. Printed per count: segments, p50, p95 and max
delay; the capacity is the most streams with p95 <= 1.0 s (issue 24's bar). Beside it, what the machine scores
offline: the same calls through e2v-client's timeline (--granularity segment) as fast as it goes, in audio seconds
per second, i.e. the real-time streams that throughput would carry. Then --dropped streams opened, given one
chunk and dropped without their end; the server's PSS before, after they have idled out, and the live-stream
count it then takes again. Writes live-<size>.json and live-<size>.png (p50/p95 against streams) into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

import numpy as np

from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import bench_repository
from e2v_bench.workload import cache_dir, call_recording
from e2v_client import audio
from e2v_client.client import Emotion2vecClient, RetryPolicy
from e2v_client.live import LiveStream
from e2v_common import contract
from e2v_common.cpu import CpuInfo
from e2v_export.random_checkpoint import SIZES
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
RATE = contract.SAMPLE_RATE
STEP_S = 0.1  # each stream sends this much audio at a time, when it would have been heard
P95_BAR_S = 1.0


async def one_stream(client: Emotion2vecClient, samples: np.ndarray) -> list[float]:
    """Send `samples` in real time; the delay of each segment's result after its end was heard (s)."""
    delays, start = [], time.monotonic()
    stream = LiveStream(client, on_segment=lambda s: delays.append(time.monotonic() - (start + s.end)))
    step = round(STEP_S * RATE)
    for first in range(0, len(samples), step):
        await asyncio.sleep(max(0.0, start + first / RATE - time.monotonic()))
        await stream.feed(samples[first : first + step])
    await stream.feed(np.zeros(0, np.float32), last=True)
    return delays


async def streams_at_once(url: str, calls: list[np.ndarray], count: int) -> dict:
    async with Emotion2vecClient(url, retry=RetryPolicy(retry_for=60)) as client:
        per_stream = await asyncio.gather(*(one_stream(client, calls[i % len(calls)]) for i in range(count)))
    delays = np.array([d for stream in per_stream for d in stream])
    return {
        "streams": count,
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


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["p95_s"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["streams"] for r in rows], [r["p95_s"] for r in rows], "o-", label="p95")
    ax.plot([r["streams"] for r in rows], [r["p50_s"] for r in rows], "s--", label="p50")
    ax.axhline(P95_BAR_S, color="grey", linestyle=":", label=f"bar: p95 <= {P95_BAR_S:g} s")
    ax.set(xlabel="real-time streams at once", ylabel="delay after a segment's end (s)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--repository", type=Path, help="serve this repository (default: the benchmarks' one)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio each stream sends (default: %(default)s)")
    parser.add_argument("--dropped", type=int, default=1000, help="streams opened and dropped (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    host = f"{CpuInfo.this_machine().describe()}; {platform.node()}"
    print(f"host: {host}")
    repository = args.repository or bench_repository(CACHE, args.size)
    paths = [call_recording(CACHE / "live" / f"call-{args.seconds:g}s-{s}.wav", args.seconds, seed=s) for s in range(4)]
    calls = [audio.load(path).samples for path in paths]
    config = (repository / contract.STREAM_MODEL / "config.pbtxt").read_text()
    idle_s = int(config.split("max_sequence_idle_microseconds:")[1].split()[0]) / 1e6
    with TritonServer(repository, log_file=out / f"triton-live-{args.size}.log") as server:
        memory = ProcessTreeMemory(server.process.pid, proportional=True)
        offline = asyncio.run(offline_speed(server.grpc_url, calls))
        print(f"offline timeline: {offline:.2f} audio s/s (= that many real-time streams of throughput)", flush=True)
        results = []
        for count in args.streams:
            results.append(asyncio.run(streams_at_once(server.grpc_url, calls, count)))
            r = results[-1]
            print(f"{count} streams: {r['segments']} segments, delay p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
                  f"max {r['max_s']:.2f} s", flush=True)  # fmt: skip
        dropped = dropped_streams(server.grpc_url, args.dropped, idle_s, memory) if args.dropped else None
        after_drop = asyncio.run(streams_at_once(server.grpc_url, calls, 1)) if args.dropped else None
    capacity = max([r["streams"] for r in results if r["p95_s"] is not None and r["p95_s"] <= P95_BAR_S], default=0)
    print(f"\n{args.size} checkpoint ({repository.name}); host: {host}")
    print(f"{'streams':>8}{'segments':>10}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for r in results:
        print(f"{r['streams']:>8}{r['segments']:>10}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}{r['max_s']:>8.2f}")
    print(f"capacity (p95 <= {P95_BAR_S:g} s): {capacity} real-time streams; offline: {offline:.2f} audio s/s")
    if dropped:
        print(f"{dropped['dropped']} streams opened and dropped ({dropped['refused_over_the_limit']} of them refused "
              f"while the dropped ones had not idled out yet): server PSS {dropped['pss_before_mb']:.0f} MB before, "
              f"{dropped['pss_after_mb']:.0f} MB after they idled out; a stream after them: "
              f"{after_drop['segments']} segments")  # fmt: skip
    report = {
        "host": host, "size": args.size, "repository": str(repository), "offline_audio_s_per_s": offline,
        "capacity_streams": capacity, "results": results, "dropped": dropped, "after_drop": after_drop,
    }  # fmt: skip
    (out / f"live-{args.size}.json").write_text(json.dumps(report, indent=1))
    plot(results, out / f"live-{args.size}.png", f"live streams, {args.size} checkpoint")
    print(f"wrote {out / f'live-{args.size}.json'} and {out / f'live-{args.size}.png'}")


if __name__ == "__main__":
    main()
