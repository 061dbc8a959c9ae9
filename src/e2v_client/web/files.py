"""What the page may read and write on disk, kept in one place so that it can be checked in one place.

The page reads only inside Gradio's upload area and zips only outputs folders inside the output root: a path
from the browser is never trusted. Its plots and zips live in a temporary work folder that keeps only the
latest runs (a long-running page would otherwise fill the disk) and is removed when e2v-web exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path

from e2v_client.outputs import FOLDER_PREFIX

KEEP_RUNS = 20  # plot and zip folders of the most recent runs kept in the work folder


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when path, with every symlink resolved, is root or lies under it."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):
        return False


def zip_folder(folder: Path, output_root: Path, zip_dir: Path) -> Path:
    """A zip of one outputs folder (its files under the folder's name); refuses anything outside the output root."""
    folder = Path(folder)
    if (
        folder.is_symlink()
        or not folder.is_dir()
        or not folder.name.startswith(FOLDER_PREFIX)
        or not is_inside(folder, output_root)
        or folder.resolve() == Path(output_root).resolve()
    ):
        raise ValueError(f"{folder} is not an outputs folder inside {output_root}")
    target = zip_dir / f"{folder.name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(folder.iterdir()):
            if item.is_file() and not item.is_symlink():
                archive.write(item, f"{folder.name}/{item.name}")
    return target


def make_work_dir() -> Path:
    """A fresh temporary work folder, removed when the process exits."""
    work_dir = Path(tempfile.mkdtemp(prefix="e2v-web-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    return work_dir


def new_run_dir(work_dir: Path, keep: int = KEEP_RUNS) -> Path:
    """A new folder for one run's plots and zips; the oldest runs beyond the latest `keep` are removed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = work_dir / f"run_{uuid.uuid4().hex[:12]}"
    run_dir.mkdir()
    return run_dir
