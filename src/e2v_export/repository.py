"""Write a ready Triton model repository from an exported checkpoint.

The Triton models live in the e2v_server package, in triton_models/: config
templates (<model>[.<engines>].pbtxt.in) and the Python models' code. This
module renders the templates with the names from e2v_common.contract and the
export options, copies each Python model as <model>/1/model.py with the
contract beside it (so that every folder stands alone in any Triton), and puts
the ONNX files in place. Two flavours of the same repository:

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
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

import numpy as np

import e2v_server
from e2v_common import contract, runtimes, segmenter
from e2v_common.cpu import CpuInfo
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.onnx_export import export_onnx
from e2v_export.quantize import quantize_encoder, quantize_encoder_openvino, quantize_encoder_static
from e2v_export.tensorrt import ProfileOptions, build_repository_engines

# Config templates and Python models, shipped as package data of e2v_server.
TRITON_MODELS = Path(e2v_server.__file__).resolve().parent / "triton_models"
# Copied beside each Python model under names no installed package takes: the contract, and for the
# encoder and classifier the runtimes module (both from e2v_common, where the export imports them too).
CONTRACT_COPY = "emotion2vec_contract.py"
RUNTIMES_COPY = "emotion2vec_runtimes.py"
SEGMENTER_COPY = "emotion2vec_segmenter.py"  # beside the segments and stream models
SCORING_COPY = "emotion2vec_segment_scoring.py"  # beside the segments and stream models
VAD_LICENSE = "SILERO_VAD_LICENSE"  # Silero VAD's MIT licence, beside its model file
VAD_FILES = (contract.VAD_FILE, VAD_LICENSE)
FLAVOURS = ("portable", "native")
QUANTIZATIONS = ("dynamic", "static")  # of an int8 encoder (quantize.py)
IR_WEIGHTS_FILE = Path(contract.OPENVINO_FILE).with_suffix(".bin").name  # model.bin, beside model.xml
STAMP_FILE = "export_stamp.json"  # in the ensemble's folder: which code and checkpoint wrote the repository
# the bulk lane's models: {the model each repeats: its name}
BULK_LANE = {contract.ENCODER_MODEL: contract.BULK_ENCODER_MODEL, contract.ENSEMBLE_MODEL: contract.BULK_ENSEMBLE_MODEL}


def code_fingerprint() -> str:
    """A hash of everything that shapes an exported repository: templates, Triton models, export code."""
    package = Path(__file__).resolve().parent
    files = sorted(TRITON_MODELS.glob("*.pbtxt.in")) + sorted(TRITON_MODELS.glob("*.py"))
    files += [package / name for name in ("graph.py", "onnx_export.py", "repository.py", "quantize.py", "tune.py")]
    files.append(package / "tensorrt" / "profile.py")  # the native configs carry its optimisation profile
    files += [Path(contract.__file__), Path(runtimes.__file__), Path(segmenter.__file__)]  # copied into the models
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
    # the encoder's queue: requests beyond this many waiting are refused at once (UNAVAILABLE, which the client
    # retries with back-off) instead of waiting without bound; 0: no bound
    max_queue_size: int = 16
    # every step's queue: an admitted request waits at most this many seconds, then is refused (UNAVAILABLE
    # "Request timeout expired", retryable); None: derived from the speed measured at export (queue_wait()),
    # 0: no bound. A caller may ask for less with its request's own timeout.
    max_queue_wait: float | None = None
    # portable: a second ensemble and encoder for bulk jobs, at the lowest CPU priority (contract.BULK_ENSEMBLE_MODEL)
    bulk_lane: bool = True
    preprocess_instances: int = 1
    encoder_instances: int = 1
    instance_kind: str = "cpu"  # cpu or gpu, for the encoder and classifier
    threads: int = 0  # ONNX Runtime intra-op threads per encoder instance; 0 = one per core
    max_seconds: float = 30.0  # longer requests are refused (the client windows long audio)
    pad_multiple: int = 8000  # preprocess pads each batch to a multiple of this many samples
    # portable: each row is cut to a multiple of this many samples (0.1 s), not to the sample: ONNX Runtime keeps
    # a memory plan for each input shape it runs, so the shapes must be bounded (at most 300 lengths of 30 s)
    length_bucket: int = 1600
    # portable encoder: rows run in groups whose longest is at most this times the shortest
    max_padding_ratio: float = 1.25
    # portable: the most audio (rows x longest row) one runtime call takes; working memory grows with it
    # (large, one 30 s row: 0.7 GB; four: 1.7 GB), throughput does not (docs/operations.md)
    max_run_seconds: float = 30.0
    # live streams (the stream model): per server, at most max_streams at once; a stream idle this long is
    # dropped; a chunk holds at most max_chunk_seconds; a stream with more than max_backlog_seconds of audio
    # waiting to be scored is refused; a STATE to go on from goes out at least every ack_seconds of audio; a
    # stream takes at most max_stream_seconds of audio, then goes on in a new one (as Google's speech API does
    # at about 5 minutes): what one gRPC stream may send is bounded, and so what the gateway lets through
    max_streams: int = 64
    stream_idle_seconds: float = 10.0
    max_chunk_seconds: float = 1.0
    max_backlog_seconds: float = 10.0
    ack_seconds: float = 1.0
    max_stream_seconds: float = 300.0
    model_name: str = ""  # reported to clients; default: the checkpoint folder's name
    tensorrt: bool = False  # native: build TensorRT engines (model.plan) here and serve them as tensorrt_plan
    # The encoder's runtime and precision (portable flavour); the small classifier stays fp32 in ONNX Runtime.
    runtime: str = "onnxruntime"  # or openvino
    precision: str = "fp32"  # exact parity with FunASR; bf16 (OpenVINO, CPUs with native bf16); int8 (quantize.py)
    # int8 only: dynamic (ONNX Runtime, ranges computed per call) or static (calibrated on audio: ONNX Runtime
    # QDQ, or OpenVINO through NNCF)
    quantization: str = "dynamic"

    @property
    def has_bulk_lane(self) -> bool:
        """Whether the repository gets the bulk lane: only where the encoder is our Python model (portable), which
        can lower its CPU priority; Triton's own backends (native) cannot."""
        return self.bulk_lane and self.flavour == "portable"

    def check(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        if self.instance_kind not in ("cpu", "gpu"):
            raise ValueError("instance kind must be cpu or gpu")
        if min(self.max_batch_size, self.preprocess_instances, self.encoder_instances, self.pad_multiple) < 1:
            raise ValueError("batch size, instance counts and pad multiple must be at least 1")
        if self.length_bucket < contract.FRAME_HOP:
            raise ValueError("the length bucket must be at least one frame hop")
        if self.max_queue_size < 0:
            raise ValueError("max queue size must be 0 (no bound) or more")
        if self.max_queue_wait is not None and self.max_queue_wait < 0:
            raise ValueError("max queue wait must be 0 (no bound) or more seconds")
        if min(self.max_seconds, self.max_run_seconds) * contract.SAMPLE_RATE < contract.FRAME_RECEPTIVE_FIELD:
            raise ValueError("max_seconds and max_run_seconds must be at least one frame long")
        self.check_streams()
        if self.tensorrt and (self.flavour != "native" or self.instance_kind != "gpu"):
            raise ValueError("TensorRT engines need the native flavour with GPU instances")
        self.check_runtime()

    def check_streams(self) -> None:
        if self.max_streams < 1 or min(self.stream_idle_seconds, self.max_chunk_seconds, self.ack_seconds) <= 0:
            raise ValueError("max streams must be at least 1; stream idle, chunk and ack seconds more than 0")
        if self.max_backlog_seconds < 2 * self.max_chunk_seconds:
            raise ValueError("max backlog seconds must be at least two chunks")
        # a new stream resends the audio of the segment still open (up to max_seconds): each must get further
        if self.max_stream_seconds < 2 * self.max_seconds:
            raise ValueError("max stream seconds must be at least twice max_seconds (the longest segment)")

    def check_runtime(self) -> None:
        if self.runtime not in runtimes.RUNTIMES or self.precision not in runtimes.PRECISIONS:
            raise ValueError(f"runtime must be one of {runtimes.RUNTIMES}, precision one of {runtimes.PRECISIONS}")
        if self.precision == "bf16" and self.runtime != "openvino":
            raise ValueError("bf16 runs in OpenVINO (ONNX Runtime has no bf16 CPU kernels): use --runtime openvino")
        if self.runtime == "openvino" and self.instance_kind != "cpu":
            raise ValueError("the openvino runtime serves CPU instances: use --instance-kind cpu")
        if self.runtime == "openvino" and self.flavour == "native" and self.precision != "bf16":
            raise ValueError(
                "Triton's openvino backend (24.10) runs bf16 on bf16 CPUs and cannot be held to fp32: "
                "the native flavour offers it for --precision bf16 only (fp32: --runtime onnxruntime)"
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}")
        if self.runtime == "openvino" and self.precision == "int8" and self.quantization != "static":
            raise ValueError("OpenVINO's int8 is static (NNCF, calibrated on audio): use --quantization static")
        if self.tensorrt and self.precision != "fp32":
            raise ValueError("TensorRT engines are built from the fp32 ONNX files: use --precision fp32")


def template_values(
    options: RepositoryOptions, labels: list[str], embedding_dim: int, model_name: str, random_weights: bool
) -> dict:
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
        "SEGMENTS_MODEL": contract.SEGMENTS_MODEL,
        "STREAM_MODEL": contract.STREAM_MODEL,
        "PARAM_MAX_CHUNK_SECONDS": contract.PARAM_MAX_CHUNK_SECONDS,
        "PARAM_MAX_STREAMS": contract.PARAM_MAX_STREAMS,
        "PARAM_MAX_BACKLOG_SECONDS": contract.PARAM_MAX_BACKLOG_SECONDS,
        "PARAM_ACK_SECONDS": contract.PARAM_ACK_SECONDS,
        "PARAM_MAX_STREAM_SECONDS": contract.PARAM_MAX_STREAM_SECONDS,
        "SEGMENTS_STATE": contract.SEGMENTS_STATE,
        "SEGMENT_TIMES": contract.SEGMENT_TIMES,
        "SEGMENT_SCORES": contract.SEGMENT_SCORES,
        "SEGMENT_EMBEDDING": contract.SEGMENT_EMBEDDING,
        "RESUME_AT": contract.RESUME_AT,
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
        "PARAM_PRECISION": contract.PARAM_PRECISION,
        "PARAM_RUNTIME": contract.PARAM_RUNTIME,
        "PARAM_PAD_MULTIPLE": contract.PARAM_PAD_MULTIPLE,
        "PARAM_THREADS": contract.PARAM_THREADS,
        "PARAM_NICENESS": contract.PARAM_NICENESS,
        "PARAM_BULK_ENSEMBLE": contract.PARAM_BULK_ENSEMBLE,
        "PARAM_MAX_PADDING_RATIO": contract.PARAM_MAX_PADDING_RATIO,
        "PARAM_MAX_RUN_STEPS": contract.PARAM_MAX_RUN_STEPS,
        "PARAM_LENGTH_BUCKET": contract.PARAM_LENGTH_BUCKET,
        "PARAM_STEP_WINDOW": contract.PARAM_STEP_WINDOW,
        "PARAM_STEP_HOP": contract.PARAM_STEP_HOP,
        "ONNX_FILE": contract.ONNX_FILE,
        "PLAN_FILE": contract.PLAN_FILE,
        # the model
        "labels_csv": ",".join(labels),
        "num_labels": len(labels),
        "embedding_dim": embedding_dim,
        "sample_rate": contract.SAMPLE_RATE,
        "frames_per_second": f"{contract.FRAMES_PER_SECOND:g}",
        "model_name": model_name,
        "random_weights": "true" if random_weights else "false",
        "precision": options.precision,
        "runtime": options.runtime,
        "frame_window": contract.FRAME_RECEPTIVE_FIELD,
        "frame_hop": contract.FRAME_HOP,
        # serving options
        "max_batch_size": options.max_batch_size,
        "queue_delay_us": options.queue_delay_us,
        "priority_levels": (
            f" priority_levels: {max(contract.PRIORITIES.values())}"
            f" default_priority_level: {contract.PRIORITIES[contract.DEFAULT_PRIORITY]}"
        ),
        "encoder_queue_policy": queue_policy(options, bound_length=True),
        "step_queue_policy": queue_policy(options, bound_length=False),
        "preprocess_instances": options.preprocess_instances,
        "encoder_instances": options.encoder_instances,
        "instance_kind": f"KIND_{options.instance_kind.upper()}",
        "threads": options.threads,
        "niceness": 0,
        "bulk_ensemble": contract.BULK_ENSEMBLE_MODEL if options.has_bulk_lane else "",
        "max_seconds": f"{options.max_seconds:g}",
        "pad_multiple": options.pad_multiple,
        # live streams
        "max_streams": options.max_streams,
        "stream_candidates": 4 * options.max_streams,  # Triton's slots, beyond the streams refused by the model
        "stream_idle_us": round(options.stream_idle_seconds * 1e6),
        "max_chunk_seconds": f"{options.max_chunk_seconds:g}",
        "max_backlog_seconds": f"{options.max_backlog_seconds:g}",
        "ack_seconds": f"{options.ack_seconds:g}",
        "max_stream_seconds": f"{options.max_stream_seconds:g}",
        "max_padding_ratio": f"{options.max_padding_ratio:g}",
        # portable: rows are cut to a multiple of length_bucket samples (its frames after the encoder)
        "length_bucket_samples": options.length_bucket,
        "length_bucket_frames": max(1, options.length_bucket // contract.FRAME_HOP),
        "max_run_samples": round(options.max_run_seconds * contract.SAMPLE_RATE),
        "max_run_frames": contract.frames_for_samples(round(options.max_run_seconds * contract.SAMPLE_RATE)),
        # TensorRT optimisation profile of the native encoder, in samples
        "min_samples": min_samples,
        "opt_batch": profile.opt_batch,
        "opt_samples": opt_samples,
        "max_samples": max_samples,
    }


# The default wait bound: the time this machine takes to score one full encoder batch of the longest requests
# (max_batch_size x max_seconds of audio, at the speed measured at export), within QUEUE_WAIT_LIMITS_S. A request
# first in line waits for the batch that is running, so a shorter bound refuses requests on a server that is
# busy but not overloaded (measured: a 4.1 s bound, two 30 s requests' time on base, refused 5 of 8 concurrent
# requests). Where the export cannot measure the served runtime (GPU instances), QUEUE_WAIT_UNMEASURED_S.
QUEUE_WAIT_LIMITS_S = (10.0, 120.0)
QUEUE_WAIT_UNMEASURED_S = 10.0
QUEUE_WAIT_CLIP_S = 10.0  # the clip the export times


def queue_policy(options: RepositoryOptions, bound_length: bool) -> str:
    """A step's dynamic_batching queue policy (each priority level gets one): each request waits at most
    max_queue_wait seconds, and with bound_length (the encoder) at most max_queue_size wait; empty when nothing is
    bounded. The wait is bounded at every step: under a flood requests queue in front of the preprocess model
    too (measured: 4.7 s on average there, 0.6 s at the encoder), and the encoder's timeout counts only the
    time in its own queue."""
    fields = []
    if bound_length and options.max_queue_size:
        fields.append(f"max_queue_size: {options.max_queue_size}")
    if options.max_queue_wait:
        wait_us = round(options.max_queue_wait * 1e6)
        fields.append(f"timeout_action: REJECT default_timeout_microseconds: {wait_us} allow_timeout_override: true")
    return f" default_queue_policy {{ {' '.join(fields)} }}" if fields else ""


def queue_wait(options: RepositoryOptions, model_files: dict[str, Path], tuning: dict | None) -> float:
    """The default wait bound for these model files on this machine (see QUEUE_WAIT_LIMITS_S): from the
    tuner's measured speed of the chosen layout, else timed here on a synthetic clip."""
    if options.instance_kind != "cpu" or options.tensorrt:
        return QUEUE_WAIT_UNMEASURED_S
    audio_per_second = tuned_speed(tuning) if tuning else None
    if audio_per_second is None:
        from e2v_common.synthetic_speech import speech_like
        from e2v_export.runner import Emotion2vecRunner, speed

        runner = Emotion2vecRunner(
            model_files[contract.ENCODER_MODEL], model_files[contract.CLASSIFIER_MODEL],
            options.threads, options.runtime, options.precision,
        )  # fmt: skip
        audio_per_second = speed([runner], [speech_like(QUEUE_WAIT_CLIP_S, seed=7)], min_timed_s=1.0)
    low, high = QUEUE_WAIT_LIMITS_S
    full_batch_s = options.max_batch_size * options.max_seconds / audio_per_second
    return round(min(max(full_batch_s, low), high), 1)


def tuned_speed(tuning: dict) -> float | None:
    """Audio seconds per second of the tuner's choice, in the layout it chose."""
    choice = tuning["choice"]
    for candidate in tuning["candidates"]:
        if candidate["name"] == choice["name"]:
            for layout in candidate["layouts"]:
                if (layout["instances"], layout["threads"]) == (choice["encoder_instances"], choice["threads"]):
                    return layout["audio_seconds_per_second"]
            return candidate["audio_seconds_per_second"]
    return None


def render_configs(options: RepositoryOptions, values: dict) -> dict[str, str]:
    """{model name: config.pbtxt text} for the chosen flavour."""
    engines = "tensorrt" if options.tensorrt else options.flavour
    # native on CPU with OpenVINO: the encoder in Triton's openvino backend, the classifier as native
    encoder_engines = "openvino" if options.flavour == "native" and options.runtime == "openvino" else engines
    templates = {
        contract.PREPROCESS_MODEL: f"{contract.PREPROCESS_MODEL}.pbtxt.in",
        contract.ENCODER_MODEL: f"{contract.ENCODER_MODEL}.{encoder_engines}.pbtxt.in",
        contract.CLASSIFIER_MODEL: f"{contract.CLASSIFIER_MODEL}.{engines}.pbtxt.in",
        contract.ENSEMBLE_MODEL: f"{contract.ENSEMBLE_MODEL}.pbtxt.in",
        contract.SEGMENTS_MODEL: f"{contract.SEGMENTS_MODEL}.pbtxt.in",
        contract.STREAM_MODEL: f"{contract.STREAM_MODEL}.pbtxt.in",
    }
    configs = {
        model: Template((TRITON_MODELS / template).read_text("utf-8")).substitute(values)
        for model, template in templates.items()
    }
    if options.has_bulk_lane:  # the same encoder and ensemble again, under the bulk lane's names
        lane = values | {
            "ENCODER_MODEL": contract.BULK_ENCODER_MODEL,
            "ENSEMBLE_MODEL": contract.BULK_ENSEMBLE_MODEL,
            "niceness": contract.BULK_NICENESS,
        }
        for model, lane_model in BULK_LANE.items():
            configs[lane_model] = Template((TRITON_MODELS / templates[model]).read_text("utf-8")).substitute(lane)
    return configs


def python_models(flavour: str, bulk_lane: bool = False) -> dict[str, str]:
    """{model: the file in triton_models/ that is its model.py} for the models that run in the Python backend."""
    models = {
        contract.PREPROCESS_MODEL: "preprocess.py",
        contract.SEGMENTS_MODEL: "segments.py",
        contract.STREAM_MODEL: "stream.py",
    }
    if flavour == "portable":
        models |= {contract.ENCODER_MODEL: "runtime_model.py", contract.CLASSIFIER_MODEL: "runtime_model.py"}
    if bulk_lane:
        models[contract.BULK_ENCODER_MODEL] = "runtime_model.py"
    return models


def write_bulk_lane(out: Path, enabled: bool) -> None:
    """The bulk lane's folders: the encoder's model files hard-linked (no second copy on disk, and each folder
    still holds its files: a copy of the folder alone is whole) and its tuning.json; without the lane, none
    left from an earlier export."""
    for lane_model in BULK_LANE.values():
        shutil.rmtree(out / lane_model, ignore_errors=True)
    if not enabled:
        return
    encoder, lane = out / contract.ENCODER_MODEL, out / contract.BULK_ENCODER_MODEL
    (out / contract.BULK_ENSEMBLE_MODEL / "1").mkdir(parents=True)
    (lane / "1").mkdir(parents=True)
    model_files = [f"1/{name}" for name in (contract.ONNX_FILE, contract.OPENVINO_FILE, IR_WEIGHTS_FILE)]
    for name in [*model_files, runtimes.TUNING_FILE]:
        if (encoder / name).exists():
            link_or_copy(encoder / name, lane / name)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy(source, target)


def write_python_models(out: Path, flavour: str, bulk_lane: bool = False) -> None:
    """model.py and the modules it imports in each Python model's version folder; none left in the others."""
    python = python_models(flavour, bulk_lane)
    for model in python_models("portable", bulk_lane):  # every model that is a Python model in some flavour
        version_dir = out / model / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        copies = {}
        if model in python:
            copies = {"model.py": TRITON_MODELS / python[model], CONTRACT_COPY: Path(contract.__file__)}
            if model != contract.PREPROCESS_MODEL:
                copies[RUNTIMES_COPY] = Path(runtimes.__file__)
            if model in (contract.SEGMENTS_MODEL, contract.STREAM_MODEL):
                copies |= {SEGMENTER_COPY: Path(segmenter.__file__), SCORING_COPY: TRITON_MODELS / "segment_scoring.py"}
                copies |= vad_files()
        for name in ("model.py", CONTRACT_COPY, RUNTIMES_COPY, SEGMENTER_COPY, SCORING_COPY, *VAD_FILES):
            if name in copies:
                shutil.copy(copies[name], version_dir / name)
            else:  # nothing left from an earlier export of another flavour
                (version_dir / name).unlink(missing_ok=True)


def vad_files() -> dict[str, Path]:
    """{name in the segments model's folder: file}: Silero VAD's ONNX model and its licence, from the
    silero-vad wheel (installed without its dependencies: the ONNX file needs only onnxruntime)."""
    spec = importlib.util.find_spec("silero_vad")  # found, not imported: its __init__ imports torch
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the segments model needs Silero VAD's ONNX file: pip install --no-deps silero-vad==6.2.3 (make setup does)"
        )
    package = Path(spec.origin).parent
    licences = sorted(package.parent.glob("silero_vad-*.dist-info/licenses/LICENSE"))
    return {contract.VAD_FILE: package / "data" / "silero_vad.onnx", VAD_LICENSE: licences[-1]}


