"""The standard outputs directory (../shared/outputs-spec.md), written so that nothing is lost.

One folder per scored input: outputs_YYYYMMDD_HHMMSS[_N]/ with processed_audio.wav,
result.json and, when asked, embedding.npy. A folder is written under a hidden
temporary name and renamed into place when complete, so a folder whose name
starts with "outputs_" is always complete; --resume relies on that.

At segment granularity result.json adds `segments` (start, end, emotion, confidence, scores of each speech
segment), its top-level emotion, confidence and scores are those of the segments' scores averaged with their
durations as weights, and embedding.npy holds one row per segment. A batch writes the segments of all its
files into segments_YYYYMMDD_HHMMSS.csv beside the summary.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from e2v_client.client import Prediction, Segment

FOLDER_PREFIX = "outputs_"
PARTIAL_PREFIX = ".partial_"  # a folder being written
RESULT_FILE = "result.json"
AUDIO_FILE = "processed_audio.wav"
EMBEDDING_FILE = "embedding.npy"
SUMMARY_COLUMNS = ("folder", "source_file", "emotion", "confidence", "timestamp", "duration", "status", "error")
SEGMENT_COLUMNS = ("file", "start", "end", "emotion", "confidence", "channel")
NO_SPEECH = "no speech"  # the status of a recording in which the segments model found no speech

_naming_lock = threading.Lock()  # folder names are chosen one at a time within a process


def result_json(
    prediction: Prediction,
    granularity: str,
    scored_at: datetime,
    seconds: float,
    source: str | None,
    model: str,
    random_weights: bool,
    frames_per_second: float,
    channels: str = "mix",
    broken: str | None = None,
) -> dict:
    def as_dict(values):
        return {label: round(float(v), 6) for label, v in zip(prediction.labels, values, strict=True)}

    result = {
        "emotion": prediction.emotion,
        "confidence": round(prediction.confidence, 6),
        "scores": [as_dict(f) for f in prediction.frame_scores]
        if granularity == "frame"
        else as_dict(prediction.scores),
        "granularity": granularity,
        "timestamp": scored_at.strftime("%Y-%m-%d %H:%M:%S"),
        # extras (allowed by the spec)
        "source_file": source,
        "duration": round(seconds, 3),
        "model": model,  # name (runtime precision)
    }
    if granularity == "frame":
        result["utterance_scores"] = as_dict(prediction.scores)
        result["frames_per_second"] = frames_per_second
    if granularity == "segment":
        result["segments"] = [segment_json(segment, prediction.labels) for segment in prediction.segments]
        if channels != "mix":
            result["channels"] = channels
        result["speech_seconds"] = round(sum(segment.seconds for segment in prediction.segments), 3)
        if not prediction.has_speech:
            result["status"] = NO_SPEECH
    if prediction.windows > 1:
        result["windows"] = prediction.windows
    if broken:
        result["incomplete"] = broken  # the file broke off: what decoded before the break is scored
    if random_weights:
        result["warning"] = "random-weight test checkpoint: these predictions are meaningless"
    return result


def segment_json(segment: Segment, labels: list[str]) -> dict:
    """One speech segment as result.json lists it and e2v-client --stream prints it (`labels`: those of its
    scores)."""
    return {
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "emotion": labels[int(np.argmax(segment.scores))],
        "confidence": round(float(np.max(segment.scores)), 6),
        "scores": {label: round(float(v), 6) for label, v in zip(labels, segment.scores, strict=True)},
    } | ({} if segment.channel is None else {"channel": segment.channel})


@contextmanager
def new_folder(root: str | Path) -> Iterator[Path]:
    """A folder to write an input's outputs into (hidden until finish_folder() publishes it); removed if the
    block fails. A long recording's processed_audio.wav is written into it while the recording is scored."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}_", dir=root))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_folder(
    staging: Path,
    prediction: Prediction,
    granularity: str,
    embedding: bool,
    seconds: float,
    source: str | None,
    model: str,
    random_weights: bool = False,
    frames_per_second: float = 50.0,
    channels: str = "mix",
    broken: str | None = None,
) -> Path:
    """Write result.json (and embedding.npy) beside processed_audio.wav and publish the folder; its path."""
    scored_at = datetime.now()
    if embedding:
        np.save(staging / EMBEDDING_FILE, embedding_array(prediction, granularity))
    result = result_json(
        prediction, granularity, scored_at, seconds, source, model, random_weights, frames_per_second, channels, broken
    )
    (staging / RESULT_FILE).write_text(json.dumps(result, ensure_ascii=False, indent=2), "utf-8")
    return _publish(staging, staging.parent, scored_at)


