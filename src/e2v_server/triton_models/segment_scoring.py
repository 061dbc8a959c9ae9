"""Speech segments scored through the emotion2vec ensemble, and the answer that carries them: shared by the
segments model and the stream model (e2v-export copies this file beside each, as
emotion2vec_segment_scoring.py). Imports numpy, the backend utilities and the contract."""

import asyncio

import emotion2vec_contract as contract
import numpy as np
import triton_python_backend_utils as pb_utils


class ScoringFailed(Exception):
    """The ensemble refused a segment (e.g. its queue is full): `error` is its TritonError."""

    def __init__(self, error):
        super().__init__(error.message())
        self.error = error


async def score(
    clips: list[np.ndarray], ensemble: str = contract.ENSEMBLE_MODEL
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(scores, embeddings) of each clip sent to `ensemble` as a request of its own: its numbers are those of
    that audio alone. All at once, so that the encoder batches them."""
    answers = await asyncio.gather(*(_request(clip, ensemble).async_exec() for clip in clips))
    failed = next((answer for answer in answers if answer.has_error()), None)
    if failed is not None:
        raise ScoringFailed(failed.error())
    scores = [pb_utils.get_output_tensor_by_name(a, contract.SCORES).as_numpy()[0] for a in answers]
    embeddings = [pb_utils.get_output_tensor_by_name(a, contract.EMBEDDING).as_numpy()[0] for a in answers]
    return scores, embeddings


def _request(clip: np.ndarray, ensemble: str):
    return pb_utils.InferenceRequest(
        model_name=ensemble,
        requested_output_names=[contract.SCORES, contract.EMBEDDING],
        inputs=[pb_utils.Tensor(contract.ENSEMBLE_INPUT, np.ascontiguousarray(clip[None, :], dtype=np.float32))],
    )


def segments_response(model_config: dict, segments, scores, embeddings, state: bytes, resume_at: int):
    """The response of the segments outputs (contract.SEGMENTS_OUTPUTS): `segments` (start and end in samples
    from the recording's start), their scores and embeddings, the STATE to hand back and RESUME_AT."""
    widths = {tensor["name"]: int(tensor["dims"][-1]) for tensor in model_config["output"]}
    times = np.array([[s.start, s.end] for s in segments], dtype=np.float64).reshape(-1, 2) / contract.SAMPLE_RATE
    tensors = [
        pb_utils.Tensor(contract.SEGMENT_TIMES, times),
        pb_utils.Tensor(contract.SEGMENT_SCORES, _stacked(scores, widths[contract.SEGMENT_SCORES])),
        pb_utils.Tensor(contract.SEGMENT_EMBEDDING, _stacked(embeddings, widths[contract.SEGMENT_EMBEDDING])),
        pb_utils.Tensor(contract.SEGMENTS_STATE, np.array([state], dtype=np.object_)),
        pb_utils.Tensor(contract.RESUME_AT, np.array([resume_at], dtype=np.int64)),
    ]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _stacked(rows: list, width: int) -> np.ndarray:
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, width), dtype=np.float32)
