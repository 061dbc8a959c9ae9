"""Score 16 kHz mono audio with the emotion2vec ensemble on a Triton server, over gRPC (asyncio).

The model's identity (labels, embedding size, frame rate, maximum duration)
is read from the server's model config, never from constants here.

Security: against the gateway (`e2v-serve --public`), ssl/root_cert make the channel TLS and `token` is sent as
the bearer token in every call's metadata, and nowhere else (never in a message, repr or file). A refused token
and a failed TLS handshake are AccessError at once, never retried: no retry fixes them.

Long audio: a clip longer than the server's maximum duration is split into
equal windows of at most that length, each scored by the server. Frame outputs
are the windows' frames concatenated; the utterance embedding is the mean of
the window embeddings weighted by their frame counts (the mean of all frames),
and the utterance scores are the server's classifier applied to that mean. A
clip up to the maximum is one request and gets exactly the server's answer.

Segments (granularity "segment"): the server's segments model cuts the recording into speech segments and
scores each as an utterance; a recording longer than one request goes in pieces, each request handing back
the state the previous response gave (the server keeps nothing between them). The recording's scores are
the mean of its segments' scores weighted by their durations; a recording without speech has no segments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferenceServerClientPlugin, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from e2v_common import contract

# gRPC status codes worth retrying: the server is down, restarting, overloaded (a full queue is UNAVAILABLE
# "Exceeds maximum queue size") or slow.
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN")
# INTERNAL errors that a retry fixes: a model's Python-backend stub died (e2v-serve restarts the server); gRPC's
# own "Internal error from Core", which a client reads instead of the status when the connection drops while it
# is still writing (a stream to a server that was killed); a stream reset by a proxy (RST_STREAM), which is how
# nginx ends a stream it has begun to answer when the stream passes its size limit or the upstream goes away
RETRYABLE_INTERNAL = ("is not healthy", "internal error from core", "rst_stream")
GRANULARITIES = ("utterance", "frame", "segment")
# tritonclient's channel defaults, plus a short reconnect back-off: gRPC's own grows to minutes, so a
# channel would keep failing long after a restarted server is back, outlasting our retries.
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # every address a name resolves to gets requests in turn (dns:///pods.example:8001, a Kubernetes headless
    # Service); gRPC's default, pick_first, would send everything to the first one
    ("grpc.lb_policy_name", "round_robin"),
]


class ServerError(RuntimeError):
    """The server could not be reached or did not answer, after the retries."""


class RequestError(ValueError):
    """The server refused this input (bad audio): retrying will not help."""


class AccessError(ServerError):
    """The server refused this client (bearer token) or no secure connection could be made (TLS).

    Retrying, or another server of the same deployment, will not help: it is raised at once, and a batch stops.
    """


class ConfigError(ValueError):
    """A token or certificate file the client was given cannot be used. The message names the file, never the token."""


# A bearer token's characters (RFC 6750's b64token): anything else could not travel as gRPC metadata
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
PLAINTEXT_REFUSED = "the server did not answer plaintext gRPC: it may need TLS (--ssl or --root-cert FILE)"
# gRPC reports a failed TLS set-up as UNAVAILABLE, like a server that is down: these texts tell them apart
# (what grpcio says for each, checked against the gateway), with what to do about each
TLS_FAILURES = (
    ("CERTIFICATE_VERIFY_FAILED", "the server's TLS certificate is not trusted: pin it with --root-cert FILE"),
    ("peer name", "the server's TLS certificate does not name this address"),
    ("WRONG_VERSION_NUMBER", "TLS handshake failed: the server does not speak TLS (drop --ssl and --root-cert?)"),
    ("security handshaker", "TLS could not be set up: is the --root-cert file the server's certificate?"),
    ("SSL_ERROR_SSL", "TLS handshake failed"),
    ("http1.x server", PLAINTEXT_REFUSED),  # a TLS port (nginx answers HTTP/1 "400"), or an HTTP port
    ("Expected SETTINGS frame", PLAINTEXT_REFUSED),
)


def read_token_file(path: str | Path) -> str:
    """The bearer token in a file: its first non-empty line, stripped. Errors name the file, never its content."""
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not text") from None
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise ConfigError(f"the token file {path} is empty: put the bearer token on its first line")
    if not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError(f"the first line of the token file {path} is not a bearer token (A-Z a-z 0-9 - . _ ~ + /)")
    return token


def check_root_cert(path: str | Path) -> str:
    """The path of a readable PEM certificate file, as tritonclient takes it."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the root certificate {path}: {exc.strerror or type(exc).__name__}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"the root certificate {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return str(path)


class BearerToken(InferenceServerClientPlugin):
    """tritonclient calls this before every request, whatever the method: the token goes on each call's metadata."""

    __slots__ = ("_value",)

    def __init__(self, token: str):
        if not TOKEN_PATTERN.fullmatch(token or ""):
            raise ConfigError("the bearer token is empty or has characters a token cannot have")
        self._value = f"Bearer {token}"

    def __call__(self, request) -> None:
        request.headers = {
            **request.headers,
            contract.TOKEN_HEADER: self._value,
        }  # a copy: the caller's dict stays as it was

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    def hide(self, text: str) -> str:
        """`text` with the token blanked out, should a server ever echo it."""
        return text.replace(self._value[len("Bearer ") :], "<token>")


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
    bulk_ensemble: str = ""  # the bulk lane's ensemble, where bulk jobs go; empty where the server has none

    @property
    def kept(self) -> list[int]:
        """The indices of the labels a result shows: those named unuse* (older checkpoints) are left out."""
        return [i for i, label in enumerate(self.labels) if not contract.is_unused_label(label)]

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
                bulk_ensemble=params.get(contract.PARAM_BULK_ENSEMBLE, ""),
            )
        except KeyError as exc:
            raise ServerError(
                f"the server's {contract.ENSEMBLE_MODEL} model does not describe itself ({exc} missing): "
                "was its repository written by e2v-export?"
            ) from None


