"""A live stream to the server's stream model: audio in as it comes, each speech segment's emotion back as it
closes (contract.STREAM_MODEL, over gRPC's bidirectional stream_infer).

LiveStream has Timeline's interface (feed blocks of any size, `last=True` at the end, `.segments`), so that a
file, a pipe or a microphone goes through the same code as the offline timeline, and gets the same segments:
the server runs the same segmenter on the same samples. Where Timeline waits for a request's worth of audio,
LiveStream sends each block at once, in chunks of at most the server's max_chunk_seconds, and hands each
segment to `on_segment` as its answer arrives.

Flow control: at most `window_seconds` of audio is sent and not answered yet; feed() waits while more is
held, so a source faster than the server is slowed, never buffered without bound.

Faults: every answer with a segment, and one every ack_seconds of audio, carries the server's STATE and the
sample to resume from. The stream keeps the audio from there on. When the connection drops, the server
restarts or refuses the stream (its stream limit, an idle timeout), it opens a new stream whose first chunk
carries that STATE and sends the kept audio again (with back-off, within the client's retry budget in
time): the segments already delivered are not given again, and none is counted twice. A stream that has sent
the most audio one stream may take (the server's max_stream_seconds) goes on in a new one the same way, at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput

from e2v_client.client import AccessError, Emotion2vecClient, RequestError, Segment, ServerError, is_transient
from e2v_common import contract

# What the stream model answers when a stream has sent the most audio one stream may take: the next one opens
# at once, without the back-off of a fault
STREAM_LIMIT_MESSAGE = "its limit of"
# What the stream model or Triton answers when a stream must start again from its last STATE: a refusal
# (the stream limit, a stream sending too fast, the encoder's full queue), a stream the server no longer
# knows (idle too long, a restart) or a model still loading after a restart.
STREAM_RETRY_MESSAGES = (
    "live streams",
    "faster than it is scored",
    "could not be scored",
    "no live stream",
    "START",
    "no available versions",
    STREAM_LIMIT_MESSAGE,
)


class StreamLost(Exception):
    """The stream must start again from its last STATE."""

    def __init__(self, message: str, at_once: bool = False):
        super().__init__(message)
        self.at_once = at_once  # the stream reached its length limit: no fault, no back-off


class LiveStream:
    def __init__(
        self,
        client: Emotion2vecClient,
        options: dict | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        window_seconds: float = 4.0,
    ):
        self.client, self.options, self.on_segment = client, dict(options or {}), on_segment
        self.window_seconds = window_seconds
        self.segments: list[Segment] = []
        self.restarts = 0  # streams opened again from a STATE
        self.kept = np.zeros(0, dtype=np.float32)  # the audio from kept_from on: what a new stream may resend
        self.kept_from = 0
        self.received = 0  # samples fed so far
        self.ended = False  # the last samples are in
        self.state = b""  # the last STATE the server gave
        self.answered_to = 0  # the stream's sample up to which chunks were answered, on the current stream
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self.limits: tuple[int, int] | None = None  # (samples per chunk, samples in flight), from the server

    async def feed(self, samples: np.ndarray, last: bool = False) -> None:
        """The next samples (16 kHz mono float32); last=True with the final ones (or with none): returns when
        every segment is in. Waits while the window is full."""
        if self.ended:
            raise ValueError("the stream has had its last samples")
        if self._task is None:
            self.limits = await self._limits()
            self._task = asyncio.create_task(self._run())
        async with self._changed:
            self.kept = np.concatenate([self.kept, np.asarray(samples, dtype=np.float32).reshape(-1)])
            self.received += len(samples)
            self.ended = last
            self._changed.notify_all()
            # flow control: what is held beyond the window waits for answers (or for the stream to fail)
            await self._changed.wait_for(
                lambda: self.received - self.answered_to <= 2 * self.limits[1] or self._task.done()
            )
        if self._task.done() or last:
            await self._task  # its error, or the end of the stream

    def close(self) -> None:
        """Give the stream up where it is (its recording failed part-way, or was abandoned): nothing more is sent
        or awaited. Nothing happens to a stream that has ended."""
        if self._task is not None:
            self._task.cancel()

    async def _limits(self) -> tuple[int, int]:
        if self.client.info is None:
            await self.client.connect()
        config = await self.client._call(
            f"reading the {contract.STREAM_MODEL} model config",
            lambda server: server.get_model_config(contract.STREAM_MODEL, as_json=True, client_timeout=10),
        )
        params = contract.string_parameters(config["config"])
        rate = contract.SAMPLE_RATE
        chunk = round(float(params[contract.PARAM_MAX_CHUNK_SECONDS]) * rate)
        # half the server's backlog at most: a stream is never refused for sending too fast
        window = round(min(self.window_seconds, float(params[contract.PARAM_MAX_BACKLOG_SECONDS]) / 2) * rate)
        return chunk, max(window, chunk)

    async def _run(self) -> None:
        """Streams, one after another, until the last chunk is answered; a lost one goes on from the STATE."""
        delays = self.client.retry.delays()
        try:
            while True:
                answered_before = self.kept_from, len(self.segments)
                try:
                    await self._one_stream()
                    return
                except StreamLost as exc:
                    progressed = (self.kept_from, len(self.segments)) != answered_before
                    if progressed:
                        delays = self.client.retry.delays()  # the budget is for one outage, not the whole stream
                    self.restarts += 1
                    if exc.at_once and progressed:
                        continue
                    delay = next(delays, None)
                    if delay is None:
                        raise ServerError(f"the live stream failed at {self.client.url}: {exc}") from None
                    await asyncio.sleep(delay)
        finally:
            async with self._changed:
                self._changed.notify_all()  # a feed() waiting for room learns that the stream is over

    async def _one_stream(self) -> None:
        sequence_id = random.randrange(1, 2**63)
        async with self._changed:
            self.answered_to = self.kept_from
        ends = deque()  # the end sample of each chunk sent and not answered yet, in order
        server = await self.client._reresolved(self.client._pick())
        responses = server.stream_infer(self._requests(sequence_id, ends))
        try:
            async for result, error in responses:
                if error is not None:
                    raise self._failure(error.message())
                await self._answered(result, ends.popleft())
                if self.ended and not ends and self.answered_to == self.received:
                    return
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
            if status == "INVALID_ARGUMENT":
                raise RequestError(exc.details()) from None
            if status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise AccessError(f"the server refused the live stream: {exc.details()}") from None
            if not is_transient(status, exc.details() or ""):
                raise ServerError(f"the live stream failed: {status} {exc.details()}") from None
            raise StreamLost(f"{status} {exc.details()}") from None
        finally:
            responses.cancel()
        raise StreamLost("the server closed the stream before its end")

    async def _requests(self, sequence_id: int, ends: deque):
        """The chunks of one stream: the kept audio from kept_from on, then what is fed, then END."""
        chunk_samples, window = self.limits
        sent_to, first = self.kept_from, True
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda sent_to=sent_to: (
                        (sent_to < self.received or self.ended) and sent_to - self.answered_to < window
                    )
                )
                end = min(self.received, sent_to + chunk_samples)
                chunk = self.kept[sent_to - self.kept_from : end - self.kept_from]
                last = self.ended and end == self.received
            ends.append(end)  # before it goes: its answer may come back before this generator resumes
            yield self._request(sequence_id, chunk, first, last)
            sent_to, first = end, False
            if last:
                return

    def _request(self, sequence_id: int, chunk: np.ndarray, first: bool, last: bool) -> dict:
        audio = InferInput(contract.SEGMENTS_AUDIO, [1, len(chunk)], "FP32")
        audio.set_data_from_numpy(np.ascontiguousarray(chunk[None, :], dtype=np.float32))
        inputs, parameters = [audio], None
        if first and self.state:  # going on from where a lost stream was
            state = InferInput(contract.SEGMENTS_STATE, [1], "BYTES")
            state.set_data_from_numpy(np.array([self.state], dtype=np.object_))
            inputs.append(state)
        elif first:
            parameters = self.options or None
        return {
            "model_name": contract.STREAM_MODEL,
            "inputs": inputs,
            "outputs": [InferRequestedOutput(name) for name in contract.SEGMENTS_OUTPUTS],
            "sequence_id": sequence_id,
            "sequence_start": first,
            "sequence_end": last,
            "parameters": parameters,
        }

    async def _answered(self, result, end: int) -> None:
        times, scores, embeddings = (result.as_numpy(name) for name in contract.SEGMENTS_OUTPUTS[:3])
        for t, s, e in zip(times, scores, embeddings, strict=True):
            segment = Segment(float(t[0]), float(t[1]), s, e)
            self.segments.append(segment)
            if self.on_segment is not None:
                self.on_segment(segment)
        state, resume_at = result.as_numpy(contract.SEGMENTS_STATE)[0], int(result.as_numpy(contract.RESUME_AT)[0])
        async with self._changed:
            if state:
                if not self.kept_from <= resume_at <= end:
                    raise ServerError(f"the stream model resumes at {resume_at}, not in {self.kept_from}..{end}")
                self.kept = self.kept[resume_at - self.kept_from :]
                self.kept_from, self.state = resume_at, state
            self.answered_to = end
            self._changed.notify_all()

    def _failure(self, message: str) -> Exception:
        if any(text in message for text in STREAM_RETRY_MESSAGES):
            return StreamLost(message, at_once=STREAM_LIMIT_MESSAGE in message)
        return RequestError(f"the stream model refused a chunk: {message}")
