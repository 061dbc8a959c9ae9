"""Triton Python model `emotion2vec_stream`: live audio in, an emotion for each speech segment out as it closes.

A stream is a Triton sequence on a gRPC stream (stream_infer): its correlation ID, START on the first chunk,
END on the last. Each request is one chunk, AUDIO [1, N] float32 at 16 kHz, of up to max_chunk_seconds. The
model is decoupled and answers every chunk with exactly one response, in order, carrying the outputs of the
segments model: the segments that chunk closed (times from the stream's start, the scores and embedding of
their samples scored alone, through the ensemble), and, with every segment, every ack_seconds of audio and
the last chunk, STATE and RESUME_AT (empty and -1 in the other responses). A client that loses the server (a
restart) opens a new stream whose first chunk carries the last STATE it got and sends the audio again from
sample RESUME_AT on: the segments delivered before are not given again, and those to come are the same.

Each stream's segmenter (e2v_common.segmenter, Silero VAD) and the audio a later segment may need live in the
instance that the sequence batcher gives the stream to, keyed by its correlation ID: freed at END, or when the
stream has been idle for idle_seconds (the sequence batcher's own idle timeout). At most max_streams live per
instance (more are refused with UNAVAILABLE, retryable); a stream whose chunks wait for more than
max_backlog_seconds of audio (a client sending faster than the audio is scored) is refused and dropped
(UNAVAILABLE): it goes on from its last STATE, no faster. So no stream is buffered without bound. A stream
that has sent max_stream_seconds of audio is refused the same way and goes on in a new stream: what one gRPC
stream carries is bounded, and the gateway's per-stream size limit with it.

Stands alone in any Triton: numpy, onnxruntime, the backend utilities, and the files e2v-export copies
beside it (emotion2vec_contract.py, emotion2vec_runtimes.py, emotion2vec_segmenter.py,
emotion2vec_segment_scoring.py, vad.onnx).
"""

import asyncio
import json
import time
from pathlib import Path

import emotion2vec_contract as contract
import emotion2vec_runtimes as runtimes
import emotion2vec_segment_scoring as scoring
import emotion2vec_segmenter as segmenter
import numpy as np
import triton_python_backend_utils as pb_utils


class Refused(Exception):
    """A chunk refused with UNAVAILABLE: the client retries (the stream from its last STATE)."""


class Stream:
    """One live stream: its segmenter and the samples from `audio_start` on that a later segment may need."""

    def __init__(self, cutter: segmenter.Segmenter, audio_start: int):
        self.cutter = cutter
        self.audio = np.zeros(0, dtype=np.float32)
        self.audio_start = audio_start  # the stream's sample at audio[0]
        self.lock = asyncio.Lock()  # chunks are taken in the order they came
        self.last_seen = time.monotonic()
        self.waiting = 0  # samples of chunks received and not answered yet
        self.received = 0  # samples this stream has sent (a resumed one's resent audio included)
        self.acked = cutter.fed  # the samples fed when a STATE last went out

    def take(self, chunk: np.ndarray, last: bool) -> list[segmenter.Segment]:
        """Add a chunk, feed the segmenter the samples it has not heard (a resumed stream's first chunks repeat
        some), and return the segments that closed."""
        self.audio = np.concatenate([self.audio, chunk])
        heard = self.cutter.fed - self.audio_start
        segments = self.cutter.feed(self.audio[heard:]) if heard < len(self.audio) else []
        if last:
            segments += self.cutter.flush()
        return segments

    def clip(self, segment: segmenter.Segment) -> np.ndarray:
        return self.audio[segment.start - self.audio_start : segment.end - self.audio_start]

    def forget_before(self, sample: int) -> None:
        sample = min(sample, self.audio_start + len(self.audio))  # a resumed stream may not have sent that far yet
        if sample > self.audio_start:
            self.audio = self.audio[sample - self.audio_start :].copy()
            self.audio_start = sample