@dataclass
class Segment:
    """One speech segment of a recording, scored as an utterance on its own samples."""

    start: float  # seconds from the recording's start
    end: float
    scores: np.ndarray  # [L]
    embedding: np.ndarray  # [D]
    channel: int | None = None  # the channel it was heard on, when each channel has its own timeline

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Prediction:
    """The server's answer for one clip: scores, embedding and, at frame granularity, frame outputs; at segment
    granularity its speech segments, the scores and embedding then being their duration-weighted means.

    Labels named unuse* (older checkpoints) are already left out.
    """

    labels: list[str]
    scores: np.ndarray  # [L] utterance scores
    embedding: np.ndarray  # [D]
    frame_scores: np.ndarray | None  # [T, L], frame granularity only
    frame_embedding: np.ndarray | None  # [T, D], frame granularity only
    windows: int = 1
    segments: list[Segment] | None = None  # segment granularity only

    @property
    def has_speech(self) -> bool:
        return self.segments is None or bool(self.segments)

    @property
    def emotion(self) -> str | None:
        """The top label; None for a recording without speech."""
        return self.labels[int(np.argmax(self.scores))] if self.has_speech else None

    @property
    def confidence(self) -> float:
        return float(np.max(self.scores)) if self.has_speech else 0.0

    def label_of(self, scores: np.ndarray) -> str:
        return self.labels[int(np.argmax(scores))]


@dataclass
class RetryPolicy:
    """Retries of a request while the server is down, restarting or overloaded, budgeted in time: after
    `retry_for` seconds of failing, the request fails (ServerError). `attempts` caps the tries as well (the
    first included; None: only the time budget)."""

    retry_for: float = 600.0  # seconds: an overload or a restart is ridden out, a server gone for good is not
    attempts: int | None = None
    first_delay: float = 0.5  # seconds, doubled after each failure (with jitter)
    max_delay: float = 8.0

    def delays(self):
        """The waits between tries, each drawn when the previous try has failed; ends when the budget is spent."""
        start, waited = time.monotonic(), 0.0
        delay, tries = self.first_delay, 1
        while self.attempts is None or tries < self.attempts:
            wait = min(delay, self.max_delay) * (0.8 + 0.4 * random.random())
            # the time spent so far: the tries and the waits (at least the waits, however fast the tries failed)
            if max(time.monotonic() - start, waited) + wait > self.retry_for:
                return
            yield wait
            waited, delay, tries = waited + wait, delay * 2, tries + 1


