"""Optional int8 encoder: ONNX Runtime dynamic quantization of the weight matrices.

Only the MatMuls that multiply by a weight (the Linear layers of the 12
transformer blocks and the feature projection, about three quarters of the
compute) are quantized, per output channel, to int8 weights with uint8
activations quantized on the fly. The attention products (activation x
activation), the conv front-end, LayerNorm and softmax stay in fp32. The
accuracy cost is measured by scripts/bench.py (argmax agreement and max score
difference against fp32).
"""

from __future__ import annotations

from pathlib import Path

import onnx


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a constant weight."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def quantize_encoder(src: str | Path, dst: str | Path) -> list[str]:
    """Write an int8 copy of the encoder ONNX at dst; returns the quantized node names."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = weight_matmuls(onnx.load(str(src), load_external_data=False))
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
    )
    return nodes
