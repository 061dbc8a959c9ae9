"""Base of the portable Triton Python models that run an exported ONNX file with ONNX Runtime.

Used by model_repository/encoder and model_repository/classifier where Triton
has no native ONNX Runtime backend (the pip-installed server). Imports only
numpy, onnxruntime and the Triton Python backend utilities.

Each model has one input with a length axis (axis 1) and one lengths input.
The inputs are marked allow_ragged_batch, so one execute() may get requests of
different lengths: they are zero-padded to the longest (the lengths input keeps
the padding masked), run as one batch, and each response gets back the rows and
the length axis that its own input implies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _providers(kind: str, device_id: int) -> list:
    available = ort.get_available_providers()
    providers = []
    if kind == "GPU":
        for name in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            if name in available:
                providers.append((name, {"device_id": device_id}))
    return providers + ["CPUExecutionProvider"]


class OnnxTritonModel:
    inputs: tuple[str, str]  # (input with a length axis, its lengths [B])
    outputs: tuple[str, ...]

    def output_length(self, input_length: int) -> int:
        """Length along axis 1 of this model's sequence outputs for an input of input_length."""
        raise NotImplementedError

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / params.get("onnx_file", "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = _providers(args["model_instance_kind"], int(args["model_instance_device_id"]))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.sequence_outputs = {o.name for o in self.session.get_outputs() if len(o.shape) >= 3}

    def execute(self, requests):
        sequence_name, lengths_name = self.inputs
        sequences, lengths = [], []
        for request in requests:
            sequences.append(pb_utils.get_input_tensor_by_name(request, sequence_name).as_numpy())
            lengths.append(pb_utils.get_input_tensor_by_name(request, lengths_name).as_numpy().reshape(-1))
        longest = max(s.shape[1] for s in sequences)
        batch = np.zeros((sum(len(s) for s in sequences), longest) + sequences[0].shape[2:], dtype=np.float32)
        row = 0
        for s in sequences:
            batch[row : row + len(s), : s.shape[1]] = s
            row += len(s)
        try:
            results = self.session.run(list(self.outputs), {sequence_name: batch, lengths_name: np.concatenate(lengths)})
        except Exception as exc:  # e.g. out of memory: fail these requests, keep serving
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

        responses, row = [], 0
        for s in sequences:
            rows = slice(row, row + len(s))
            row += len(s)
            tensors = []
            for name, value in zip(self.outputs, results):
                value = value[rows]
                if name in self.sequence_outputs:
                    value = value[:, : self.output_length(s.shape[1])]
                elif value.ndim == 1:
                    value = value.reshape(-1, 1)  # [B] -> [B, 1], the config's dims [1]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
