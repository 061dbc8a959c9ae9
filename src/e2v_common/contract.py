"""The one definition shared by the export, the Triton models, the gateway and the client.

Tensor and model names, the audio format, the frame formula, the waveform
normalisation, how utterances are padded into a batch and the label names live
here and nowhere else. This module imports only numpy: the thin client uses it
without torch, and e2v-export copies it into each Python model of the
repository (as ``emotion2vec_contract.py``), which then runs on a Triton whose
Python has nothing of this project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# --- audio ---------------------------------------------------------------
SAMPLE_RATE = 16000
# Receptive field and hop of emotion2vec's conv front-end, in samples.
# The exporter checks these against each checkpoint's feature_encoder_spec.
FRAME_RECEPTIVE_FIELD = 400
FRAME_HOP = 320
FRAMES_PER_SECOND = SAMPLE_RATE / FRAME_HOP  # 50.0
# Per-utterance normalisation epsilon (FunASR: F.layer_norm(x, x.shape), eps 1e-5).
NORM_EPS = 1e-5

# --- model names in the Triton repository --------------------------------
ENSEMBLE_MODEL = "emotion2vec"
PREPROCESS_MODEL = "preprocess"
ENCODER_MODEL = "encoder"
CLASSIFIER_MODEL = "classifier"

# --- request priorities ----------------------------------------------------
# Triton's priority levels (1 is served first), on every step of the ensemble: interactive calls (the page,
# single requests, any caller that sends no priority) go before bulk jobs, which e2v-client's batches send.
PRIORITIES = {"interactive": 1, "bulk": 2}
DEFAULT_PRIORITY = "interactive"
# The bulk lane (portable flavour; e2v-export --no-bulk-lane leaves it out): a second ensemble whose encoder is
# a second instance of the same model file, its threads at the lowest CPU priority (nice BULK_NICENESS). Bulk
# jobs sent there leave the first encoder to interactive requests, and the OS runs those ahead of a bulk batch
# that is already running. Priority levels alone cannot do that: a batch in the encoder is not interrupted, so
# an interactive request waited for it (11.8 s on large, against 0.46 s on an idle server).
BULK_ENSEMBLE_MODEL = "emotion2vec_bulk"
BULK_ENCODER_MODEL = "encoder_bulk"
BULK_NICENESS = 19

# --- the gateway -----------------------------------------------------------
# The header that carries the gateway's token: "Bearer <token>", on gRPC metadata and HTTP alike.
TOKEN_HEADER = "authorization"

# --- tensor names ---------------------------------------------------------
# Encoder ONNX: waveform [B, N] float32 (normalised), lengths [B] int64
#            -> frames [B, T, D] float32, frame_lengths [B] int64
ENCODER_INPUTS = ("waveform", "lengths")
ENCODER_OUTPUTS = ("frames", "frame_lengths")
# Classifier ONNX: frames [B, T, D], frame_lengths [B]
#            -> embedding [B, D], scores [B, L], frame_scores [B, T, L],
#               frame_embedding [B, T, D] and num_frames [B] (its inputs passed through: in
#               Triton 2.51 an ensemble output must not also feed a later step, so the
#               ensemble takes the frame outputs from the last step)
CLASSIFIER_INPUTS = ENCODER_OUTPUTS
CLASSIFIER_OUTPUTS = ("embedding", "scores", "frame_scores", "frame_embedding", "num_frames")

# Preprocess (Python backend): AUDIO [1, N] float32 16 kHz mono, one utterance per request
#            -> the encoder's inputs, normalised and zero-padded to a common length per batch.
PREPROCESS_INPUT = "AUDIO"

# The public ensemble: AUDIO -> outputs; a client asks only for the outputs it needs.
ENSEMBLE_INPUT = PREPROCESS_INPUT
SCORES = "SCORES"  # [L] utterance scores
EMBEDDING = "EMBEDDING"  # [D] mean of the frame features
FRAME_SCORES = "FRAME_SCORES"  # [T', L] per-frame scores; rows past NUM_FRAMES are padding
FRAME_EMBEDDING = "FRAME_EMBEDDING"  # [T', D] frame features; rows past NUM_FRAMES are padding
NUM_FRAMES = "NUM_FRAMES"  # [1] valid frames of this utterance
ENSEMBLE_OUTPUTS = (SCORES, EMBEDDING, FRAME_SCORES, FRAME_EMBEDDING, NUM_FRAMES)

# The timeline: the segments model (Python; e2v_common.segmenter and Silero VAD inside) cuts a recording
# into speech segments and scores each as an utterance through the ensemble. A recording longer than one
# request may hold goes in pieces: AUDIO [1, N] float32 16 kHz is one piece, and STATE [1] bytes the state
# the previous piece's response gave (absent for the first piece; JSON text), sent back unchanged. Per
# segment closed in this piece: its times, and the scores and embedding of its samples scored alone.
SEGMENTS_MODEL = "emotion2vec_segments"
SEGMENTS_AUDIO = PREPROCESS_INPUT
SEGMENTS_STATE = "STATE"  # input and output
SEGMENT_TIMES = "SEGMENT_TIMES"  # [S, 2] float64: start and end, in seconds from the recording's start
SEGMENT_SCORES = "SEGMENT_SCORES"  # [S, L]
SEGMENT_EMBEDDING = "SEGMENT_EMBEDDING"  # [S, D]
RESUME_AT = "RESUME_AT"  # [1] int64: the sample of the recording the next piece starts at; -1 after the last
SEGMENTS_OUTPUTS = (SEGMENT_TIMES, SEGMENT_SCORES, SEGMENT_EMBEDDING, SEGMENTS_STATE, RESUME_AT)
# Request parameters of the segments model: LAST_PIECE (bool, default true: the whole recording in one
# request) and the segmentation's options (the fields of e2v_common.segmenter.SegmentOptions, in seconds).
PARAM_LAST_PIECE = "last_piece"
# ... and SCORED_BY: the ensemble that scores the segments, ENSEMBLE_MODEL (the default) or BULK_ENSEMBLE_MODEL
PARAM_SCORED_BY = "scored_by"
VAD_FILE = "vad.onnx"  # Silero VAD, in the segments and stream models' version folders

# Live streams: the stream model (Python, decoupled, Triton's sequence batcher) takes a recording as it is
# spoken, on a gRPC stream (stream_infer): one chunk per request, AUDIO [1, N] float32 16 kHz, the stream's
# correlation ID on each, START on the first chunk, END on the last. Every chunk gets exactly one response, in
# order, with the segments outputs above: the segments that chunk closed and, with every segment, every
# PARAM_ACK_SECONDS of audio and never on the last, STATE and RESUME_AT (else empty and -1). To go on after a
# lost connection or a restart, a new stream's first chunk carries that STATE and the audio from RESUME_AT on.
# The first chunk's request parameters are the segmentation's options, as for the segments model.
STREAM_MODEL = "emotion2vec_stream"
# Settings of the stream model, string parameters of its config (e2v-export's options).
PARAM_MAX_CHUNK_SECONDS = "max_chunk_seconds"  # the longest chunk a request may hold
PARAM_MAX_STREAMS = "max_streams"  # live streams per instance; more are refused (UNAVAILABLE)
PARAM_MAX_BACKLOG_SECONDS = "max_backlog_seconds"  # a stream with more audio waiting is refused and dropped
PARAM_ACK_SECONDS = "ack_seconds"  # a STATE at least this often, in audio
# the most audio one stream takes; then it is refused (UNAVAILABLE) and the client goes on in a new stream from
# its last STATE, as after a restart. The gateway's per-stream size limit is sized from it.
PARAM_MAX_STREAM_SECONDS = "max_stream_seconds"

# Model identity, carried as string parameters of the ensemble's config.pbtxt
# so that a client can read it with get_model_config().
PARAM_LABELS = "labels"  # comma-separated display names, in score order
PARAM_EMBEDDING_DIM = "embedding_dim"
PARAM_SAMPLE_RATE = "sample_rate"
PARAM_FRAMES_PER_SECOND = "frames_per_second"
PARAM_MAX_SECONDS = "max_seconds"
PARAM_MODEL_NAME = "model_name"
PARAM_RANDOM_WEIGHTS = "random_weights"  # "true" for test checkpoints: predictions are meaningless
PARAM_PRECISION = "precision"  # the encoder's: fp32, bf16 or int8 (also in the portable encoder's config)
PARAM_RUNTIME = "runtime"  # the encoder's: onnxruntime or openvino (also in the portable models' configs)
PARAM_BULK_ENSEMBLE = "bulk_ensemble"  # where bulk requests go: BULK_ENSEMBLE_MODEL, or empty without a bulk lane
# Serving settings, carried as string parameters of the Python models' configs.
PARAM_PAD_MULTIPLE = "pad_to_multiple_of_samples"  # preprocess: padded batch length, a multiple of this
PARAM_THREADS = "intra_op_threads"  # portable encoder/classifier: ONNX Runtime threads (0: one per core)
PARAM_NICENESS = "niceness"  # portable encoder: its process's CPU niceness (0, or BULK_NICENESS in the bulk lane)
PARAM_MAX_PADDING_RATIO = "max_padding_ratio"  # portable: longest row of a group <= this x the shortest
PARAM_MAX_RUN_STEPS = "max_run_steps"  # portable: rows x longest row of a group <= this (a longer row runs alone)
PARAM_LENGTH_BUCKET = "length_bucket"  # portable: each row is cut to its length rounded up to a multiple of this
# Portable encoder/classifier: each step of a sequence output sees STEP_WINDOW input steps, STEP_HOP apart
# (the encoder: FRAME_RECEPTIVE_FIELD and FRAME_HOP samples; the classifier: 1 and 1 frame).
PARAM_STEP_WINDOW = "output_step_window"
PARAM_STEP_HOP = "output_step_hop"

# export_onnx()'s two files, before they are put in the repository
ENCODER_ONNX = "encoder.onnx"
CLASSIFIER_ONNX = "classifier.onnx"
# Files in a model's version folder (model_repository/<model>/1/).
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"  # OpenVINO IR (with model.bin beside it)
PLAN_FILE = "model.plan"  # TensorRT engine (native flavour with --tensorrt)


def model_file(version_dir: Path, runtime: str) -> Path:
    """The file a runtime opens in a model's version folder: OpenVINO's IR if there is one, else the ONNX file."""
    ir = Path(version_dir) / OPENVINO_FILE
    return ir if runtime == "openvino" and ir.exists() else Path(version_dir) / ONNX_FILE


def string_parameters(config: dict) -> dict[str, str]:
    """The string parameters of a model config (Triton's JSON form) as {key: value}."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


# --- labels ---------------------------------------------------------------
UNUSED_LABEL_PREFIX = "unuse"  # older tokens.txt files carry placeholder labels
UNKNOWN_TOKEN = "<unk>"


def read_tokens(path: str | Path) -> list[str]:
    """The raw tokens of a checkpoint's tokens.txt, one per line, read as FunASR reads them."""
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip() for line in f]
    if not tokens:
        raise ValueError(f"{path} holds no labels")
    return tokens


