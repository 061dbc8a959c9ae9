"""Which layers of an fp16 engine stay in fp32, and pinning them there.

fp16 overflows in normalisation (sums of squares), softmax and long reductions, so those layers are
pinned to fp32 and the builder is told to obey the constraints (build.py). Works on any object with the
TensorRT 10 network/layer API (tests pass stand-ins); imports no tensorrt.
"""

from __future__ import annotations

import re

# Layer types computed in fp32 whatever their inputs: LayerNorm (opset 17 LayerNormalization becomes a
# NORMALIZATION layer), softmax, and reductions (variance, the pooling's masked sum over up to 1,500 frames).
FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
# A LayerNorm the parser decomposed (older opsets: ReduceMean/Sub/Pow/Sqrt/Div) keeps its module scope
# in the layer names, e.g. "/blocks.0/norm1/Pow": element-wise and unary layers under a *norm* scope,
# and any Pow or Sqrt, stay in fp32 too.
FP32_SCOPED_TYPES = frozenset({"ELEMENTWISE", "UNARY"})
_NORM_SCOPE = re.compile(r"(^|/)[^/]*norm[^/]*/", re.IGNORECASE)
_NORM_OP = re.compile(r"(^|/)(Pow|Sqrt)(_\d+)?$", re.IGNORECASE)
_FLOAT_TYPES = frozenset({"FLOAT", "HALF"})


def enum_name(value) -> str:
    """'NORMALIZATION' from trt.LayerType.NORMALIZATION (or a stand-in with .name, or a string)."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def _float_outputs(layer) -> bool:
    outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
    return bool(outputs) and all(enum_name(o.dtype) in _FLOAT_TYPES for o in outputs)


def _wanted(layer) -> bool:
    kind = enum_name(layer.type)
    if kind in FP32_LAYER_TYPES:
        return True
    return kind in FP32_SCOPED_TYPES and bool(_NORM_SCOPE.search(layer.name) or _NORM_OP.search(layer.name))


def fp32_fallback_layers(network) -> list:
    """Layers of a parsed network to keep in fp32, by type and name (only layers with float outputs:
    shape arithmetic and masks are not touched)."""
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return [layer for layer in layers if _wanted(layer) and _float_outputs(layer)]


def keep_in_fp32(network, float32) -> list[str]:
    """Pin the fp32_fallback_layers to float32 (precision and output types); their names, printed by
    the build. float32 is trt.float32 (a parameter so that tests can pass a stand-in)."""
    names = []
    for layer in fp32_fallback_layers(network):
        layer.precision = float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, float32)
        names.append(f"{enum_name(layer.type)} {layer.name}")
    return names