class AdaptiveConcurrency:
    """How many requests a client keeps in flight, adapted to what the server takes (AIMD, as TCP does): up to
    `maximum`; halved when the server refuses a request (a full queue, an expired wait, a restart), at most
    once per CUT_INTERVAL_S; raised by one after as many answers as the limit is high."""

    CUT_INTERVAL_S = 1.0  # the refusals of one overload arrive together: they cut the limit once
    BUSY_S = 5.0  # the server counts as busy this long after a refusal

    def __init__(self, maximum: int):
        if maximum < 1:
            raise ValueError("at least one request must be allowed in flight")
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self.refusals = 0
        self._last_cut = self._last_refusal = -math.inf
        self._changed = asyncio.Condition()

    @property
    def busy(self) -> bool:
        return time.monotonic() - self._last_refusal < self.BUSY_S

    async def __aenter__(self):
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def __aexit__(self, *exc):
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def answered(self) -> None:
        self.limit = min(self.maximum, self.limit + 1 / self.limit)

    def refused(self) -> None:
        now = time.monotonic()
        self.refusals += 1
        self._last_refusal = now
        if now - self._last_cut >= self.CUT_INTERVAL_S:
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = now


def is_transient(status: str, text: str) -> bool:
    """Whether a gRPC failure (its status code's name and message) may pass when tried again."""
    return status in RETRYABLE or (status == "INTERNAL" and any(t in text.lower() for t in RETRYABLE_INTERNAL))


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "").replace("StatusCode.", "")


def access_problem(exc: InferenceServerException, has_token: bool) -> str | None:
    """What is wrong when the server refused this client or TLS failed (not worth retrying); None otherwise."""
    status, text = _status(exc), exc.message() or str(exc)
    if status == "UNAUTHENTICATED":
        if has_token:
            return f"the server refused the bearer token ({text}): check the --token-file"
        return f"the server requires a bearer token ({text}): pass --token-file FILE"
    if status == "PERMISSION_DENIED":
        return f"the server denied access ({text}): check the --token-file"
    if status == "UNAVAILABLE":
        detail = text.rsplit("last error: ", 1)[-1]
        for pattern, hint in TLS_FAILURES:
            if pattern.lower() in text.lower():
                return f"{hint} ({detail})"
    return None


