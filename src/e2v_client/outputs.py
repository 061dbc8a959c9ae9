"""The standard outputs directory (../shared/outputs-spec.md), written so that nothing is lost.

One folder per scored input: outputs_YYYYMMDD_HHMMSS[_N]/ with processed_audio.wav,
result.json and, when asked, embedding.npy. A folder is written under a hidden
temporary name and renamed into place when complete, so a folder whose name
starts with "outputs_" is always complete; --resume relies on that.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from e2v_client.audio import Clip, write_wav
from e2v_client.client import Prediction

FOLDER_PREFIX = "outputs_"
RESULT_FILE = "result.json"
AUDIO_FILE = "processed_audio.wav"
EMBEDDING_FILE = "embedding.npy"
SUMMARY_COLUMNS = ("folder", "source_file", "emotion", "confidence", "timestamp", "duration", "status", "error")

_naming_lock = threading.Lock()  # folder names are chosen one at a time within a process


def result_json(
    prediction: Prediction,
    granularity: str,
    scored_at: datetime,
    clip: Clip,
    source: str | None,
    model: str,
    random_weights: bool,
    frames_per_second: float,
) -> dict:
    def as_dict(values):
        return {label: round(float(v), 6) for label, v in zip(prediction.labels, values, strict=True)}

    result = {
        "emotion": prediction.emotion,
        "confidence": round(prediction.confidence, 6),
        "scores": as_dict(prediction.scores)
        if granularity == "utterance"
        else [as_dict(f) for f in prediction.frame_scores],
        "granularity": granularity,
        "timestamp": scored_at.strftime("%Y-%m-%d %H:%M:%S"),
        # extras (allowed by the spec)
        "source_file": source,
        "duration": round(clip.seconds, 3),
        "model": model,  # name (runtime precision)
    }
    if granularity == "frame":
        result["utterance_scores"] = as_dict(prediction.scores)
        result["frames_per_second"] = frames_per_second
    if prediction.windows > 1:
        result["windows"] = prediction.windows
    if random_weights:
        result["warning"] = "random-weight test checkpoint: these predictions are meaningless"
    return result


def write_folder(
    root: str | Path,
    clip: Clip,
    prediction: Prediction,
    granularity: str,
    embedding: bool,
    source: str | None,
    model: str,
    random_weights: bool = False,
    frames_per_second: float = 50.0,
) -> Path:
    """Write one complete outputs folder and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scored_at = datetime.now()
    staging = Path(tempfile.mkdtemp(prefix=".partial_", dir=root))
    try:
        write_wav(staging / AUDIO_FILE, clip)
        if embedding:
            array = prediction.embedding if granularity == "utterance" else prediction.frame_embedding
            np.save(staging / EMBEDDING_FILE, np.asarray(array, dtype=np.float32))
        result = result_json(prediction, granularity, scored_at, clip, source, model, random_weights, frames_per_second)
        (staging / RESULT_FILE).write_text(json.dumps(result, ensure_ascii=False, indent=2), "utf-8")
        return _publish(staging, root, scored_at)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def completed_sources(root: str | Path, granularity: str, embedding: bool) -> dict[str, Path]:
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
    status: str = "scored"  # scored, skipped (already done, --resume) or failed
    error: str = ""


def write_summary(root: str | Path, rows: list[SummaryRow], started: datetime) -> Path:
    """summary_YYYYMMDD_HHMMSS[_N].csv in root; never overwrites the summary of another run."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base, n = f"summary_{started.strftime('%Y%m%d_%H%M%S')}", 1
    while True:
        path = root / (f"{base}.csv" if n == 1 else f"{base}_{n}.csv")
        try:
            f = open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115  (exclusive: fails if the name is taken)
            break
        except FileExistsError:
            n += 1
    with f:
        writer = csv.writer(f)
        writer.writerow(SUMMARY_COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, column) for column in SUMMARY_COLUMNS])
    return path