def embedding_array(prediction: Prediction, granularity: str) -> np.ndarray:
    """embedding.npy: (D,) for an utterance, (T, D) one row per frame, (S, D) one row per segment."""
    if granularity == "frame":
        return np.asarray(prediction.frame_embedding, dtype=np.float32)
    if granularity == "segment":
        rows = [segment.embedding for segment in prediction.segments]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(prediction.embedding))
    return np.asarray(prediction.embedding, dtype=np.float32)


def _publish(staging: Path, root: Path, scored_at: datetime) -> Path:
    """Rename the complete folder to the first free outputs_YYYYMMDD_HHMMSS[_N] name."""
    base = FOLDER_PREFIX + scored_at.strftime("%Y%m%d_%H%M%S")
    with _naming_lock:
        n = 1
        while True:
            target = root / (base if n == 1 else f"{base}_{n}")
            if not target.exists():
                try:
                    os.rename(staging, target)  # atomic; fails if another process took the name meanwhile
                    return target
                except OSError:
                    if not target.exists():
                        raise
            n += 1


def remove_abandoned(root: str | Path) -> list[Path]:
    """Remove the half-written folders of processes that are gone (a batch killed mid-file: a long recording's
    processed_audio.wav can be large); those of running processes are left alone. The folders removed."""
    removed = []
    for folder in Path(root).glob(f"{PARTIAL_PREFIX}*_*"):
        pid = folder.name.removeprefix(PARTIAL_PREFIX).split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def completed_sources(root: str | Path, granularity: str, embedding: bool, channels: str = "mix") -> dict[str, Path]:
    """{source file: folder} for inputs already scored with these settings (for --resume)."""
    done = {}
    for result_path in sorted(Path(root).glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}")):
        folder = result_path.parent
        try:
            result = json.loads(result_path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        complete = (
            result.get("granularity") == granularity
            and result.get("channels", "mix") == channels
            and (folder / AUDIO_FILE).is_file()
            and (folder / AUDIO_FILE).stat().st_size > 44
            and (not embedding or (folder / EMBEDDING_FILE).is_file())
        )
        if complete and result.get("source_file"):
            done[result["source_file"]] = folder
    return done


@dataclass
class SummaryRow:
    source_file: str
    folder: str = ""
    emotion: str = ""
    confidence: float | str = ""
    timestamp: str = ""
    duration: float | str = ""
    status: str = "scored"  # scored, no speech (segment granularity), skipped (already done, --resume) or failed
    error: str = ""


def write_summary(root: str | Path, rows: list[SummaryRow], started: datetime) -> Path:
    """summary_YYYYMMDD_HHMMSS[_N].csv in root; never overwrites the summary of another run."""
    return _write_csv(
        root, "summary", started, SUMMARY_COLUMNS, ([getattr(r, c) for c in SUMMARY_COLUMNS] for r in rows)
    )


def write_segments(root: str | Path, rows: list[SummaryRow], started: datetime) -> Path:
    """segments_YYYYMMDD_HHMMSS[_N].csv in root: one row per speech segment of each scored file, read back
    from the files' result.json (so that files skipped by --resume are in it too)."""
    lines = []
    for row in rows:
        if not row.folder:
            continue
        result = json.loads((Path(row.folder) / RESULT_FILE).read_text("utf-8"))
        lines += [
            [row.source_file, s["start"], s["end"], s["emotion"], s["confidence"], s.get("channel", "")]
            for s in result["segments"]
        ]
    return _write_csv(root, "segments", started, SEGMENT_COLUMNS, lines)


def _write_csv(root: str | Path, prefix: str, started: datetime, columns: tuple[str, ...], lines) -> Path:
    """PREFIX_YYYYMMDD_HHMMSS[_N].csv in root, never overwriting another run's."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base, n = f"{prefix}_{started.strftime('%Y%m%d_%H%M%S')}", 1
    while True:
        path = root / (f"{base}.csv" if n == 1 else f"{base}_{n}.csv")
        try:
            f = open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115  (exclusive: fails if the name is taken)
            break
        except FileExistsError:
            n += 1
    with f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(lines)
    return path