class Emotion2vecClient:
    """An asyncio client for one or more servers. Create it once and reuse it (one gRPC channel each).

    With several URLs, requests go round-robin to the servers that are up; a server that fails
    with a transient error is left out for ``cooldown`` seconds and the request moves to the next
    one at once. Back-off and the retry budget (``retry``, in seconds) apply when every server has failed.
    A ``dns:///NAME:PORT`` URL spreads requests over every address NAME resolves to (round_robin), resolved
    again every ``reresolve_every`` seconds so that replicas added later get requests too.

    Load: at most ``max_in_flight`` requests at once, fewer while the server refuses them (AdaptiveConcurrency);
    each request carries ``priority`` ("interactive", the server's default, or "bulk", served after it).

    Through the gateway: ``root_cert`` (a PEM file the server's certificate chains to; implies ``ssl``) or
    ``ssl=True`` (the system's CAs) for TLS, and ``token``, sent as the bearer token on every call. A refused
    token or a TLS failure raises AccessError at once, without retries or failover.
    """

    def __init__(
        self,
        url: str | list[str],
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        cooldown: float = 5.0,
        *,
        reresolve_every: float = 30.0,
        max_in_flight: int = 64,
        priority: str = contract.DEFAULT_PRIORITY,
        ssl: bool = False,
        root_cert: str | Path | None = None,
        token: str | None = None,
    ):
        self.urls = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
        if not self.urls or not all(self.urls):
            raise ValueError("give at least one server URL (HOST:PORT)")
        self.url = ", ".join(self.urls)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.cooldown = cooldown
        if priority not in contract.PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(contract.PRIORITIES)}")
        self.priority = priority
        self.concurrency = AdaptiveConcurrency(max_in_flight)
        self.root_cert = check_root_cert(root_cert) if root_cert is not None else None
        self.ssl = bool(ssl) or self.root_cert is not None
        self._token = BearerToken(token) if token is not None else None
        self._servers = [self._make_server(u) for u in self.urls]
        self.reresolve_every = reresolve_every
        self._made_at = [time.monotonic()] * len(self.urls)
        self._retired: list[tuple[float, grpcaio.InferenceServerClient]] = []  # (close after, old channel)
        self._down_until = [0.0] * len(self.urls)
        self._next = 0
        self.info: ModelInfo | None = None

    @property
    def priority_level(self) -> int:
        """Triton's priority level of this client's requests (contract.PRIORITIES)."""
        return contract.PRIORITIES[self.priority]

    @property
    def ensemble(self) -> str:
        """The ensemble that scores this client's audio: the bulk lane's for a bulk client where the server has
        one (it runs beside the interactive requests' encoder, at a lower CPU priority), else the public one."""
        if self.priority == "bulk" and self.info is not None and self.info.bulk_ensemble:
            return self.info.bulk_ensemble
        return contract.ENSEMBLE_MODEL

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def _make_server(self, url: str) -> grpcaio.InferenceServerClient:
        # never verbose=True: tritonclient then prints each call's metadata, the token included
        server = grpcaio.InferenceServerClient(
            url, ssl=self.ssl, root_certificates=self.root_cert, channel_args=CHANNEL_ARGS
        )
        if self._token is not None:
            server.register_plugin(self._token)
        return server

    def _hide(self, text: str) -> str:
        return self._token.hide(text) if self._token is not None else text

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        for server in self._servers + [old for _, old in self._retired]:
            await server.close()
        self._retired.clear()

    async def _reresolved(self, index: int) -> grpcaio.InferenceServerClient:
        """The channel to server `index`. A name's replicas come and go (a Kubernetes headless Service), and
        gRPC resolves a name again only when a connection fails: so a dns: URL's channel is replaced every
        `reresolve_every` seconds, the new one resolving the name anew, and the old one is closed once the
        requests sent on it are past their timeout."""
        now = time.monotonic()
        if self.urls[index].startswith("dns:") and now - self._made_at[index] >= self.reresolve_every:
            self._retired.append((now + self.timeout, self._servers[index]))
            self._servers[index], self._made_at[index] = self._make_server(self.urls[index]), now
        while self._retired and self._retired[0][0] <= now:
            await self._retired.pop(0)[1].close()
        return self._servers[index]

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

    def _not_retryable(self, exc: InferenceServerException, what: str, url: str) -> Exception | None:
        """The error to raise at once for a failure that retrying will not fix; None for a transient one."""
        status = _status(exc)
        if status == "INVALID_ARGUMENT" or (status == "RESOURCE_EXHAUSTED" and "too large" in str(exc).lower()):
            return RequestError(self._hide(exc.message() or str(exc)))  # bad or oversize input (the gateway's limit)
        problem = access_problem(exc, self.has_token)
        if problem:
            return AccessError(self._hide(f"{what} failed at {url}: {problem}"))
        text = str(exc).lower()
        if not is_transient(status, text) and "unknown model" not in text:
            return ServerError(self._hide(f"{what} failed at {url}: {exc.message() or exc}"))
        return None

    async def _call(self, what: str, call):
        """Run call(server) with failover between servers and backed-off retries within the retry budget; the
        requests in flight adapt to the server's refusals (self.concurrency)."""
        delays = self.retry.delays()
        failed_since_sleep: set[int] = set()
        while True:
            index = self._pick()
            try:
                server = await self._reresolved(index)
                async with self.concurrency:
                    response = await call(server)
                self.concurrency.answered()
                return response
            except InferenceServerException as exc:
                refused = self._not_retryable(exc, what, self.urls[index])
                if refused is not None:
                    raise refused from None
                self.concurrency.refused()
                self._down_until[index] = time.monotonic() + self.cooldown
                failed_since_sleep.add(index)
                if len(failed_since_sleep) < len(self._servers):
                    continue  # fail over to another server at once
                delay = next(delays, None)
                if delay is None:
                    raise ServerError(self._hide(f"{what} failed at {self.url}: {exc.message() or exc}")) from None
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
                self.ensemble,
                [tensor],
                outputs=requested,
                client_timeout=self.timeout,
                priority=self.priority_level,
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
                priority=self.priority_level,
            ),
        )
        return response.as_numpy(scores_name)[0]

    def windows(self, num_samples: int) -> list[slice]:
        """Equal windows of at most the server's maximum duration."""
        max_samples = int(self.info.max_seconds * self.info.sample_rate)
        count = max(1, math.ceil(num_samples / max_samples))
        size = math.ceil(num_samples / count)
        return [slice(start, min(start + size, num_samples)) for start in range(0, num_samples, size)]

    async def score(
        self, samples: np.ndarray, granularity: str = "utterance", segment_options: dict | None = None
    ) -> Prediction:
        """Prediction, embedding and (for granularity 'frame') frame outputs of one 16 kHz mono clip; for
        'segment' its speech segments, cut with segment_options (the segments model's parameters, by name)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}")
        if self.info is None:
            await self.connect()
        if granularity == "segment":
            return self.segment_prediction(await self._segments(samples, segment_options or {}))
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

        keep = self.info.kept
        return Prediction(
            labels=[self.info.labels[i] for i in keep],
            scores=scores[keep],
            embedding=embedding,
            frame_scores=None if frame_scores is None else frame_scores[:, keep],
            frame_embedding=frame_embedding,
            windows=len(parts),
        )

    async def score_channels(self, channels: list[np.ndarray], segment_options: dict | None = None) -> Prediction:
        """Segment granularity with a timeline per channel (a call's agent and customer on their own channels):
        each segment carries its channel; the recording's answer weighs the segments of every channel."""
        if self.info is None:
            await self.connect()
        per_channel = [await self._segments(samples, segment_options or {}) for samples in channels]
        return self.segment_prediction(by_channel(per_channel))

    async def _segments(self, samples: np.ndarray, options: dict) -> list[Segment]:
        """The segments model on a whole recording."""
        timeline = Timeline(self, options)
        await timeline.feed(samples, last=True)
        return timeline.segments

    def timeline(self, segment_options: dict | None = None) -> Timeline:
        """A recording fed to the segments model as it is decoded (any length in bounded memory)."""
        return Timeline(self, segment_options or {})

    async def _infer_piece(self, piece: np.ndarray, state: bytes, parameters: dict) -> dict[str, np.ndarray]:
        audio = InferInput(contract.SEGMENTS_AUDIO, [1, len(piece)], "FP32")
        audio.set_data_from_numpy(np.ascontiguousarray(piece[None, :], dtype=np.float32))
        inputs = [audio]
        if state:
            carried = InferInput(contract.SEGMENTS_STATE, [1], "BYTES")
            carried.set_data_from_numpy(np.array([state], dtype=np.object_))
            inputs.append(carried)
        requested = [InferRequestedOutput(name) for name in contract.SEGMENTS_OUTPUTS]
        response = await self._call(
            "segments",
            lambda server: server.infer(
                contract.SEGMENTS_MODEL, inputs, outputs=requested, parameters=parameters, client_timeout=self.timeout
            ),
        )
        return {name: response.as_numpy(name) for name in contract.SEGMENTS_OUTPUTS}

    def segment_prediction(self, segments: list[Segment]) -> Prediction:
        """The recording's prediction: the segments' scores and embeddings, weighted by their durations."""
        keep = self.info.kept
        for segment in segments:
            segment.scores = segment.scores[keep]
        if segments:
            weights = [segment.seconds for segment in segments]
            scores = np.average([s.scores for s in segments], axis=0, weights=weights).astype(np.float32)
            embedding = np.average([s.embedding for s in segments], axis=0, weights=weights).astype(np.float32)
        else:
            scores = np.zeros(len(keep), dtype=np.float32)
            embedding = np.zeros(self.info.embedding_dim, dtype=np.float32)
        labels = [self.info.labels[i] for i in keep]
        return Prediction(labels, scores, embedding, None, None, segments=segments)


def by_channel(per_channel: list[list[Segment]]) -> list[Segment]:
    """Each channel's segments tagged with its index, in time order (the channel breaking ties)."""
    tagged = [dataclasses.replace(segment, channel=i) for i, found in enumerate(per_channel) for segment in found]
    return sorted(tagged, key=lambda segment: (segment.start, segment.channel))


class Timeline:
    """One recording's speech segments, its samples fed in blocks of any size as they are decoded.

    The segments model takes at most the server's max_seconds per request. Pieces of that length go out as soon
    as the samples for them are here; each answer gives the segments it closed, a state and the sample to resume
    from (the audio a later segment may still need). So a recording of any length is held one piece at a time,
    and its segments are those of one pass over the whole (the server's segmenter is piece-independent).
    """

    def __init__(self, client: Emotion2vecClient, options: dict):
        self.client, self.options = client, options
        self.segments: list[Segment] = []
        self.pending = np.zeros(0, dtype=np.float32)  # samples from `start` on, not yet answered for
        self.blocks: list[np.ndarray] = []  # fed since, not yet joined to pending
        self.held = 0  # samples in pending and blocks
        self.start = 0  # the recording's sample at pending[0]
        self.state = b""  # the segmenter's state, handed back with the next piece
        self.done = False

    async def feed(self, samples: np.ndarray, last: bool = False) -> None:
        """The next samples of the recording (16 kHz mono); last=True with the final ones, or with none."""
        if self.done:
            raise ValueError("the timeline has had its last samples")
        if self.client.info is None:
            await self.client.connect()
        piece_samples = int(self.client.info.max_seconds * self.client.info.sample_rate)
        self.blocks.append(np.asarray(samples, dtype=np.float32))
        self.held += len(samples)
        # a piece that is not the last goes only once more samples follow it, so the last is never empty
        if self.held <= piece_samples and not last:
            return  # joined only when a piece is due, not on every block
        self.pending = np.concatenate([self.pending, *self.blocks])
        self.blocks, self.held = [], 0
        while len(self.pending) > piece_samples:
            await self._send(self.pending[:piece_samples], last=False)
        self.held = len(self.pending)
        if last:
            await self._send(self.pending, last=True)
            self.done = True

    async def _send(self, piece: np.ndarray, last: bool) -> None:
        parameters = {**self.options, contract.PARAM_LAST_PIECE: last, contract.PARAM_SCORED_BY: self.client.ensemble}
        response = await self.client._infer_piece(piece, self.state, parameters)
        times, scores, embeddings = (response[name] for name in contract.SEGMENTS_OUTPUTS[:3])
        self.segments += [
            Segment(float(t[0]), float(t[1]), s, e) for t, s, e in zip(times, scores, embeddings, strict=True)
        ]
        if last:
            return
        resume_at = int(response[contract.RESUME_AT][0])
        if not self.start < resume_at <= self.start + len(piece):
            raise ServerError(f"the segments model asked to resume at sample {resume_at}, after {self.start}")
        self.pending = self.pending[resume_at - self.start :]
        self.start, self.state = resume_at, response[contract.SEGMENTS_STATE][0]