def export_models(
    checkpoint: LoadedCheckpoint,
    precision: str,
    out_dir: Path,
    runtime: str = "onnxruntime",
    quantization: str = "dynamic",
    calibration: list | None = None,
) -> dict[str, Path]:
    """The encoder's and the classifier's model files for the encoder's `precision`, in out_dir: {model: file}.

    fp32 and bf16 share the fp32 ONNX file (bf16 is the runtime's inference precision); int8 quantizes it
    (quantized_encoder).
    """
    result = export_onnx(checkpoint, out_dir, conv_as_matmul=conv_as_matmul(precision, runtime))
    encoder = quantized_encoder(result.encoder_path, out_dir, precision, runtime, quantization, calibration)
    return {contract.ENCODER_MODEL: encoder, contract.CLASSIFIER_MODEL: result.classifier_path}


def conv_as_matmul(precision: str, runtime: str) -> bool:
    """Whether the encoder is exported with its conv front-end as MatMuls: for ONNX Runtime's int8, which
    quantizes MatMuls only."""
    return precision == "int8" and runtime == "onnxruntime"


def quantized_encoder(
    encoder: Path, out_dir: Path, precision: str, runtime: str, quantization: str, calibration: list | None
) -> Path:
    """The encoder file to serve at `precision`: the exported ONNX file itself for fp32 and bf16; for int8 a
    quantized copy in out_dir (quantize.py), for this machine's CPU (7-bit weights where it has no VNNI):
    dynamic, or static calibrated on `calibration` (16 kHz float clips; built-in speech-like audio if None).
    OpenVINO's int8 is IR (model.xml)."""
    if precision != "int8":
        return encoder
    reduce_range = not CpuInfo.this_machine().vnni
    out_dir.mkdir(parents=True, exist_ok=True)
    if quantization == "dynamic":
        quantized = out_dir / f"int8.{contract.ENCODER_ONNX}"
        quantize_encoder(encoder, quantized, reduce_range=reduce_range)
        return quantized
    clips = calibration if calibration is not None else calibration_clips()
    if runtime == "openvino":
        quantized = out_dir / "int8" / contract.OPENVINO_FILE
        quantize_encoder_openvino(encoder, quantized, clips)
    else:
        quantized = out_dir / f"int8-static.{contract.ENCODER_ONNX}"
        quantize_encoder_static(encoder, quantized, clips, reduce_range=reduce_range)
    return quantized


