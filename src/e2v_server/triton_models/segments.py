"""Triton Python model `emotion2vec_segments`: a recording's speech segments, each scored as an utterance.

A request holds one piece of a recording: AUDIO [1, N] float32 at 16 kHz, and STATE, the state the previous
piece's response gave (absent for the first piece). The request parameter last_piece (default true: the
whole recording in one request) says whether more follows; the segmentation's options are request
parameters too (emotion2vec_segmenter.SegmentOptions; the first piece's hold for the whole recording), and
scored_by, the ensemble that scores the segments (the bulk lane's for bulk jobs).

Silero VAD (vad.onnx beside this file, in ONNX Runtime) and emotion2vec_segmenter cut the speech segments;
each segment closed in this piece is scored by the emotion2vec ensemble on its own samples (BLS, all at
once, so that the encoder batches them): its numbers are those of that audio sent alone. The response gives
their times from the recording's start, their scores and embeddings, the STATE to send back with the next
piece and RESUME_AT, the sample of the recording that next piece must start at (the audio from there on
that a later segment may need; the server keeps no audio and no state between requests, so any replica
can take the next piece).

Stands alone in any Triton: numpy, onnxruntime, the backend utilities, and the files e2v-export copies
beside it (emotion2vec_contract.py, emotion2vec_runtimes.py, emotion2vec_segmenter.py,
emotion2vec_segment_scoring.py).
"""

import asyncio
import json
from pathlib import Path

import emotion2vec_contract as contract
import emotion2vec_runtimes as runtimes
import emotion2vec_segment_scoring as scoring
import emotion2vec_segmenter as segmenter
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        params = contract.string_parameters(self.config)
        self.max_seconds = float(params[contract.PARAM_MAX_SECONDS])
        vad_file = Path(args["model_repository"]) / args["model_version"] / contract.VAD_FILE
        session = runtimes.open_model(vad_file, "onnxruntime", "fp32", threads=1)  # a small recurrent model
        self.vad = segmenter.SileroVad(session.run)

    async def execute(self, requests):
        return list(await asyncio.gather(*(self.respond(request) for request in requests)))

    async def respond(self, request):
        try:
            audio, piece_start, cutter, last, scored_by = self.read(request)
        except ValueError as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        segments = cutter.feed(audio[cutter.fed - piece_start :])  # the samples the segmenter has not heard yet
        if last:
            segments += cutter.flush()
        clips = [audio[s.start - piece_start : s.end - piece_start] for s in segments]
        try:
            scores, embeddings = await scoring.score(clips, scored_by)
        except scoring.ScoringFailed as exc:  # e.g. the encoder's queue is full: the caller retries this piece
            return pb_utils.InferenceResponse(error=exc.error)
        state, resume_at = (b"", -1) if last else (segmenter.resume_state(cutter), cutter.keep_from())
        return scoring.segments_response(self.config, segments, scores, embeddings, state, resume_at)

    def read(self, request):
        """(the piece's samples, the sample it starts at, the segmenter to go on with, whether it is the last, the
        ensemble that scores its segments)."""
        audio = pb_utils.get_input_tensor_by_name(request, contract.SEGMENTS_AUDIO).as_numpy()
        if audio.ndim != 2 or audio.shape[0] != 1:
            raise ValueError(f"{contract.SEGMENTS_AUDIO} must be one piece of one recording: [1, N], not {audio.shape}")
        audio = audio[0]
        if len(audio) > self.max_seconds * contract.SAMPLE_RATE:
            raise ValueError(
                f"a piece holds at most {self.max_seconds:g} s: send a longer recording in pieces (see RESUME_AT)"
            )
        if not np.isfinite(audio).all():
            raise ValueError(f"{contract.SEGMENTS_AUDIO} holds NaN or infinite samples")
        parameters = json.loads(request.parameters() or "{}")
        last = parameters.get(contract.PARAM_LAST_PIECE, True)
        if not isinstance(last, bool):
            raise ValueError(f"{contract.PARAM_LAST_PIECE} must be true or false")
        scored_by = parameters.get(contract.PARAM_SCORED_BY, contract.ENSEMBLE_MODEL)
        lanes = (contract.ENSEMBLE_MODEL, contract.BULK_ENSEMBLE_MODEL)
        if scored_by not in lanes:
            raise ValueError(f"{contract.PARAM_SCORED_BY} must be one of {', '.join(lanes)}")
        state_tensor = pb_utils.get_input_tensor_by_name(request, contract.SEGMENTS_STATE)
        state_text = state_tensor.as_numpy().reshape(-1)[0] if state_tensor is not None else b""
        if not state_text:  # the first piece
            options = segmenter.SegmentOptions.parse(parameters, self.max_seconds)
            return audio, 0, segmenter.Segmenter(self.vad, options), last, scored_by
        try:
            cutter, piece_start = segmenter.resumed(self.vad, state_text)
        except ValueError as exc:
            raise ValueError(f"{contract.SEGMENTS_STATE} is {exc}") from None
        if not piece_start <= cutter.fed <= piece_start + len(audio):
            raise ValueError(
                f"this piece must start at sample {piece_start} of the recording ({contract.RESUME_AT} of the "
                f"previous response) and reach past sample {cutter.fed}"
            )
        return audio, piece_start, cutter, last, scored_by
