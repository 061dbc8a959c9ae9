"""Base of the portable Triton Python models that run an exported ONNX file with ONNX Runtime.

Used by model_repository/encoder and model_repository/classifier where Triton
has no native ONNX Runtime backend (the pip-installed server). Imports only
numpy, onnxruntime and the Triton Python backend utilities.

Each model has one input with a length axis (axis 1) and one lengths input.
The inputs are marked allow_ragged_batch, so one execute() may get requests of
any lengths. On a CPU, padding is pure waste (a 1 s utterance padded to 30 s
costs 30 times the compute) and batching gains little, so the rows are cut to
their real lengths and run in groups of similar length: within a group the
longest is at most ``max_padding_ratio`` times the shortest. Each response gets
back the rows and the length axis its own input implies (padding masked to 0,
as in one padded batch); the numbers are those of the row run alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from e2v_export.onnx_runner import length_groups


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
    min_length: int = 1  # shortest input the model can run

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
        self.max_padding_ratio = float(params.get("max_padding_ratio", "1.25"))
        self.max_group = max(1, int(config.get("max_batch_size", 1)))

    def execute(self, requests):
        sequence_name, lengths_name = self.inputs
        rows, real_lengths, owners = [], [], []  # one entry per utterance; owners: (request, padded length)
        for r, request in enumerate(requests):
            sequence = pb_utils.get_input_tensor_by_name(request, sequence_name).as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, lengths_name).as_numpy().reshape(-1)
            for row, length in zip(sequence, lengths):
                length = int(length)
                # cut the padding off; a row too short to run (warm-up zeros) keeps its padded length
                rows.append(row[:length] if length >= self.min_length else row)
                real_lengths.append(length)
                owners.append((r, sequence.shape[1]))

        results: list[dict] = [None] * len(rows)
        try:
            for group in length_groups([len(row) for row in rows], self.max_padding_ratio, self.max_group):
                longest = max(len(rows[i]) for i in group)
                batch = np.zeros((len(group), longest) + rows[group[0]].shape[1:], dtype=np.float32)
                for k, i in enumerate(group):
                    batch[k, : len(rows[i])] = rows[i]
                lengths = np.array([real_lengths[i] for i in group], dtype=np.int64)
                values = self.session.run(list(self.outputs), {sequence_name: batch, lengths_name: lengths})
                for k, i in enumerate(group):
                    results[i] = {name: value[k] for name, value in zip(self.outputs, values)}
        except Exception as exc:  # e.g. out of memory: fail these requests, keep serving
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]

        responses = []
        for r in range(len(requests)):
            mine = [i for i, (owner, _) in enumerate(owners) if owner == r]
            padded_length = owners[mine[0]][1]
            tensors = []
            for name in self.outputs:
                if name in self.sequence_outputs:
                    # the length axis this request's own (padded) input implies, zeros past the real frames
                    first = results[mine[0]][name]
                    value = np.zeros((len(mine), self.output_length(padded_length)) + first.shape[1:], first.dtype)
                    for k, i in enumerate(mine):
                        n = min(len(results[i][name]), value.shape[1])
                        value[k, :n] = results[i][name][:n]
                else:
                    value = np.stack([results[i][name] for i in mine])
                    if value.ndim == 1:
                        value = value.reshape(-1, 1)  # [B] -> [B, 1], the config's dims [1]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
