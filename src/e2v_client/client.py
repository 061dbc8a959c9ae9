"""Score 16 kHz mono audio with the emotion2vec ensemble on a Triton server, over gRPC (asyncio).

The model's identity (labels, embedding size, frame rate, maximum duration)
is read from the server's model config, never from constants here.

Long audio: a clip longer than the server's maximum duration is split into
equal windows of at most that length, each scored by the server. Frame outputs
are the windows' frames concatenated; the utterance embedding is the mean of
the window embeddings weighted by their frame counts (the mean of all frames),
and the utterance scores are the server's classifier applied to that mean. A
clip up to the maximum is one request and gets exactly the server's answer.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from e2v_server import contract

# gRPC status codes worth retrying: the server is down, restarting, overloaded or slow.
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN")
GRANULARITIES = ("utterance", "frame")
# tritonclient's channel defaults, plus a short reconnect back-off: gRPC's own grows to minutes, so a
# channel would keep failing long after a restarted server is back, outlasting our retries.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class ServerError(RuntimeError):
    """The server could not be reached or did not answer, after the retries."""


class RequestError(ValueError):
    """The server refused this input (bad audio): retrying will not help."""


@dataclass
class ModelInfo:
    name: str
    labels: list[str]
    embedding_dim: int
    sample_rate: int
    frames_per_second: float
    max_seconds: float
    random_weights: bool
    precision: str = "fp32"  # the encoder's
    runtime: str = "onnxruntime"  # the encoder's (portable flavour)

    @property
    def description(self) -> str:
        """What scored a clip, as result.json's "model" says it: name, runtime and precision."""
        return f"{self.name} ({self.runtime} {self.precision})"

    @classmethod
    def from_config(cls, config: dict) -> ModelInfo:
        params = contract.string_parameters(config)
        try:
            return cls(
                name=params[contract.PARAM_MODEL_NAME],
                labels=params[contract.PARAM_LABELS].split(","),
                embedding_dim=int(params[contract.PARAM_EMBEDDING_DIM]),
                sample_rate=int(params[contract.PARAM_SAMPLE_RATE]),
                frames_per_second=float(params[contract.PARAM_FRAMES_PER_SECOND]),
                max_seconds=float(params[contract.PARAM_MAX_SECONDS]),
                random_weights=params.get(contract.PARAM_RANDOM_WEIGHTS) == "true",
                precision=params.get(contract.PARAM_PRECISION, "fp32"),
                runtime=params.get(contract.PARAM_RUNTIME, "onnxruntime"),
            )
        except KeyError as exc:
            raise ServerError(
                f"the server's {contract.ENSEMBLE_MODEL} model does not describe itself ({exc} missing): "
                "was its repository written by e2v-export?"
            ) from None


@dataclass
class Prediction:
    """The server's answer for one clip: scores, embedding and, at frame granularity, frame outputs.

    Labels named unuse* (older checkpoints) are already left out.
    """

    labels: list[str]
    scores: np.ndarray  # [L] utterance scores
    embedding: np.ndarray  # [D]
    frame_scores: np.ndarray | None  # [T, L], frame granularity only
    frame_embedding: np.ndarray | None  # [T, D], frame granularity only
    windows: int = 1

    @property
    def emotion(self) -> str:
        return self.labels[int(np.argmax(self.scores))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.scores))


@dataclass
class RetryPolicy:
    attempts: int = 5  # tries per request, the first included
    first_delay: float = 0.5  # seconds, doubled after each failure (with jitter)
    max_delay: float = 8.0

    def delays(self):
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay) * (0.8 + 0.4 * random.random())
            delay *= 2


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "").replace("StatusCode.", "")


