"""Write a ready Triton model repository from an exported checkpoint.

The committed model_repository/ holds the backend code (model.py) and the
config templates (config*.pbtxt.in). This module renders the templates with
the names from e2v_client.contract and the export options, and puts the ONNX
files in place. Two flavours of the same repository:

* portable: encoder and classifier are Python-backend models that run the ONNX
  files with ONNX Runtime (the pip-installed Triton, which has only that backend);
* native: encoder and classifier use Triton's onnxruntime backend
  (``platform: "onnxruntime_onnx"``, TensorRT accelerator in fp16), for
  NVIDIA's Triton container;
* native with ``tensorrt``: encoder and classifier as fp16 TensorRT engines
  (``platform: "tensorrt_plan"``) built on this machine's GPU by e2v_export.tensorrt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from e2v_client import contract
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.onnx_export import export_onnx
from e2v_export.quantize import quantize_encoder
from e2v_export.tensorrt import ProfileOptions, build_repository_engines

# The committed repository: backend code and templates (an editable install, as `make setup` does).
TEMPLATE_ROOT = Path(__file__).resolve().parents[2] / "model_repository"
FLAVOURS = ("portable", "native")
STAMP_FILE = "export_stamp.json"  # in the ensemble's folder: which code and checkpoint wrote the repository


def code_fingerprint() -> str:
    """A hash of everything that shapes an exported repository: templates, backend code, export code."""
    package = Path(__file__).resolve().parent
    files = sorted(TEMPLATE_ROOT.glob("*/config*.pbtxt.in")) + sorted(TEMPLATE_ROOT.glob("*/1/model.py"))
    files += [package / name for name in ("graph.py", "onnx_export.py", "repository.py", "quantize.py")]
    files.append(Path(contract.__file__))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def read_stamp(repository: str | Path) -> dict | None:
    """What wrote this repository, or None (not exported, or exported before stamps existed)."""
    try:
        return json.loads((Path(repository) / contract.ENSEMBLE_MODEL / STAMP_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class RepositoryOptions:
    flavour: str = "portable"
    max_batch_size: int = 8
    queue_delay_us: int = 2000  # how long the dynamic batcher waits to fill a batch
    preprocess_instances: int = 1
    encoder_instances: int = 1
    instance_kind: str = "cpu"  # cpu or gpu, for the encoder and classifier
    threads: int = 0  # ONNX Runtime intra-op threads per encoder instance; 0 = one per core
    max_seconds: float = 30.0  # longer requests are refused (the client windows long audio)
    pad_multiple: int = 8000  # preprocess pads each batch to a multiple of this many samples
    # portable encoder: rows run in groups whose longest is at most this times the shortest
    max_padding_ratio: float = 1.25
    model_name: str = ""  # reported to clients; default: the checkpoint folder's name
    tensorrt: bool = False  # native: build TensorRT engines (model.plan) here and serve them as tensorrt_plan
    int8: bool = False  # dynamically quantized encoder weights (see quantize.py); fp32 otherwise

    def check(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        if self.instance_kind not in ("cpu", "gpu"):
            raise ValueError("instance kind must be cpu or gpu")
        if min(self.max_batch_size, self.preprocess_instances, self.encoder_instances, self.pad_multiple) < 1:
            raise ValueError("batch size, instance counts and pad multiple must be at least 1")
        if self.max_seconds * contract.SAMPLE_RATE < contract.FRAME_RECEPTIVE_FIELD:
            raise ValueError("max_seconds is shorter than one frame")
        if self.tensorrt and (self.flavour != "native" or self.instance_kind != "gpu"):
            raise ValueError("TensorRT engines need the native flavour with GPU instances")
        if self.tensorrt and self.int8:
            raise ValueError("TensorRT engines are built from the fp32 ONNX files: --int8 and --tensorrt exclude each other")


def template_values(options: RepositoryOptions, labels: list[str], embedding_dim: int, model_name: str,
                    random_weights: bool) -> dict:
    waveform, lengths = contract.ENCODER_INPUTS
    frames, frame_lengths = contract.ENCODER_OUTPUTS
    embedding, scores, frame_scores, frame_embedding, num_frames = contract.CLASSIFIER_OUTPUTS
    for label in labels:
        if not re.fullmatch(r"[\w<>.-]+", label):
            raise ValueError(f"label {label!r} cannot be carried in the model config")
    # the TensorRT optimisation profile, shared with e2v_export.tensorrt: its longest waveform is
    # max_seconds rounded up to pad_multiple, the longest batch preprocess can send
    profile = ProfileOptions.for_repository(options)
    min_samples, opt_samples, max_samples = profile.samples()
    return {
        # names, from the contract
        "ENSEMBLE_MODEL": contract.ENSEMBLE_MODEL,
        "PREPROCESS_MODEL": contract.PREPROCESS_MODEL,
        "ENCODER_MODEL": contract.ENCODER_MODEL,
        "CLASSIFIER_MODEL": contract.CLASSIFIER_MODEL,
        "AUDIO": contract.ENSEMBLE_INPUT,
        "WAVEFORM": waveform,
        "LENGTHS": lengths,
        "FRAMES": frames,
        "FRAME_LENGTHS": frame_lengths,
        "EMBEDDING_OUT": embedding,
        "SCORES_OUT": scores,
        "FRAME_SCORES_OUT": frame_scores,
        "FRAME_EMBEDDING_OUT": frame_embedding,
        "NUM_FRAMES_OUT": num_frames,
        "SCORES": contract.SCORES,
        "EMBEDDING": contract.EMBEDDING,
        "FRAME_SCORES": contract.FRAME_SCORES,
        "FRAME_EMBEDDING": contract.FRAME_EMBEDDING,
        "NUM_FRAMES": contract.NUM_FRAMES,
        "PARAM_LABELS": contract.PARAM_LABELS,
        "PARAM_EMBEDDING_DIM": contract.PARAM_EMBEDDING_DIM,
        "PARAM_SAMPLE_RATE": contract.PARAM_SAMPLE_RATE,
        "PARAM_FRAMES_PER_SECOND": contract.PARAM_FRAMES_PER_SECOND,
        "PARAM_MAX_SECONDS": contract.PARAM_MAX_SECONDS,
        "PARAM_MODEL_NAME": contract.PARAM_MODEL_NAME,
        "PARAM_RANDOM_WEIGHTS": contract.PARAM_RANDOM_WEIGHTS,
        # the model
        "labels_csv": ",".join(labels),
        "num_labels": len(labels),
        "embedding_dim": embedding_dim,
        "sample_rate": contract.SAMPLE_RATE,
        "frames_per_second": f"{contract.FRAMES_PER_SECOND:g}",
        "model_name": model_name,
        "random_weights": "true" if random_weights else "false",
        "precision": "int8" if options.int8 else "fp32",
        "PARAM_PRECISION": contract.PARAM_PRECISION,
        # serving options
        "max_batch_size": options.max_batch_size,
        "queue_delay_us": options.queue_delay_us,
        "preprocess_instances": options.preprocess_instances,
        "encoder_instances": options.encoder_instances,
        "instance_kind": f"KIND_{options.instance_kind.upper()}",
        "threads": options.threads,
        "max_seconds": f"{options.max_seconds:g}",
        "pad_multiple": options.pad_multiple,
        "max_padding_ratio": f"{options.max_padding_ratio:g}",
        # TensorRT optimisation profile of the native encoder, in samples
        "min_samples": min_samples,
        "opt_batch": profile.opt_batch,
        "opt_samples": opt_samples,
        "max_samples": max_samples,
    }


def render_configs(options: RepositoryOptions, values: dict) -> dict[str, str]:
    """{model name: config.pbtxt text} for the chosen flavour."""
    engines = "tensorrt" if options.tensorrt else options.flavour
    sources = {
        contract.PREPROCESS_MODEL: "config.pbtxt.in",
        contract.ENCODER_MODEL: f"config.{engines}.pbtxt.in",
        contract.CLASSIFIER_MODEL: f"config.{engines}.pbtxt.in",
        contract.ENSEMBLE_MODEL: "config.pbtxt.in",
    }
    return {
        model: Template((TEMPLATE_ROOT / model / source).read_text("utf-8")).substitute(values)
        for model, source in sources.items()
    }


def python_models(flavour: str) -> list[str]:
    """Models whose model.py the repository needs."""
    if flavour == "portable":
        return [contract.PREPROCESS_MODEL, contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL]
    return [contract.PREPROCESS_MODEL]


def write_repository(checkpoint: LoadedCheckpoint, out: str | Path, options: RepositoryOptions | None = None) -> Path:
    options = options or RepositoryOptions()
    options.check()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    labels = [contract.label_name(t) for t in checkpoint.tokens]
    embedding_dim = int(checkpoint.config["model_conf"]["embed_dim"])
    random_weights = is_random_checkpoint(checkpoint.model_dir)
    values = template_values(options, labels, embedding_dim, options.model_name or checkpoint.model_dir.name,
                             random_weights)
    configs = render_configs(options, values)

    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        result = export_onnx(checkpoint, tmp, conv_as_matmul=options.int8)
        for model, onnx_file in (
            (contract.ENCODER_MODEL, result.encoder_path),
            (contract.CLASSIFIER_MODEL, result.classifier_path),
        ):
            version_dir = out / model / "1"
            version_dir.mkdir(parents=True, exist_ok=True)
            stale = version_dir / "model.py"
            if options.flavour == "native" and stale.exists() and out != TEMPLATE_ROOT:
                stale.unlink()  # a native model must not carry the portable backend code
            if options.int8 and model == contract.ENCODER_MODEL:
                quantize_encoder(onnx_file, version_dir / "model.onnx")
            else:
                os.replace(onnx_file, version_dir / "model.onnx")
        (out / contract.ENSEMBLE_MODEL / "1").mkdir(parents=True, exist_ok=True)
        for name in (contract.LABELS_FILE, contract.MODEL_INFO_FILE):  # for people; clients read the config
            shutil.copy(Path(tmp) / name, out / contract.ENSEMBLE_MODEL / name)

    if options.tensorrt:  # model.plan beside each model.onnx, before the configs that name them
        build_repository_engines(out, ProfileOptions.for_repository(options))
    for model in python_models(options.flavour):
        if out != TEMPLATE_ROOT:
            (out / model / "1").mkdir(parents=True, exist_ok=True)
            shutil.copy(TEMPLATE_ROOT / model / "1" / "model.py", out / model / "1" / "model.py")
    for model, text in configs.items():
        (out / model / "config.pbtxt").write_text(text, "utf-8")
    stamp = {"code": code_fingerprint(), "checkpoint": str(checkpoint.model_dir), "options": asdict(options)}
    (out / contract.ENSEMBLE_MODEL / STAMP_FILE).write_text(json.dumps(stamp, indent=2), "utf-8")
    return out


def is_random_checkpoint(model_dir: Path) -> bool:
    """True for checkpoints written by `e2v-export make-test-checkpoint` (they say so in configuration.json)."""
    path = model_dir / "configuration.json"
    try:
        return "random_weights" in json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return False