def calibration_clips(count: int = 8) -> list:
    """The built-in calibration audio of a static int8 encoder: speech-like clips of 2 to 8 s."""
    from e2v_common.synthetic_speech import speech_like

    return [speech_like(float(s), seed=1000 + i) for i, s in enumerate(np.linspace(2, 8, count))]


def place_model_file(path: Path, version_dir: Path) -> None:
    """Move an exported model file into a version folder as model.onnx, or as model.xml and model.bin (IR);
    the other form is removed, so that no file of an earlier export is served instead."""
    ir = path.suffix == ".xml"
    version_dir.mkdir(parents=True, exist_ok=True)
    for stale in (contract.ONNX_FILE,) if ir else (contract.OPENVINO_FILE, IR_WEIGHTS_FILE):
        (version_dir / stale).unlink(missing_ok=True)
    if ir:
        os.replace(path, version_dir / contract.OPENVINO_FILE)
        os.replace(path.with_suffix(".bin"), version_dir / IR_WEIGHTS_FILE)
    else:
        os.replace(path, version_dir / contract.ONNX_FILE)


def write_repository(
    checkpoint: LoadedCheckpoint,
    out: str | Path,
    options: RepositoryOptions | None = None,
    model_files: dict[str, Path] | None = None,
    tuning: dict | None = None,
) -> Path:
    """Write the repository; model_files: {model: file} already exported (by the tuner), moved into place;
    tuning: the tuner's report, written as the encoder's tuning.json (read back when the encoder loads)."""
    options = options or RepositoryOptions()
    options.check()
    vad_files()  # refuses at once, not after the export, where the segments model's VAD file is missing
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    labels = [contract.label_name(t) for t in checkpoint.tokens]
    embedding_dim = int(checkpoint.config["model_conf"]["embed_dim"])
    random_weights = is_random_checkpoint(checkpoint.model_dir)

    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        if model_files is None:
            model_files = export_models(checkpoint, options.precision, Path(tmp), options.runtime, options.quantization)
        if options.max_queue_wait is None:
            options.max_queue_wait = queue_wait(options, model_files, tuning)
        for model, path in model_files.items():
            place_model_file(path, out / model / "1")
    (out / contract.ENSEMBLE_MODEL / "1").mkdir(parents=True, exist_ok=True)
    tuning_file = out / contract.ENCODER_MODEL / runtimes.TUNING_FILE
    if tuning:
        tuning_file.write_text(json.dumps(tuning, indent=2), "utf-8")
    else:  # none left from an earlier tuned export: it would check this repository against that machine
        tuning_file.unlink(missing_ok=True)

    if options.tensorrt:  # model.plan beside each model.onnx, before the configs that name them
        build_repository_engines(out, ProfileOptions.for_repository(options))
    write_bulk_lane(out, options.has_bulk_lane)
    write_python_models(out, options.flavour, options.has_bulk_lane)
    values = template_values(
        options, labels, embedding_dim, options.model_name or checkpoint.model_dir.name, random_weights
    )
    for model, text in render_configs(options, values).items():
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