class Emotion2vecClient:
    """An asyncio client for one or more servers. Create it once and reuse it (one gRPC channel each).

    With several URLs, requests go round-robin to the servers that are up; a server that fails
    with a transient error is left out for ``cooldown`` seconds and the request moves to the next
    one at once. Back-off and the retry budget apply when every server has failed.
    """

    def __init__(
        self, url: str | list[str], timeout: float = 120.0, retry: RetryPolicy | None = None, cooldown: float = 5.0
    ):
        self.urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
        if not self.urls or not all(self.urls):
            raise ValueError("give at least one server URL (HOST:PORT)")
        self.url = ", ".join(self.urls)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.cooldown = cooldown
        self._servers = [grpcaio.InferenceServerClient(u, channel_args=CHANNEL_ARGS) for u in self.urls]
        self._down_until = [0.0] * len(self.urls)
        self._next = 0
        self.info: ModelInfo | None = None

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        for server in self._servers:
            await server.close()

    def _pick(self) -> int:
        """The next server in turn that is not cooling down (or the one that recovers first)."""
        now = time.monotonic()
        count = len(self._servers)
        for step in range(count):
            index = (self._next + step) % count
            if self._down_until[index] <= now:
                self._next = index + 1
                return index
        return min(range(count), key=lambda i: self._down_until[i])

    async def _call(self, what: str, call):
        """Run call(server) with failover between servers and bounded, backed-off retries."""
        delays = self.retry.delays()
        failed_since_sleep: set[int] = set()
        while True:
            index = self._pick()
            try:
                return await call(self._servers[index])
            except InferenceServerException as exc:
                status = _status(exc)
                if status == "INVALID_ARGUMENT":
                    raise RequestError(exc.message()) from None
                if status not in RETRYABLE and "unknown model" not in str(exc).lower():
                    raise ServerError(f"{what} failed at {self.urls[index]}: {exc.message() or exc}") from None
                self._down_until[index] = time.monotonic() + self.cooldown
                failed_since_sleep.add(index)
                if len(failed_since_sleep) < len(self._servers):
                    continue  # fail over to another server at once
                delay = next(delays, None)
                if delay is None:
                    raise ServerError(f"{what} failed at {self.url}: {exc.message() or exc}") from None
                failed_since_sleep.clear()
                await asyncio.sleep(delay)

    async def connect(self) -> ModelInfo:
        """Read the model's identity from the server (with retries while it starts)."""
        response = await self._call(
            f"reading the {contract.ENSEMBLE_MODEL} model config",
            lambda server: server.get_model_config(
                contract.ENSEMBLE_MODEL, as_json=True, client_timeout=min(self.timeout, 10)
            ),
        )
        self.info = ModelInfo.from_config(response["config"])
        return self.info

    async def _infer(self, samples: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        tensor = InferInput(contract.ENSEMBLE_INPUT, [1, len(samples)], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(samples[None, :], dtype=np.float32))
        requested = [InferRequestedOutput(name) for name in outputs]
        response = await self._call(
            "inference",
            lambda server: server.infer(
                contract.ENSEMBLE_MODEL, [tensor], outputs=requested, client_timeout=self.timeout
            ),
        )
        return {name: response.as_numpy(name)[0] for name in outputs}

    async def _classify_embedding(self, embedding: np.ndarray) -> np.ndarray:
        """The server's classifier on one embedding (a one-frame utterance): its utterance scores."""
        frames_name, lengths_name = contract.CLASSIFIER_INPUTS
        frames = InferInput(frames_name, [1, 1, len(embedding)], "FP32")
        frames.set_data_from_numpy(embedding.reshape(1, 1, -1).astype(np.float32))
        lengths = InferInput(lengths_name, [1, 1], "INT64")
        lengths.set_data_from_numpy(np.ones((1, 1), np.int64))
        scores_name = contract.CLASSIFIER_OUTPUTS[1]
        response = await self._call(
            "classifying the combined embedding",
            lambda server: server.infer(
                contract.CLASSIFIER_MODEL,
                [frames, lengths],
                outputs=[InferRequestedOutput(scores_name)],
                client_timeout=self.timeout,
            ),
        )
        return response.as_numpy(scores_name)[0]

    def windows(self, num_samples: int) -> list[slice]:
        """Equal windows of at most the server's maximum duration."""
        max_samples = int(self.info.max_seconds * self.info.sample_rate)
        count = max(1, math.ceil(num_samples / max_samples))
        size = math.ceil(num_samples / count)
        return [slice(start, min(start + size, num_samples)) for start in range(0, num_samples, size)]

    async def score(self, samples: np.ndarray, granularity: str = "utterance") -> Prediction:
        """Prediction, embedding and (for granularity 'frame') frame outputs of one 16 kHz mono clip."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if self.info is None:
            await self.connect()
        frame = granularity == "frame"
        outputs = (contract.SCORES, contract.EMBEDDING, contract.NUM_FRAMES)
        if frame:
            outputs += (contract.FRAME_SCORES, contract.FRAME_EMBEDDING)
        parts = [await self._infer(samples[window], outputs) for window in self.windows(len(samples))]

        num_frames = np.array([int(p[contract.NUM_FRAMES][0]) for p in parts])
        if len(parts) == 1:
            scores, embedding = parts[0][contract.SCORES], parts[0][contract.EMBEDDING]
        else:
            # the mean of all frames: the windows' embeddings weighted by their frame counts
            embeddings = np.stack([p[contract.EMBEDDING] for p in parts])
            embedding = np.average(embeddings, axis=0, weights=num_frames).astype(np.float32)
            scores = await self._classify_embedding(embedding)
        frame_scores = frame_embedding = None
        if frame:
            valid = list(zip(parts, num_frames, strict=True))  # rows past NUM_FRAMES are padding
            frame_scores = np.concatenate([p[contract.FRAME_SCORES][:t] for p, t in valid])
            frame_embedding = np.concatenate([p[contract.FRAME_EMBEDDING][:t] for p, t in valid])

        keep = [i for i, label in enumerate(self.info.labels) if not contract.is_unused_label(label)]
        return Prediction(
            labels=[self.info.labels[i] for i in keep],
            scores=scores[keep],
            embedding=embedding,
            frame_scores=None if frame_scores is None else frame_scores[:, keep],
            frame_embedding=frame_embedding,
            windows=len(parts),
        )
