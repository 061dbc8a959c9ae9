"""A TensorRT plan as an e2v_export.runner.Model, for e2v_export.runner.run_pipeline (tensorrt and torch are
imported when an EngineRunner is made)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from e2v_export.tensorrt.precision import enum_name


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
