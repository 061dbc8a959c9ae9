"""`e2v-export --tune`: measure the encoder's candidates on this machine and serve the fastest that holds its bar.

As TensorRT's builder times its tactics on the GPU it builds for, the tuner times each runtime and precision
this CPU can run (ONNX Runtime fp32; OpenVINO fp32; OpenVINO bf16 where the CPU has native bf16; ONNX Runtime
int8, dynamic and static QDQ; OpenVINO int8 through NNCF) on a short fixed workload, and measures its accuracy
against ONNX Runtime fp32 (the reference, at parity with FunASR) on the user's audio (--evaluate) or on a
built-in synthetic set. Each candidate that holds its accuracy bar is timed again in each layout of several
instances (instances x threads); it picks the fastest candidate and layout, and writes the whole table into the
repository as encoder/tuning.json. Every candidate runs outside Triton through e2v_export.runner, the same runtime
code the served models run.

Honest defaults: int8 is chosen only on the user's own audio and a real checkpoint (random weights say little
about quantization on the real model); without --evaluate the int8 candidates are not measured at all.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from e2v_common import contract
from e2v_common.cpu import REPORTED_FLAGS, CpuInfo
from e2v_common.runtimes import BF16_FLAGS, VNNI_FLAGS
from e2v_common.synthetic_speech import speech_like
from e2v_export.checkpoint import LoadedCheckpoint
from e2v_export.compare import Agreement, agreement, compare
from e2v_export.onnx_export import ExportResult, export_onnx
from e2v_export.repository import (
    RepositoryOptions,
    conv_as_matmul,
    is_random_checkpoint,
    quantized_encoder,
    write_repository,
)
from e2v_export.runner import Emotion2vecRunner, run_all, speed

# The fixed speed workload (seconds of synthetic speech) and the built-in accuracy set.
SPEED_CLIPS_S = (5.0, 15.0)
MIN_TIMED_S = 2.0  # small checkpoints pass over the speed clips again until this much time is measured
ACCURACY_CLIPS_S = (1.0, 2.0, 4.0, 7.0, 12.0, 20.0)
# The user's audio (--evaluate): at most this many clips, each cut to this length, so the tuning stays bounded.
MAX_USER_CLIPS = 16
MAX_USER_CLIP_S = 20.0
# Static int8 calibrates on every other clip of the user's audio (and is judged on the rest) when there are
# at least this many, else on the built-in calibration clips.
MIN_CLIPS_TO_SPLIT = 4
# A layout of several instances must serve this much faster than one instance of all cores to be chosen:
# each instance holds its own copy of the model (large: about 0.7 GB more) and serves one request slower.
LAYOUT_MIN_GAIN = 1.10
# Candidates are measured in order while the tuning has run less than this; the rest are listed as not measured.
BUDGET_S = 300.0


@dataclass(frozen=True)
class Bar:
    """An accuracy bar against ONNX Runtime fp32: what a candidate must hold to be chosen."""

    min_argmax_agreement: float = 0.0
    min_embedding_cosine: float = 0.0
    min_frame_cosine: float = 0.0
    max_score_diff: float = math.inf

    def misses(self, result: Agreement) -> list[str]:
        """What of the bar `result` misses, in words; [] when it holds."""
        checks = [
            (result.argmax_agreement >= self.min_argmax_agreement, "argmax agreement", self.min_argmax_agreement),
            (result.min_embedding_cosine >= self.min_embedding_cosine, "embedding cosine", self.min_embedding_cosine),
            (result.min_frame_cosine >= self.min_frame_cosine, "per-frame cosine", self.min_frame_cosine),
        ]
        missed = [f"{name} < {bound:g}" for held, name, bound in checks if not held]
        if result.max_score_diff > self.max_score_diff:
            missed.append(f"scores max |diff| > {self.max_score_diff:g}")
        return missed


BARS = {
    # another fp32 runtime must give the reference's numbers up to rounding
    "fp32": Bar(min_argmax_agreement=1.0, min_frame_cosine=0.99999, max_score_diff=1e-4),
    "bf16": Bar(min_argmax_agreement=0.99, min_frame_cosine=0.9999, max_score_diff=2e-3),
    "int8": Bar(min_argmax_agreement=0.98, min_embedding_cosine=0.995),
}


@dataclass(frozen=True)
class Candidate:
    runtime: str
    precision: str
    quantization: str = ""  # int8: dynamic or static

    @property
    def name(self) -> str:
        how = {"dynamic": " dynamic", "static": " static (NNCF)" if self.runtime == "openvino" else " static (QDQ)"}
        return f"{self.runtime} {self.precision}{how.get(self.quantization, '')}"

    def options(self) -> dict:
        """The RepositoryOptions fields that serve this candidate."""
        return {"runtime": self.runtime, "precision": self.precision, "quantization": self.quantization or "dynamic"}


REFERENCE = Candidate("onnxruntime", "fp32")


def candidates(cpu: CpuInfo) -> list[Candidate]:
    """Every encoder this CPU can run, the reference first."""
    found = [REFERENCE, Candidate("openvino", "fp32")]
    if cpu.bf16:
        found.append(Candidate("openvino", "bf16"))
    found += [
        Candidate("onnxruntime", "int8", "dynamic"),
        Candidate("onnxruntime", "int8", "static"),
        Candidate("openvino", "int8", "static"),
    ]
    return found


def requirement(candidate: Candidate, cpu: CpuInfo) -> dict | None:
    """What a served candidate needs of the CPU ({"flags": any of these, "for": why}), or None."""
    if candidate.precision == "bf16":
        return {"flags": list(BF16_FLAGS), "for": "bf16 dot products: without them OpenVINO computes fp32"}
    if candidate.precision == "int8" and cpu.vnni:  # quantized with full 8-bit weights (quantize.py)
        return {"flags": list(VNNI_FLAGS), "for": "int8 with full 8-bit weights: without VNNI its sums saturate"}
    return None


def native_backend(candidate: Candidate) -> str | None:
    """The Triton backend that serves a candidate in the native flavour (NVIDIA's container), or None."""
    if candidate.runtime == "onnxruntime":
        return "onnxruntime"
    if candidate.precision == "bf16":
        return "openvino (HINT_BF16)"
    return None  # Triton's openvino backend cannot be held to fp32, and NNCF's IR is untested there


def exclusion(candidate: Candidate, user_audio: bool, random_weights: bool, flavour: str) -> str:
    """Why a candidate may not be chosen, or "" when it may."""
    if flavour == "native" and native_backend(candidate) is None:
        return "no Triton backend of the native flavour serves it (openvino there is bf16 only)"
    if candidate.precision == "int8" and not user_audio:
        return "int8 is chosen only on your own audio (--evaluate DIR)"
    if candidate.precision == "int8" and random_weights:
        return "random weights say little about quantization on the real model"
    return ""


@dataclass
class Measured:
    candidate: Candidate
    excluded: str = ""  # why it may not be chosen ("" when it may)
    audio_seconds_per_second: float | None = None  # one instance of all cores, on the speed workload
    accuracy: dict | None = None  # e2v_export.compare.Agreement against the reference, as a dict
    misses: list[str] = field(default_factory=list)  # what of its bar it misses
    not_measured: str = ""  # why it was not measured (or the error that stopped it)
    setup_seconds: float = 0.0  # export, quantization and loading
    # audio seconds per second in each other layout {(instances, threads each): speed}, measured when eligible
    layouts: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.accuracy is not None and not self.misses

    @property
    def eligible(self) -> bool:
        return self.holds and not self.excluded and self.audio_seconds_per_second is not None


def choose(measured: list[Measured], cores: int) -> tuple[Measured, tuple[int, int]]:
    """The fastest eligible candidate and layout. One instance of all cores, unless a layout of several instances
    serves at least LAYOUT_MIN_GAIN times faster than the fastest single instance (the reference is always
    eligible: it is fp32 at parity)."""
    eligible = [m for m in measured if m.eligible]
    if not eligible:
        raise RuntimeError("--tune: no candidate could be measured, not even ONNX Runtime fp32")
    single = max(eligible, key=lambda m: m.audio_seconds_per_second)
    pairs = [(m, layout, s) for m in eligible for layout, s in m.layouts.items()]
    best = max(pairs, key=lambda pair: pair[2], default=None)
    if best and best[2] >= LAYOUT_MIN_GAIN * single.audio_seconds_per_second:
        return best[0], best[1]
    return single, (1, cores)


def layouts(cores: int) -> list[tuple[int, int]]:
    """(instances, threads each) that fill the cores: one instance of all, one per core, and two halves."""
    found = [(1, cores)]
    if cores > 1:
        found.append((cores, 1))
    if cores >= 4:
        found.append((2, cores // 2))
    return found


@dataclass
class AudioSets:
    accuracy: list[np.ndarray]
    calibration: list[np.ndarray] | None  # None: the built-in calibration clips
    described: str


def audio_sets(audio_paths: list[str] | None) -> AudioSets:
    """The accuracy set (and the static int8 calibration set): the user's audio, or the built-in one."""
    if not audio_paths:
        clips = [speech_like(s, seed=500 + i) for i, s in enumerate(ACCURACY_CLIPS_S)]
        return AudioSets(clips, None, f"built-in: {len(clips)} synthetic speech-like clips of 1-20 s")
    from e2v_client import audio
    from e2v_client.batch import expand_inputs

    clips = []
    for path in expand_inputs(audio_paths)[:MAX_USER_CLIPS]:
        try:
            clip = audio.load(path)
            audio.check_not_silent(clip)
            clips.append(clip.samples[: int(MAX_USER_CLIP_S * contract.SAMPLE_RATE)])
        except audio.AudioError as exc:  # named, then left out: the other clips still judge the candidates
            print(f"--tune: skipped {path}: {exc}", flush=True)
    clips = [clip for clip in clips if len(clip) >= contract.FRAME_RECEPTIVE_FIELD]
    if not clips:
        raise ValueError("--tune: no audio file could be decoded in " + ", ".join(audio_paths))
    if len(clips) >= MIN_CLIPS_TO_SPLIT:
        judged, calibration = clips[0::2], clips[1::2]
        described = f"your audio: {len(judged)} clips (static int8 calibrated on {len(calibration)} others)"
        return AudioSets(judged, calibration, described)
    return AudioSets(clips, None, f"your audio: {len(clips)} clips (static int8 calibrated on built-in clips)")


@dataclass
class Tuning:
    """The tuner's outcome: the choice, its model files (in the tuner's folder) and the report (tuning.json)."""

    choice: Candidate
    layout: tuple[int, int]
    model_files: dict[str, Path]
    report: dict


class Tuner:
    def __init__(self, checkpoint: LoadedCheckpoint, cpu: CpuInfo, workdir: Path, flavour: str = "portable"):
        self.checkpoint, self.cpu, self.workdir, self.flavour = checkpoint, cpu, Path(workdir), flavour
        self.random_weights = is_random_checkpoint(checkpoint.model_dir)
        self.speed_clips = [speech_like(s, seed=900 + i) for i, s in enumerate(SPEED_CLIPS_S)]
        self.exports: dict[bool, ExportResult] = {}  # the ONNX export, by whether its conv front-end is MatMuls
        self.files: dict[Candidate, dict[str, Path]] = {}
        self.log = print

    def tune(self, audio_paths: list[str] | None = None) -> Tuning:
        start = time.perf_counter()
        sets = audio_sets(audio_paths)
        user_audio = bool(audio_paths)
        measured, reference = [], None
        for candidate in candidates(self.cpu):
            result = Measured(candidate, exclusion(candidate, user_audio, self.random_weights, self.flavour))
            if candidate.precision == "int8" and not user_audio:
                result.not_measured = "int8 is measured only on your own audio (--evaluate DIR)"
            elif time.perf_counter() - start > BUDGET_S:
                result.not_measured = f"the tuning's time budget ({BUDGET_S:.0f} s) ran out"
            else:
                self.log(f"--tune: measuring {candidate.name} ...", flush=True)
                reference = self.measure(result, sets, reference)
            measured.append(result)
        for result in measured:
            if result.eligible:
                result.layouts = self.layout_speeds(result.candidate)
        chosen, layout = choose(measured, self.cpu.cores)
        report = self.report(measured, chosen, layout, sets, time.perf_counter() - start)
        return Tuning(chosen.candidate, layout, self.files[chosen.candidate], report)

    def model_files(self, candidate: Candidate, calibration) -> dict[str, Path]:
        """The candidate's model files in the tuner's folder: the ONNX export of its kind (made once), quantized
        for int8."""
        if candidate not in self.files:
            options = candidate.options()
            matmuls = conv_as_matmul(candidate.precision, candidate.runtime)
            if matmuls not in self.exports:
                self.exports[matmuls] = export_onnx(self.checkpoint, self.workdir / f"onnx-{matmuls}", matmuls)
            exported = self.exports[matmuls]
            out = self.workdir / candidate.name.replace(" ", "-").replace("(", "").replace(")", "")
            encoder = quantized_encoder(
                exported.encoder_path, out, candidate.precision, candidate.runtime, options["quantization"], calibration
            )
            self.files[candidate] = {
                contract.ENCODER_MODEL: encoder,
                contract.CLASSIFIER_MODEL: exported.classifier_path,
            }
        return self.files[candidate]

    def runner(self, candidate: Candidate, threads: int, calibration=None) -> Emotion2vecRunner:
        files = self.model_files(candidate, calibration)
        return Emotion2vecRunner(
            files[contract.ENCODER_MODEL], files[contract.CLASSIFIER_MODEL], threads,
            candidate.runtime, candidate.precision,
        )  # fmt: skip

    def measure(self, result: Measured, sets: AudioSets, reference: list | None) -> list:
        """Fill `result` with the candidate's speed and accuracy; returns the reference's outputs."""
        candidate = result.candidate
        try:
            began = time.perf_counter()
            runner = self.runner(candidate, self.cpu.cores, sets.calibration)
            result.setup_seconds = time.perf_counter() - began
            result.audio_seconds_per_second = speed([runner], self.speed_clips, MIN_TIMED_S)
            outputs = run_all(runner, sets.accuracy)
        except Exception as exc:  # a runtime or quantizer that fails here is reported, not fatal
            result.not_measured = f"failed: {type(exc).__name__}: {exc}"[:300]
            return reference
        reference = outputs if reference is None else reference
        pairs = zip(outputs, reference, sets.accuracy, strict=True)
        diffs = [compare(ours, theirs, len(clip) / contract.SAMPLE_RATE) for ours, theirs, clip in pairs]
        summary = agreement(diffs)
        result.accuracy = asdict(summary)
        result.misses = BARS[candidate.precision].misses(summary)
        return reference

    def layout_speeds(self, candidate: Candidate) -> dict[tuple[int, int], float]:
        """Audio seconds per second of each layout of several instances serving `candidate`, all at once (one
        instance of all cores is the candidate's own speed)."""
        speeds = {}
        # native: Triton's own backends map instances and threads differently (OpenVINO's threads are the whole
        # model's, shared by its streams), so only one instance of all cores is measured and served
        other_layouts = layouts(self.cpu.cores)[1:] if self.flavour == "portable" else []
        for instances, threads in other_layouts:
            self.log(f"--tune: {candidate.name} as {instances} instances x {threads} threads ...", flush=True)
            runners = [self.runner(candidate, threads) for _ in range(instances)]
            speeds[(instances, threads)] = speed(runners, self.speed_clips, MIN_TIMED_S)
        return speeds

    def report(self, measured, chosen, layout, sets: AudioSets, seconds: float) -> dict:
        instances, threads = layout
        served_by = "" if self.flavour == "portable" else " and that a native Triton backend serves"
        layout_why = (
            f"at least {LAYOUT_MIN_GAIN:.2f}x one instance of all cores"
            if layout != (1, self.cpu.cores)
            else f"no layout of several instances was {LAYOUT_MIN_GAIN:.2f}x faster"
        )
        why = (
            f"the fastest of the candidates that hold their accuracy bar{served_by}; "
            f"{instances} instance(s) x {threads} thread(s): {layout_why}"
        )
        return {
            "cpu": {
                "model": self.cpu.model,
                "vendor": self.cpu.vendor,
                "cores": self.cpu.cores,
                "flags": sorted(flag for flag in REPORTED_FLAGS if flag in self.cpu.flags),
            },
            "checkpoint": str(self.checkpoint.model_dir),
            "random_weights": self.random_weights,
            "flavour": self.flavour,
            "accuracy_set": sets.described,
            "speed_workload": f"synthetic speech-like clips of {', '.join(f'{s:g}' for s in SPEED_CLIPS_S)} s, "
            "one at a time, after a warm-up pass",
            "bars": {precision: asdict(bar) for precision, bar in BARS.items()},
            "candidates": [
                {
                    "name": m.candidate.name,
                    **m.candidate.options(),
                    "audio_seconds_per_second": m.audio_seconds_per_second,
                    "accuracy": m.accuracy,
                    "holds_bar": m.holds,
                    "misses": m.misses,
                    "excluded": m.excluded,
                    "not_measured": m.not_measured,
                    "setup_seconds": round(m.setup_seconds, 1),
                    "native_backend": native_backend(m.candidate),
                    "layouts": [
                        {"instances": i, "threads": t, "audio_seconds_per_second": s} for (i, t), s in m.layouts.items()
                    ],
                }
                for m in measured
            ],
            "choice": {
                "name": chosen.candidate.name,
                **chosen.candidate.options(),
                "encoder_instances": instances,
                "threads": threads,
                "native_backend": native_backend(chosen.candidate),
                "requires": requirement(chosen.candidate, self.cpu),
            },
            "why": why,
            "seconds": round(seconds, 1),
        }


def table(report: dict) -> str:
    """The tuning report as the lines e2v-export prints."""
    lines = [
        f"--tune on {report['cpu']['model']} ({report['cpu']['cores']} cores; {' '.join(report['cpu']['flags'])}); "
        f"accuracy on {report['accuracy_set']}",
        f"{'candidate':<34} {'audio s/s':>9} {'argmax':>7} {'emb cos':>9} {'frame cos':>9} {'scores |d|':>10}  verdict",
    ]
    for c in report["candidates"]:
        a = c["accuracy"]
        speed_text = f"{c['audio_seconds_per_second']:.2f}" if c["audio_seconds_per_second"] else "-"
        numbers = (
            f"{a['argmax_agreement']:>7.1%} {a['min_embedding_cosine']:>9.6f} {a['min_frame_cosine']:>9.6f} "
            f"{a['max_score_diff']:>10.2e}"
            if a
            else f"{'-':>7} {'-':>9} {'-':>9} {'-':>10}"
        )
        verdict = c["not_measured"] or ("misses " + ", ".join(c["misses"]) if c["misses"] else "holds its bar")
        if c["excluded"] and not c["not_measured"]:
            verdict += f"; not chosen: {c['excluded']}"
        chosen = "  <- chosen" if c["name"] == report["choice"]["name"] else ""
        lines.append(f"{c['name']:<34} {speed_text:>9} {numbers}  {verdict}{chosen}")
    for c in report["candidates"]:
        for layout in c["layouts"]:
            speed_text = f"{layout['audio_seconds_per_second']:.2f} audio s/s"
            lines.append(f"{c['name']} as {layout['instances']} instances x {layout['threads']} threads: {speed_text}")
    choice = report["choice"]
    lines.append(
        f"--tune: chose {choice['name']}, {choice['encoder_instances']} x {choice['threads']} threads "
        f"({report['why']}); tuning took {report['seconds']:.0f} s"
    )
    return "\n".join(lines)


def export_tuned(
    checkpoint: LoadedCheckpoint,
    out: str | Path,
    options: RepositoryOptions,
    audio_paths: list[str] | None = None,
    cpu: CpuInfo | None = None,
    log=print,
) -> Path:
    """Tune on this machine, then write the repository with the choice and its tuning.json; prints the table."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".tune-") as workdir:
        tuner = Tuner(checkpoint, cpu or CpuInfo.this_machine(), Path(workdir), options.flavour)
        tuner.log = log
        tuning = tuner.tune(audio_paths)
        log(table(tuning.report))
        chosen = tuning.choice.options()
        options.runtime, options.precision = chosen["runtime"], chosen["precision"]
        options.quantization = chosen["quantization"]
        options.encoder_instances, options.threads = tuning.layout
        return write_repository(checkpoint, out, options, tuning.model_files, tuning.report)
