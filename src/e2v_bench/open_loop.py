"""An open-loop load: requests sent on a fixed schedule whatever the answers, as independent callers send them.

perf_analyzer (2.51) has the same mode (--request-rate-range with --async) but stops at the first refused
request ("Failed to retrieve results from inference request", exit code 99), so it cannot measure a server
that sheds load; this counts the refusals and carries on.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import numpy as np

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like

CAPACITY_CONCURRENCY = 4  # requests in flight when the capacity is measured: enough to keep the server busy


@dataclass
class Outcome:
    sent_at: float  # seconds since the start
    seconds: float  # until the answer or the refusal
    error: str  # "" when answered


async def send(
    client, samples: np.ndarray, start: float, priority: int = 0, model: str = contract.ENSEMBLE_MODEL
) -> Outcome:
    """One request to `model` (priority 0: the server's default level); its outcome, timed from `start`."""
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException

    tensor = aioclient.InferInput(contract.ENSEMBLE_INPUT, [1, samples.size], "FP32")
    tensor.set_data_from_numpy(samples.reshape(1, -1))
    sent = time.monotonic()
    try:
        await client.infer(model, [tensor], client_timeout=600, priority=priority)
        error = ""
    except InferenceServerException as exc:
        error = f"{str(exc.status()).replace('StatusCode.', '')}: {exc.message()}"
    return Outcome(sent - start, time.monotonic() - sent, error)


async def run_open_loop(
    url: str,
    clips: list[np.ndarray],
    rate: float,
    seconds: float,
    priority: int = 0,
    model: str = contract.ENSEMBLE_MODEL,
) -> list[Outcome]:
    """Send rate requests per second for `seconds` (clips in turn) to `model` at `priority`; every request's
    outcome once all are done."""
    import tritonclient.grpc.aio as aioclient

    async with aioclient.InferenceServerClient(url) as client:
        start = time.monotonic()
        tasks = []
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(send(client, clips[i % len(clips)], start, priority, model)))
        return list(await asyncio.gather(*tasks))


def mixed_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """Speech-like clips of 0.5-30 s, log-uniform (most short), in a fixed order."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(0.5), np.log(30.0), count))
    lengths[:2] = [0.5, 30.0]
    return [speech_like(float(s), seed=seed + i) for i, s in enumerate(rng.permutation(lengths))]


async def capacity(url: str, clips: list[np.ndarray], seconds: float) -> float:
    """Requests answered per second with CAPACITY_CONCURRENCY in flight (clips in turn)."""
    import tritonclient.grpc.aio as aioclient

    async with aioclient.InferenceServerClient(url) as client:
        start, answered, turn = time.monotonic(), 0, iter(range(10**9))

        async def worker():
            nonlocal answered
            while time.monotonic() - start < seconds:
                outcome = await send(client, clips[next(turn) % len(clips)], start)
                answered += not outcome.error

        await asyncio.gather(*(worker() for _ in range(CAPACITY_CONCURRENCY)))
        return answered / (time.monotonic() - start)


def open_loop(*args, **kwargs) -> list[Outcome]:
    """run_open_loop from synchronous code (a script, or a process of its own beside other load)."""
    return asyncio.run(run_open_loop(*args, **kwargs))


def summarize(outcomes: list[Outcome], seconds: float) -> dict:
    """Answered and refused requests per second of the schedule, latency percentiles of the answered ones."""
    answered = np.array([o.seconds for o in outcomes if not o.error]) * 1000
    refused = [o for o in outcomes if o.error]
    return {
        "sent": len(outcomes),
        "answered": len(answered),
        "refused": len(refused),
        "answered_per_s": len(answered) / seconds,
        "p50_ms": float(np.percentile(answered, 50)) if answered.size else float("nan"),
        "p99_ms": float(np.percentile(answered, 99)) if answered.size else float("nan"),
        "max_ms": float(answered.max()) if answered.size else float("nan"),
        "refusal_ms_p99": float(np.percentile([o.seconds * 1000 for o in refused], 99)) if refused else float("nan"),
        "errors": sorted({re.sub(r"\[request id: [^]]*\] ", "", o.error) for o in refused}),
    }
