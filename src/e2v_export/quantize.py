"""The int8 encoders: ONNX Runtime dynamic and static (QDQ) quantization, and OpenVINO's through NNCF.

dynamic (ONNX Runtime): only the MatMuls that multiply by a weight (the Linear layers of the transformer
blocks and the feature projection, and the conv front-end exported as MatMuls: most of the compute) are
quantized, per output channel, to int8 weights, with uint8 activations quantized on the fly. The attention
products (activation x activation), LayerNorm and softmax stay in fp32.
static, ONNX Runtime (QDQ): the same MatMuls, their activation ranges fixed beforehand from calibration audio
(QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels): no range is computed per call.
static, OpenVINO (NNCF): NNCF's post-training quantization for transformers, calibrated on audio, saved as
OpenVINO IR (model.xml and model.bin); layers it leaves unquantized run at OpenVINO's default precision.
The accuracy cost of each is measured by `e2v-export --evaluate` / `--tune` and scripts/bench.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from e2v_common import contract


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant weight."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def quantize_encoder(src: str | Path, dst: str | Path, reduce_range: bool) -> list[str]:
    """Write a dynamically quantized int8 copy of the encoder ONNX at dst; returns the quantized node names.

    reduce_range: 7-bit weights, for CPUs without VNNI. Their int8 dot product (AVX2's vpmaddubsw) adds
    pairs of 8-bit products into a saturating 16-bit sum; 7-bit weights keep it from saturating. On the
    large random checkpoint without VNNI it lifted argmax agreement with fp32 from 95.8 % to 100 % and the
    smallest embedding cosine from 0.993 to 0.9996, at the same speed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(onnx.load(str(src), load_external_data=False))
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
    )
    return nodes


def encoder_feeds(clips: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The encoder's inputs for each calibration clip (16 kHz float audio), one utterance per feed."""
    waveform, lengths = contract.ENCODER_INPUTS
    return [
        {waveform: contract.normalize_waveform(clip)[None, :], lengths: np.array([len(clip)], np.int64)}
        for clip in clips
    ]


def quantize_encoder_static(src: str | Path, dst: str | Path, clips: list[np.ndarray], reduce_range: bool) -> None:
    """ONNX Runtime static int8 (QDQ) of the weight MatMuls, activation ranges calibrated (min/max) on clips."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Clips(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(encoder_feeds(clips))

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(src),
        str(dst),
        Clips(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,  # u8 x s8: the fast int8 kernels on x86
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=weight_matmuls(onnx.load(str(src), load_external_data=False)),
    )


def quantize_encoder_openvino(src: str | Path, dst: str | Path, clips: list[np.ndarray]) -> None:
    """OpenVINO int8 through NNCF's post-training quantization (transformer mode), calibrated on clips; dst is
    the IR's model.xml (model.bin beside it)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(src))
    dataset = nncf.Dataset(encoder_feeds(clips))
    quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(clips))
    ov.save_model(quantized, str(dst))
