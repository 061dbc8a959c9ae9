"""Run the exported encoder and classifier on numpy audio outside Triton: the one way, for every runtime.

This is the reference path outside Triton (tests, parity, --evaluate, --tune, benchmarks, TensorRT's parity):
the steps the served pipeline takes (check, normalise per utterance, pad, encode, classify), in one process.
A Model is any callable from input arrays to output arrays by name: a model file opened with the runtime
module the served models run (e2v_common.runtimes), or a TensorRT engine (e2v_export.tensorrt.engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from e2v_common import contract
from e2v_common.runtimes import Session, open_model
from e2v_export.compare import UtteranceResult

Model = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]  # {input name: array} -> {output name: array}


def as_model(session: Session) -> Model:
    """An opened model file (e2v_common.runtimes) as a Model."""
    return lambda feeds: dict(zip(session.output_names, session.run(feeds), strict=True))


def onnx_reference(path: str | Path) -> Model:
    """The ONNX file at `path` in ONNX Runtime fp32 on the CPU: the reference, at parity with FunASR."""
    return as_model(open_model(path, "onnxruntime", "fp32"))


def run_pipeline(
    encoder: Model, classifier: Model, waveforms: list[np.ndarray], batch_size: int
) -> list[UtteranceResult]:
    """Score 16 kHz mono float waveforms in padded batches of `batch_size`; per utterance: scores [L],
    embedding [D], frames [T, D] and frame_scores [T, L], cut to the utterance's own T frames."""
    wave_in, lengths_in = contract.ENCODER_INPUTS
    frames_out, frame_lengths_out = contract.ENCODER_OUTPUTS
    frames_in, frame_lengths_in = contract.CLASSIFIER_INPUTS
    embedding_name, scores_name, frame_scores_name = contract.CLASSIFIER_OUTPUTS[:3]
    results = []
    for start in range(0, len(waveforms), batch_size):
        rows = waveforms[start : start + batch_size]
        for waveform in rows:
            contract.check_waveform(waveform)
        batch, lengths = contract.pad_rows([contract.normalize_waveform(w) for w in rows])
        encoded = encoder({wave_in: batch, lengths_in: lengths})
        frames, frame_lengths = encoded[frames_out], encoded[frame_lengths_out]
        classified = classifier({frames_in: frames, frame_lengths_in: frame_lengths})
        for i, t in enumerate(int(n) for n in frame_lengths):
            results.append(
                UtteranceResult(
                    scores=classified[scores_name][i],
                    embedding=classified[embedding_name][i],
                    frames=frames[i, :t],
                    frame_scores=classified[frame_scores_name][i, :t],
                )
            )
    return results


class Emotion2vecRunner:
    """The encoder in `runtime` at `precision`; the classifier, as served, in ONNX Runtime fp32."""

    def __init__(
        self,
        encoder_path: str | Path,
        classifier_path: str | Path,
        threads: int = 0,
        runtime: str = "onnxruntime",
        precision: str = "fp32",
    ):
        encoder = open_model(encoder_path, runtime, precision, threads)
        self.runs_as = encoder.runs_as  # the precision the runtime really computes in
        self.encoder = as_model(encoder)
        self.classifier = as_model(open_model(classifier_path, "onnxruntime", "fp32", threads))

    def run_batch(self, waveforms: list[np.ndarray]) -> list[UtteranceResult]:
        """Score waveforms as one padded batch."""
        return run_pipeline(self.encoder, self.classifier, waveforms, batch_size=len(waveforms))

    def run(self, waveform: np.ndarray) -> UtteranceResult:
        return self.run_batch([waveform])[0]


def run_all(runner: Emotion2vecRunner, clips: list[np.ndarray]) -> list[UtteranceResult]:
    return [runner.run(clip) for clip in clips]


def speed(runners: list[Emotion2vecRunner], clips: list[np.ndarray], min_timed_s: float = 2.0) -> float:
    """Audio seconds per second of `runners` each scoring `clips` at once (one thread each), after a warm-up:
    passes over the clips until `min_timed_s` have passed (one pass on the large model)."""
    passes = 0
    with ThreadPoolExecutor(len(runners)) as pool:
        list(pool.map(run_all, runners, [clips] * len(runners)))  # warm-up: every shape seen once
        start = time.perf_counter()
        while passes == 0 or time.perf_counter() - start < min_timed_s:
            list(pool.map(run_all, runners, [clips] * len(runners)))
            passes += 1
        wall = time.perf_counter() - start
    return passes * len(runners) * sum(len(c) for c in clips) / contract.SAMPLE_RATE / wall
