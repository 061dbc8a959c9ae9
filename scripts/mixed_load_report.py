#!/usr/bin/env python
"""Mixed load: waits bounded in seconds, interactive requests ahead of bulk ones, and a batch job that rides out
a flood, each before and after, on one checkpoint.

    .venv/bin/python scripts/mixed_load_report.py                  # tiny random checkpoint
    .venv/bin/python scripts/mixed_load_report.py --size large --seconds 90
    .venv/bin/python scripts/mixed_load_report.py --seconds 3 --files 4 --flood 8   # a smoke run

1. Wait bound: an open loop of mixed lengths (0.5-30 s) at twice the capacity (measured first: requests answered
   per second at concurrency 4) for --seconds, on a repository without a wait bound (e2v-export
   --max-queue-wait 0) and with the default one. The answered requests' p99 against the bound plus one batch's
   compute; the refusals and how long they took; the server's PSS under load and after.
2. Priorities: the p95 of single 5 s requests on the idle server, then while bulk requests (priority bulk,
   mixed lengths, concurrency 8) keep it busy: both in the public ensemble with the probes at the bulk level
   (as before priorities) and at the interactive one (priority levels alone), then the bulk requests in the
   bulk lane (its own encoder at the lowest CPU priority, where e2v-client's batches go) and the probes
   interactive.
3. A batch beside a flood: --flood raw 30 s requests at once, and 5 s later an e2v-client batch of --files files
   at concurrency 16; with the client as it was (8 tries, about 30 s, a fixed concurrency) and as it is (AIMD,
   --retry-for 600). Files scored and failed, and the requests in flight over time.

Prints the tables, writes mixed-load.json and draws mixed-load.png (the open loop's latency over time, and the
batch's requests in flight over time, before and after) into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import export_repository, random_checkpoint, repository_dir
from e2v_bench.open_loop import capacity, mixed_clips, run_open_loop, send, summarize
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_client.batch import BatchOptions, run_batch
from e2v_client.client import Emotion2vecClient, RetryPolicy
from e2v_common import contract
from e2v_common.cpu import CpuInfo
from e2v_common.synthetic_speech import speech_like
from e2v_export.random_checkpoint import SIZES
from e2v_server.serve import TritonServer

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
BULK_CONCURRENCY = 8
BATCH_CONCURRENCY = 16
FLOOD_SECONDS = 30.0
BATCH_DELAY_S = 5.0
BULK = contract.PRIORITIES["bulk"]
INTERACTIVE = contract.PRIORITIES["interactive"]
# the priorities phase: (name, the probes' level, where the bulk requests go, what the case shows)
PRIORITY_CASES = (
    ("as_bulk", BULK, contract.ENSEMBLE_MODEL, "no priorities"),
    ("interactive", INTERACTIVE, contract.ENSEMBLE_MODEL, "priority levels alone"),
    ("bulk_lane", INTERACTIVE, contract.BULK_ENSEMBLE_MODEL, "bulk jobs in the bulk lane"),
)
PHASES = ("wait", "priorities", "batch")


async def probes_beside_bulk(
    url: str, bulk: list[np.ndarray], probe: np.ndarray, seconds: float, level: int | None, bulk_model: str
) -> list[float]:
    """Latencies (s) of `probe` sent one after another at `level`, while bulk requests to `bulk_model` keep
    BULK_CONCURRENCY in flight (level None: no bulk load)."""
    import tritonclient.grpc.aio as aioclient

    async with aioclient.InferenceServerClient(url) as client:
        start, turn, latencies = time.monotonic(), iter(range(10**9)), []

        async def bulk_worker():
            while time.monotonic() - start < seconds:
                outcome = await send(client, bulk[next(turn) % len(bulk)], start, BULK, bulk_model)
                if outcome.error:
                    await asyncio.sleep(0.2)

        async def prober():
            await asyncio.sleep(2.0 if level is not None else 0.0)  # the bulk load first fills the queue
            while time.monotonic() - start < seconds:
                outcome = await send(client, probe, start, level or INTERACTIVE)
                if not outcome.error:
                    latencies.append(outcome.seconds)
                await asyncio.sleep(0.5)

        workers = [bulk_worker() for _ in range(BULK_CONCURRENCY)] if level is not None else []
        await asyncio.gather(prober(), *workers)
        return latencies


async def flood_and_batch(url: str, files: list[Path], flood: int, out: Path, client_options: dict) -> dict:
    """`flood` raw 30 s requests at once, then the batch at BATCH_CONCURRENCY through a bulk client with
    `client_options`; the batch's outcome and the client's requests in flight, sampled every 0.25 s."""
    import tritonclient.grpc.aio as aioclient

    client = Emotion2vecClient(url, priority="bulk", **client_options)
    clip = speech_like(FLOOD_SECONDS, seed=99)
    in_flight: list[tuple[float, int, float]] = []
    start = time.monotonic()

    async def sample():
        while True:
            in_flight.append((time.monotonic() - start, client.concurrency.in_flight, client.concurrency.limit))
            await asyncio.sleep(0.25)

    async def batch():
        await asyncio.sleep(BATCH_DELAY_S)
        await client.connect()
        options = BatchOptions(out, "utterance", False, BATCH_CONCURRENCY, False, "mix")
        return await run_batch(client, files, options)

    sampler = asyncio.create_task(sample())
    async with aioclient.InferenceServerClient(url) as raw:
        flooded, report = await asyncio.gather(asyncio.gather(*(send(raw, clip, start) for _ in range(flood))), batch())
    sampler.cancel()
    await client.close()
    return {
        "files": len(files),
        "scored": sum(r.status == "scored" for r in report.rows),
        "failed": len(report.failed),
        "batch_seconds": report.wall_seconds,
        "flood_answered": sum(not o.error for o in flooded),
        "refusals_seen": client.concurrency.refusals,
        "in_flight": in_flight,
    }


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_server(repository: Path, out: Path, label: str, args, clips, probe, files) -> dict:
    """Every phase on one repository."""
    bound = json.loads((repository / contract.ENSEMBLE_MODEL / "export_stamp.json").read_text())["options"]
    result = {"repository": label, "max_queue_wait_s": bound["max_queue_wait"]}
    server = TritonServer(repository, log_file=out / f"triton-mixed-{label}.log")
    with server, ProcessTreeMemory(server.process.pid, 0.5, proportional=True) as memory:
        url = server.grpc_url
        if "wait" in args.phases:
            result |= wait_bound_phase(url, memory, args, clips, label)
        if "priorities" in args.phases:
            import psutil

            result["idle_pss_mb"] = memory.sample()
            lane = psutil.Process(server.stub_pid(contract.BULK_ENCODER_MODEL)).memory_full_info().pss / 2**20
            result["bulk_lane_pss_mb"] = lane
            idle = asyncio.run(probes_beside_bulk(url, clips, probe, args.seconds / 3, None, ""))
            result["idle_p95_s"] = percentile(idle, 95)
            for name, level, bulk_model, _ in PRIORITY_CASES:
                latencies = asyncio.run(probes_beside_bulk(url, clips, probe, args.seconds / 2, level, bulk_model))
                result[f"busy_p95_s_{name}"] = percentile(latencies, 95)
        if "batch" in args.phases:
            for name, client_options in (
                ("before", {"retry": RetryPolicy(retry_for=1e9, attempts=8), "max_in_flight": 10**6}),
                ("after", {"retry": RetryPolicy(), "max_in_flight": BATCH_CONCURRENCY}),
            ):
                with tempfile.TemporaryDirectory() as batch_out:
                    batch = flood_and_batch(url, files, args.flood, Path(batch_out), client_options)
                    result[f"batch_{name}"] = asyncio.run(batch)
                time.sleep(3.0)
    return result


def wait_bound_phase(url: str, memory: ProcessTreeMemory, args, clips: list[np.ndarray], label: str) -> dict:
    """The capacity, then the open loop at twice it; the server's PSS under load and after."""
    result = {"capacity_rps": asyncio.run(capacity(url, clips, max(5.0, args.seconds / 3)))}
    rate = 2 * result["capacity_rps"]
    print(f"{label}: capacity {result['capacity_rps']:.2f} requests/s; sending {rate:.2f}/s ...", flush=True)
    loaded_from = len(memory.samples)
    outcomes = asyncio.run(run_open_loop(url, clips, rate, args.seconds))
    under_load = [mb for _, mb in memory.samples[loaded_from:]]
    time.sleep(5.0)
    result["open_loop"] = summarize(outcomes, args.seconds)
    result["open_loop"]["latency_over_time"] = [(o.sent_at, o.seconds, bool(o.error)) for o in outcomes]
    result["pss_mb"] = {"under_load_median": float(np.median(under_load)), "after": memory.sample()}
    return result


