"""fp16 TensorRT engines for the encoder and classifier, and their parity with ONNX Runtime fp32.

UNTESTED ON HARDWARE: written against the TensorRT 10 Python API and checked here only with stand-ins
(no GPU on the development machines). Run ``python -m e2v_export.tensorrt parity`` on the first GPU.

    python -m e2v_export.tensorrt build  --repository DIR [--max-batch 8 --max-seconds 30 ...]
    python -m e2v_export.tensorrt parity --repository DIR

``build`` turns DIR/encoder/1/model.onnx and DIR/classifier/1/model.onnx into model.plan files beside
them and writes DIR/emotion2vec/tensorrt_build.json; ``e2v-export --flavour native --tensorrt`` does
the same and also writes the tensorrt_plan configs (e2v_server/triton_models/*.tensorrt.pbtxt.in).

A plan runs only with the TensorRT version that built it and on the GPU architecture it was built on:
build on the serving GPU type with TensorRT 10.5, the version in nvcr.io/nvidia/tritonserver:24.10-py3
(pip: tensorrt-cu12==10.5.0). TensorRT 11 removed the fp16 builder flag and precision constraints used
here (weakly typed networks); the build refuses it with that message.

Modules:

- profile: the one optimisation profile over batch and length (ProfileOptions, profile_for);
- precision: the layers pinned to fp32 (normalisation, softmax, long reductions overflow in fp16);
- build: the engines and the build record (build_engine, build_repository_engines);
- engine: a plan as a model for e2v_export.runner.run_pipeline (EngineRunner);
- parity: the engines against ONNX Runtime fp32, judged against ARGMAX_TARGET and COSINE_TARGET;
- cli: ``python -m e2v_export.tensorrt``.

The package imports only numpy and the contract; tensorrt, onnxruntime and torch (CUDA buffers for
the parity check) are imported by the functions that need them.
"""

from e2v_export.tensorrt.build import RECORD_FILE, TRITON_TENSORRT, EngineRecord, build_engine, build_repository_engines
from e2v_export.tensorrt.parity import ARGMAX_TARGET, COSINE_TARGET, check_parity, meets_targets, parity_line
from e2v_export.tensorrt.precision import fp32_fallback_layers, keep_in_fp32
from e2v_export.tensorrt.profile import Profile, ProfileOptions, classifier_profile, encoder_profile, profile_for

__all__ = [
    "ARGMAX_TARGET",
    "COSINE_TARGET",
    "RECORD_FILE",
    "TRITON_TENSORRT",
    "EngineRecord",
    "Profile",
    "ProfileOptions",
    "build_engine",
    "build_repository_engines",
    "check_parity",
    "classifier_profile",
    "encoder_profile",
    "fp32_fallback_layers",
    "keep_in_fp32",
    "meets_targets",
    "parity_line",
    "profile_for",
]
