"""One utterance's model outputs, and how two runs of the same utterances are compared.

Every comparison in the project goes through here: our ONNX export against FunASR
(parity.py), a padded batch against each utterance alone, TensorRT engines against
ONNX Runtime, and a lower precision against fp32 (benchmarks). Imports only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class UtteranceResult:
    scores: np.ndarray  # [L] utterance scores (softmax)
    embedding: np.ndarray  # [D] mean of the valid frames
    frames: np.ndarray  # [T, D] frame features
    frame_scores: np.ndarray  # [T, L]


@dataclass
class UtteranceDiff:
    """How far one utterance's outputs are from a reference's."""

    seconds: float
    frames: int
    scores_max_abs: float
    embedding_cosine: float
    frames_min_cosine: float  # the least similar frame's cosine (1.0 for an utterance of no frames)
    frames_max_abs: float
    frame_scores_max_abs: float
    argmax_equal: bool
    frame_argmax_equal: int  # frames whose top label is the reference's


@dataclass
class Agreement:
    """Many utterances' differences, summed up."""

    utterances: int
    argmax_agreement: float  # fraction of utterances whose top label is the reference's
    frame_argmax_agreement: float  # fraction of frames whose top label is the reference's
    min_embedding_cosine: float
    mean_embedding_cosine: float
    min_frame_cosine: float
    max_score_diff: float
    max_frames_diff: float


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def frame_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each frame of a [T, D] with the same frame of b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    return np.sum(a * b, axis=-1) / norms


def compare(ours: UtteranceResult, reference: UtteranceResult, seconds: float = 0.0) -> UtteranceDiff:
    if ours.frames.shape != reference.frames.shape:
        raise ValueError(f"frame features shape {ours.frames.shape} != the reference's {reference.frames.shape}")
    return UtteranceDiff(
        seconds=seconds,
        frames=ours.frames.shape[0],
        scores_max_abs=float(np.abs(ours.scores - reference.scores).max()),
        embedding_cosine=cosine(ours.embedding, reference.embedding),
        frames_min_cosine=float(frame_cosines(ours.frames, reference.frames).min(initial=1.0)),
        frames_max_abs=float(np.abs(ours.frames - reference.frames).max(initial=0.0)),
        frame_scores_max_abs=float(np.abs(ours.frame_scores - reference.frame_scores).max(initial=0.0)),
        argmax_equal=int(ours.scores.argmax()) == int(reference.scores.argmax()),
        frame_argmax_equal=int(np.sum(ours.frame_scores.argmax(-1) == reference.frame_scores.argmax(-1))),
    )


def agreement(diffs: list[UtteranceDiff]) -> Agreement:
    if not diffs:
        raise ValueError("no utterances to compare")
    cosines = [d.embedding_cosine for d in diffs]
    return Agreement(
        utterances=len(diffs),
        argmax_agreement=sum(d.argmax_equal for d in diffs) / len(diffs),
        frame_argmax_agreement=sum(d.frame_argmax_equal for d in diffs) / max(sum(d.frames for d in diffs), 1),
        min_embedding_cosine=min(cosines),
        mean_embedding_cosine=float(np.mean(cosines)),
        min_frame_cosine=min(d.frames_min_cosine for d in diffs),
        max_score_diff=max(d.scores_max_abs for d in diffs),
        max_frames_diff=max(d.frames_max_abs for d in diffs),
    )