def label_name(token: str) -> str:
    """The lower-case English label of a token: '生气/angry' -> 'angry', '<unk>' -> 'unknown'."""
    if token == UNKNOWN_TOKEN:
        return "unknown"
    return token.rsplit("/", 1)[-1].strip().lower()


def is_unused_label(token: str) -> bool:
    """FunASR masks these (logit -inf) and leaves them out of its results."""
    return token.startswith(UNUSED_LABEL_PREFIX)


# --- frames and normalisation ---------------------------------------------
def output_steps(input_steps, window: int, hop: int):
    """Steps of a sequence output whose steps each see `window` input steps, `hop` apart (0 if too short).

    Works on ints and on numpy integer arrays.
    """
    n = np.asarray(input_steps, dtype=np.int64)
    steps = np.where(n >= window, (n - window) // hop + 1, 0)
    return int(steps) if steps.ndim == 0 else steps


def frames_for_samples(num_samples):
    """Encoder frames for a waveform of num_samples (0 when it is shorter than one frame)."""
    return output_steps(num_samples, FRAME_RECEPTIVE_FIELD, FRAME_HOP)


def check_waveform(samples: np.ndarray, max_seconds: float | None = None) -> None:
    """Raise ValueError, with a message a user can act on, for audio the model cannot score."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"expected one mono waveform (1-D), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("the audio is empty (0 samples)")
    if x.size < FRAME_RECEPTIVE_FIELD:
        raise ValueError(
            f"the audio is too short: {x.size} samples ({x.size / SAMPLE_RATE * 1000:.1f} ms); "
            f"the model needs at least {FRAME_RECEPTIVE_FIELD} samples "
            f"({FRAME_RECEPTIVE_FIELD / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE} Hz)"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("the audio holds NaN or infinite samples")
    if max_seconds is not None and x.size > max_seconds * SAMPLE_RATE:
        raise ValueError(f"the audio is too long: {x.size / SAMPLE_RATE:.1f} s; the maximum is {max_seconds:g} s")


def normalize_waveform(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit (biased) variance over one whole utterance, as FunASR does.

    Silence (all zeros) stays all zeros; the result is never NaN for finite input.
    """
    x = np.asarray(samples, dtype=np.float32)
    mean = x.mean(dtype=np.float64)
    var = np.square(x - mean, dtype=np.float64).mean()
    return ((x - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)


# --- batching ---------------------------------------------------------------
def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def pad_rows(rows: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad rows [n_i, ...] along their first axis into one batch [B, length, ...], and their lengths [B].

    length: the longest row if not given.
    """
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    length = int(lengths.max()) if length is None else length
    batch = np.zeros((len(rows), length) + rows[0].shape[1:], dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch, lengths


def length_groups(lengths: list[int], max_ratio: float, max_size: int, max_steps: int) -> list[list[int]]:
    """Indices grouped so that in each group max length <= max_ratio * min length, and the group padded to its
    longest row holds at most max_steps steps (a longer row is a group alone); sorted, greedy.

    On a CPU, padding is wasted compute: rows are run in groups of similar length. The working memory of a
    run grows with rows x length (and attention with length squared): with max_steps the length of one
    maximum-length request, no run needs more than that request alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if (
            groups
            and len(groups[-1]) < max_size
            and lengths[i] <= max_ratio * lengths[groups[-1][0]]
            and (len(groups[-1]) + 1) * lengths[i] <= max_steps  # sorted: row i is the group's longest
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