def plot(results: list[dict], phases: list[str], path: Path, title: str) -> None:
    """One panel per phase run: the open loop's latencies over time, the probes' p95, the batch's requests in
    flight over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(phases), 1, figsize=(9, 3.5 * len(phases)), squeeze=False)
    panels = dict(zip(phases, axes[:, 0], strict=True))
    last = results[-1]
    if "wait" in panels:
        for r in results:
            points = [(t, s) for t, s, refused in r["open_loop"]["latency_over_time"] if not refused]
            if points:
                label = f"{r['repository']} (wait bound {r['max_queue_wait_s']:g} s)"
                panels["wait"].plot(*zip(*points, strict=True), ".", label=label)
        panels["wait"].set(
            xlabel="sent at (s)", ylabel="latency of answered (s)", title=f"{title}: open loop at 2x capacity"
        )
        panels["wait"].legend()
    if "priorities" in panels:
        labels = ["idle", *(shows for _, _, _, shows in PRIORITY_CASES)]
        values = [last["idle_p95_s"], *(last[f"busy_p95_s_{name}"] for name, _, _, _ in PRIORITY_CASES)]
        panels["priorities"].bar(labels, values)
        panels["priorities"].axhline(1.5 * last["idle_p95_s"], color="red", linestyle="--", label="1.5 x idle")
        panels["priorities"].set(
            ylabel="p95 of 5 s requests (s)", title=f"{title}: interactive requests beside bulk load"
        )
        panels["priorities"].legend()
    if "batch" in panels:
        for name in ("before", "after"):
            samples = last[f"batch_{name}"]["in_flight"]
            if samples:
                t, flying, _ = zip(*samples, strict=True)
                panels["batch"].plot(t, flying, label=f"client {name}: requests in flight")
        panels["batch"].set(xlabel="seconds since the flood", ylabel="in flight", title="a batch beside a flood")
        panels["batch"].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_tables(results: list[dict], args, clips: list, host: str) -> None:
    print(f"\n{args.size} checkpoint; host: {host}")
    if "wait" in args.phases:
        print(f"open loop, {len(clips)} clips of 0.5-30 s in turn at twice the capacity for {args.seconds:.0f} s:")
        print(f"{'repository':<15}{'wait s':>7}{'cap/s':>7}{'answered':>9}{'refused':>8}{'p50 s':>7}{'p99 s':>7}"
              f"{'max s':>7}{'refusal p99 s':>14}{'PSS load':>9}{'PSS after':>10}")  # fmt: skip
        for r in results:
            o, m = r["open_loop"], r["pss_mb"]
            print(f"{r['repository']:<15}{r['max_queue_wait_s']:>7g}{r['capacity_rps']:>7.2f}{o['answered']:>9}"
                  f"{o['refused']:>8}{o['p50_ms'] / 1000:>7.1f}{o['p99_ms'] / 1000:>7.1f}{o['max_ms'] / 1000:>7.1f}"
                  f"{o['refusal_ms_p99'] / 1000:>14.2f}{m['under_load_median']:>9.0f}{m['after']:>10.0f}")  # fmt: skip
            for error in o["errors"]:
                print(f"    refused: {error}")
    if "priorities" in args.phases:
        print(
            "\n5 s requests, p95 (s): idle; beside bulk load in the public ensemble, sent as bulk (no priorities) "
            "and as interactive (priority levels); beside bulk load in the bulk lane, sent as interactive"
        )
        for r in results:
            p95 = {name: r[f"busy_p95_s_{name}"] for name, _, _, _ in PRIORITY_CASES}
            cases = "  ".join(f"{n.replace('_', ' ')} {s:.2f} ({s / r['idle_p95_s']:.1f}x)" for n, s in p95.items())
            print(f"{r['repository']:<15} idle {r['idle_p95_s']:.2f}  {cases}")
            lane = r["bulk_lane_pss_mb"]
            print(f"{'':<15} server PSS {r['idle_pss_mb']:.0f} MB idle, of which the bulk lane's encoder {lane:.0f} MB")
    if "batch" in args.phases:
        print(f"\nbatch of {args.files} files at concurrency {BATCH_CONCURRENCY}, {BATCH_DELAY_S:g} s after "
              f"{args.flood} raw {FLOOD_SECONDS:g} s requests:")  # fmt: skip
        for r in results:
            for name in ("before", "after"):
                b = r[f"batch_{name}"]
                print(f"{r['repository']:<15} client {name:<7} scored {b['scored']}/{b['files']}, "
                      f"failed {b['failed']}, {b['batch_seconds']:.0f} s, refusals seen {b['refusals_seen']}, "
                      f"flood answered {b['flood_answered']}/{args.flood}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the open loop (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=24, help="mixed clips of 0.5-30 s (default: %(default)s)")
    parser.add_argument("--files", type=int, default=60, help="the batch's files (default: %(default)s)")
    parser.add_argument("--flood", type=int, default=100, help="raw 30 s requests at once (default: %(default)s)")
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(PHASES),
        help="the phases to run (default: all); without wait, only the repository with the default bound",
    )  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    args.phases = [phase for phase in PHASES if phase in args.phases]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = CpuInfo.this_machine()
    host = f"{cpu.describe()}; {platform.node()}"
    print(f"host: {host}")
    model_dir = random_checkpoint(CACHE, args.size)
    clips = mixed_clips(args.clips)
    probe = speech_like(5.0, seed=5)
    files = prepare_workload(CACHE, args.files, 1).paths
    results = []
    for label, wait in (("no-wait-bound", 0.0), ("default", None))[0 if "wait" in args.phases else 1 :]:
        options = {} if wait is None else {"max_queue_wait": wait}
        repository = export_repository(model_dir, repository_dir(CACHE, f"{args.size}-wait-{label}"), **options)
        results.append(run_server(repository, out, label, args, clips, probe, files))

    print_tables(results, args, clips, host)
    (out / "mixed-load.json").write_text(json.dumps({"host": host, "size": args.size, "results": results}))
    plot(results, args.phases, out / "mixed-load.png", f"{args.size}, {cpu.model}")
    print(f"\nwrote {out / 'mixed-load.json'} and {out / 'mixed-load.png'}")


if __name__ == "__main__":
    main()
