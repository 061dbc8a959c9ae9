"""Running the encoder and classifier: ONNX Runtime (the fp32 reference), a TensorRT plan, and the two
chained over padded batches (run_pipeline), split back into one compare.UtteranceResult per utterance.

onnxruntime, tensorrt and torch are imported when a runner is made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from e2v_export.compare import UtteranceResult
from e2v_export.tensorrt.precision import enum_name
from e2v_server import contract

Runner = Callable[[dict], dict]  # {input name: array} -> {output name: array}


def onnx_runner(path: str | Path) -> Runner:
    """ONNX Runtime on the CPU: the fp32 reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


class EngineRunner:
    """Runs a plan with TensorRT on CUDA buffers held by torch (a CUDA build of torch is needed)."""

    _TORCH_TYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}

    def __init__(self, plan_path: str | Path):
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the parity check runs the engines on a GPU: torch sees no CUDA device")
        self.torch = torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} could not load {plan_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def __call__(self, feeds: dict) -> dict:
        torch = self.torch
        stream = torch.cuda.current_stream()
        buffers = {}
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            buffers[name] = tensor
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} has a data-dependent shape {shape}")
            dtype = getattr(torch, self._TORCH_TYPES[enum_name(self.engine.get_tensor_dtype(name))])
            buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self.outputs}


def run_pipeline(
    encoder: Runner, classifier: Runner, waveforms: list[np.ndarray], batch_size: int
) -> list[UtteranceResult]:
    """Per utterance, from padded batches of batch_size: scores [L], embedding [D], frames [T, D] and
    frame_scores [T, L], cut to the utterance's T frames."""
    wave_in, lengths_in = contract.ENCODER_INPUTS
    frames_out, frame_lengths_out = contract.ENCODER_OUTPUTS
    frames_in, frame_lengths_in = contract.CLASSIFIER_INPUTS
    embedding_name, scores_name, frame_scores_name = contract.CLASSIFIER_OUTPUTS[:3]
    results = []
    for start in range(0, len(waveforms), batch_size):
        rows = [contract.normalize_waveform(w) for w in waveforms[start : start + batch_size]]
        batch, lengths = contract.pad_rows(rows)
        encoded = encoder({wave_in: batch, lengths_in: lengths})
        frames, frame_lengths = encoded[frames_out], encoded[frame_lengths_out]
        classified = classifier({frames_in: frames, frame_lengths_in: frame_lengths})
        for i in range(len(rows)):
            t = int(frame_lengths[i])
            results.append(
                UtteranceResult(
                    scores=classified[scores_name][i],
                    embedding=classified[embedding_name][i],
                    frames=frames[i, :t],
                    frame_scores=classified[frame_scores_name][i, :t],
                )
            )
    return results
