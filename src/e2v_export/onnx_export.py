"""Export the encoder and classifier graphs to ONNX and check them."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from e2v_common import contract
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.graph import ClassifierGraph, EncoderGraph

log = logging.getLogger(__name__)

OPSET = 17  # first opset with LayerNormalization


@dataclass
class ExportResult:
    encoder_path: Path
    classifier_path: Path
    embedding_dim: int
    seconds: float


def _dummy_batch(seconds=(1.0, 0.6)):
    lengths = [int(s * contract.SAMPLE_RATE) for s in seconds]
    rng = np.random.default_rng(0)
    waveform = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        waveform[i, :n] = contract.normalize_waveform(rng.standard_normal(n))
    return torch.from_numpy(waveform), torch.tensor(lengths, dtype=torch.int64)


def _export(module, args, path: Path, input_names, output_names, length_axes: dict[str, str]) -> None:
    """torch.onnx.export with a dynamic batch axis (0) on every tensor and a dynamic axis 1 on length_axes."""
    dynamic_axes = {
        name: {0: "batch", **({1: length_axes[name]} if name in length_axes else {})}
        for name in (*input_names, *output_names)
    }
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python ints taken from shapes; every shape used is symbolic.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def export_onnx(checkpoint: LoadedCheckpoint, out_dir: str | Path, conv_as_matmul: bool = False) -> ExportResult:
    """Write encoder.onnx and classifier.onnx into out_dir.

    conv_as_matmul: the conv front-end as MatMuls (see graph.strided_conv_as_matmuls), for int8.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    encoder = EncoderGraph(checkpoint.model, conv_as_matmul=conv_as_matmul).eval()
    classifier = ClassifierGraph(checkpoint.model, checkpoint.tokens).eval()

    waveform, lengths = _dummy_batch()
    waveform_name, _ = contract.ENCODER_INPUTS
    frames_name, _ = contract.ENCODER_OUTPUTS
    encoder_path = out_dir / contract.ENCODER_ONNX
    _export(
        encoder,
        (waveform, lengths),
        encoder_path,
        contract.ENCODER_INPUTS,
        contract.ENCODER_OUTPUTS,
        {waveform_name: "samples", frames_name: "frames"},
    )
    with torch.no_grad():
        frames, frame_lengths = encoder(waveform, lengths)
    _, _, frame_scores_name, frame_embedding_name, _ = contract.CLASSIFIER_OUTPUTS
    classifier_path = out_dir / contract.CLASSIFIER_ONNX
    _export(
        classifier,
        (frames, frame_lengths),
        classifier_path,
        contract.CLASSIFIER_INPUTS,
        contract.CLASSIFIER_OUTPUTS,
        {frames_name: "frames", frame_scores_name: "frames", frame_embedding_name: "frames"},
    )

    result = ExportResult(
        encoder_path=encoder_path,
        classifier_path=classifier_path,
        embedding_dim=int(checkpoint.config["model_conf"]["embed_dim"]),
        seconds=time.perf_counter() - start,
    )
    log.info("exported %s and %s in %.1f s", encoder_path, classifier_path, result.seconds)
    return result
