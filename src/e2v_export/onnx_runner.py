"""Run the exported ONNX encoder and classifier with ONNX Runtime on numpy audio.

This is the reference path outside Triton (tests, benchmarks): the same steps
the served pipeline takes (check, normalise per utterance, pad, encode,
classify), in one process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from e2v_export.compare import UtteranceResult
from e2v_server import contract


def make_session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEmotion2vec:
    def __init__(self, encoder_path: str | Path, classifier_path: str | Path, threads: int = 0):
        self.encoder = make_session(encoder_path, threads)
        self.classifier = make_session(classifier_path, threads)

    def run_batch(self, waveforms: list[np.ndarray]) -> list[UtteranceResult]:
        """Score 16 kHz mono float waveforms as one padded batch."""
        for w in waveforms:
            contract.check_waveform(w)
        batch, lengths = contract.pad_rows([contract.normalize_waveform(w) for w in waveforms])
        wave_in, len_in = contract.ENCODER_INPUTS
        frames, frame_lengths = self.encoder.run(None, {wave_in: batch, len_in: lengths})
        frames_in, frame_len_in = contract.CLASSIFIER_INPUTS
        embedding, scores, frame_scores = self.classifier.run(
            list(contract.CLASSIFIER_OUTPUTS[:3]), {frames_in: frames, frame_len_in: frame_lengths}
        )
        return [
            UtteranceResult(scores[i], embedding[i], frames[i, :t], frame_scores[i, :t])
            for i, t in enumerate(frame_lengths)
        ]

    def run(self, waveform: np.ndarray) -> UtteranceResult:
        return self.run_batch([waveform])[0]
