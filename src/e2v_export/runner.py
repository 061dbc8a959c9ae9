"""Run the exported encoder and classifier on numpy audio, outside Triton, in the runtime the export chose.

This is the reference path outside Triton (tests, benchmarks, --evaluate): the same steps the served
pipeline takes (check, normalise per utterance, pad, encode, classify) in one process, with the same
runtime module as the served models (e2v_server.triton_models.runtimes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from e2v_export.compare import UtteranceResult
from e2v_server import contract
from e2v_server.triton_models.runtimes import open_model


def run_named(session, input_names, inputs, output_names) -> list[np.ndarray]:
    """session's outputs `output_names` for `inputs` given in the order of `input_names`."""
    values = session.run(dict(zip(input_names, inputs, strict=True)))
    by_name = dict(zip(session.output_names, values, strict=True))
    return [by_name[name] for name in output_names]


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
        self.encoder = open_model(encoder_path, runtime, precision, threads)
        self.classifier = open_model(classifier_path, "onnxruntime", "fp32", threads)

    def run_batch(self, waveforms: list[np.ndarray]) -> list[UtteranceResult]:
        """Score 16 kHz mono float waveforms as one padded batch."""
        for w in waveforms:
            contract.check_waveform(w)
        batch, lengths = contract.pad_rows([contract.normalize_waveform(w) for w in waveforms])
        frames, frame_lengths = run_named(
            self.encoder, contract.ENCODER_INPUTS, (batch, lengths), contract.ENCODER_OUTPUTS
        )
        embedding, scores, frame_scores = run_named(
            self.classifier, contract.CLASSIFIER_INPUTS, (frames, frame_lengths), contract.CLASSIFIER_OUTPUTS[:3]
        )
        return [
            UtteranceResult(scores[i], embedding[i], frames[i, :t], frame_scores[i, :t])
            for i, t in enumerate(frame_lengths)
        ]

    def run(self, waveform: np.ndarray) -> UtteranceResult:
        return self.run_batch([waveform])[0]