class TritonPythonModel:
    def initialize(self, args):
        self.config = config = json.loads(args["model_config"])
        params = contract.string_parameters(config)
        self.max_seconds = float(params[contract.PARAM_MAX_SECONDS])
        self.max_chunk = round(float(params[contract.PARAM_MAX_CHUNK_SECONDS]) * contract.SAMPLE_RATE)
        self.max_streams = int(params[contract.PARAM_MAX_STREAMS])
        self.max_backlog = round(float(params[contract.PARAM_MAX_BACKLOG_SECONDS]) * contract.SAMPLE_RATE)
        self.ack_every = round(float(params[contract.PARAM_ACK_SECONDS]) * contract.SAMPLE_RATE)
        self.max_stream = round(float(params[contract.PARAM_MAX_STREAM_SECONDS]) * contract.SAMPLE_RATE)
        self.idle_seconds = int(config["sequence_batching"]["max_sequence_idle_microseconds"]) / 1e6
        vad_file = Path(args["model_repository"]) / args["model_version"] / contract.VAD_FILE
        session = runtimes.open_model(vad_file, "onnxruntime", "fp32", threads=1)
        self.vad = segmenter.SileroVad(session.run)
        self.streams: dict[int | str, Stream] = {}

    async def execute(self, requests):
        await asyncio.gather(*(self.handle(request) for request in requests))

    async def handle(self, request) -> None:
        sender = request.get_response_sender()
        try:
            response = await self.answer(request)
        except Refused as exc:
            response = self.error(exc, pb_utils.TritonError.UNAVAILABLE)
        except ValueError as exc:
            response = self.error(exc, pb_utils.TritonError.INVALID_ARG)
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    @staticmethod
    def error(exc: Exception, code):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))

    async def answer(self, request):
        key = request.correlation_id()
        first = bool(request.flags() & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START)
        last = bool(request.flags() & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
        self.forget_idle()
        chunk = self.read_chunk(request)
        if first:
            self.streams.pop(key, None)  # a client that starts its stream again
            if len(self.streams) >= self.max_streams:
                raise Refused(f"the server has its maximum of {self.max_streams} live streams: try again later")
            self.streams[key] = self.open(request)
        stream = self.streams.get(key)
        if stream is None:
            raise ValueError(
                f"no live stream {key}: it ended, was idle for more than {self.idle_seconds:g} s, or the server "
                f"restarted; start a new stream (with the last {contract.SEGMENTS_STATE} to go on from it)"
            )
        if stream.waiting + len(chunk) > self.max_backlog:
            self.streams.pop(key, None)
            waiting_s = self.max_backlog / contract.SAMPLE_RATE
            raise Refused(
                f"stream {key} sends audio faster than it is scored (more than {waiting_s:g} s waiting): start it "
                f"again from its last {contract.SEGMENTS_STATE}, no faster than real time"
            )
        if stream.received + len(chunk) > self.max_stream:
            self.streams.pop(key, None)
            raise Refused(
                f"stream {key} has sent its limit of {self.max_stream / contract.SAMPLE_RATE:g} s of audio: go on "
                f"in a new stream from its last {contract.SEGMENTS_STATE}"
            )
        stream.received += len(chunk)
        stream.waiting += len(chunk)
        stream.last_seen = time.monotonic()
        try:
            async with stream.lock:
                return await self.respond(stream, chunk, last)
        finally:
            stream.waiting -= len(chunk)
            stream.last_seen = time.monotonic()
            if last:
                self.streams.pop(key, None)

    async def respond(self, stream: Stream, chunk: np.ndarray, last: bool):
        # in a thread: the event loop stays free to take the chunks that arrive meanwhile, so that what waits
        # is counted (Stream.waiting), not held in Triton's queue unseen
        segments = await asyncio.to_thread(stream.take, chunk, last)
        try:
            scores, embeddings = await scoring.score([stream.clip(segment) for segment in segments])
        except scoring.ScoringFailed as exc:  # e.g. the encoder's queue is full: the client goes on from its STATE
            raise Refused(f"a segment could not be scored: {exc}") from None
        keep_from = stream.cutter.keep_from()
        stream.forget_before(keep_from)
        state, resume_at = b"", -1
        if not last and (segments or stream.cutter.fed - stream.acked >= self.ack_every):
            state, resume_at = segmenter.resume_state(stream.cutter), keep_from
            stream.acked = stream.cutter.fed
        return scoring.segments_response(self.config, segments, scores, embeddings, state, resume_at)

    def read_chunk(self, request) -> np.ndarray:
        audio = pb_utils.get_input_tensor_by_name(request, contract.SEGMENTS_AUDIO).as_numpy()
        if audio.ndim != 2 or audio.shape[0] != 1:
            raise ValueError(f"{contract.SEGMENTS_AUDIO} must be one chunk of one stream: [1, N], not {audio.shape}")
        if audio.shape[1] > self.max_chunk:
            raise ValueError(
                f"a chunk holds at most {self.max_chunk / contract.SAMPLE_RATE:g} s, not "
                f"{audio.shape[1] / contract.SAMPLE_RATE:g}: send the audio as it comes, in smaller chunks"
            )
        if not np.isfinite(audio).all():
            raise ValueError(f"{contract.SEGMENTS_AUDIO} holds NaN or infinite samples")
        return audio[0].astype(np.float32, copy=False)

    def open(self, request) -> Stream:
        """A new stream: the segment options from the request's parameters, or the STATE a client goes on from."""
        state_tensor = pb_utils.get_input_tensor_by_name(request, contract.SEGMENTS_STATE)
        state_text = state_tensor.as_numpy().reshape(-1)[0] if state_tensor is not None else b""
        if not state_text:
            options = segmenter.SegmentOptions.parse(json.loads(request.parameters() or "{}"), self.max_seconds)
            return Stream(segmenter.Segmenter(self.vad, options), 0)
        try:
            cutter, resume_at = segmenter.resumed(self.vad, state_text)
        except ValueError as exc:
            raise ValueError(f"{contract.SEGMENTS_STATE} is {exc}") from None
        return Stream(cutter, resume_at)

    def forget_idle(self) -> None:
        """Free the streams idle for longer than the sequence batcher waits (it has dropped them too): a client
        that went away without END leaves nothing behind."""
        now = time.monotonic()
        for key in [key for key, stream in self.streams.items() if now - stream.last_seen > self.idle_seconds]:
            if not self.streams[key].lock.locked():
                del self.streams[key]
