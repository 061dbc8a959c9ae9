"""The model repository that `make run` and `make web` serve: exported once, and again when the code changed.

The model: E2V_MODEL_DIR if set (a local emotion2vec+ directory), else the real emotion2vec+ large
from the model hub when it can be reached, else a random-weight checkpoint of the real architecture
(its predictions are meaningless; a warning says so). A repository written by other code than this
checkout's (its export stamp carries a hash of the templates and export code) is exported again from
the checkpoint it came from. The export is tuned to this machine (e2v-export --tune, without int8: that
needs your own audio): the fastest encoder that holds its accuracy bar here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from e2v_export.checkpoint import HUB_MODEL, CheckpointError, LoadedCheckpoint, load_checkpoint
from e2v_export.repository import RepositoryOptions, code_fingerprint, read_stamp
from e2v_export.tune import export_tuned
from e2v_server import contract


def ensure_repository(repository: Path, cache: Path) -> None:
    """Export `repository` unless it is there and was written by this code; random checkpoints go in `cache`."""
    stamp = read_stamp(repository)
    if (repository / contract.ENSEMBLE_MODEL / "config.pbtxt").exists():
        if stamp and stamp["code"] == code_fingerprint():
            print(f"run: using the model repository in {repository} (delete it to export again)")
            return
        print(f"run: {repository} was exported by other code than this checkout's: exporting again")
    model = os.environ.get("E2V_MODEL_DIR")
    if not model and stamp and Path(stamp["checkpoint"]).is_dir():
        model = stamp["checkpoint"]  # the checkpoint the stale repository came from
    checkpoint = load_checkpoint(model) if model else hub_or_random_checkpoint(cache)
    print(f"run: exporting {checkpoint.model_dir} to {repository}, tuned to this machine ...", flush=True)
    export_tuned(checkpoint, repository, RepositoryOptions())  # the fastest encoder that holds its bar here


def hub_or_random_checkpoint(cache: Path) -> LoadedCheckpoint:
    try:
        return load_checkpoint(HUB_MODEL)
    except CheckpointError as exc:
        print(
            f"run: WARNING: {exc}\nrun: WARNING: falling back to a RANDOM-WEIGHT checkpoint of the real "
            "emotion2vec+ large architecture: its predictions are meaningless. Set E2V_MODEL_DIR to a "
            "downloaded emotion2vec_plus_large folder for real results.",
            file=sys.stderr,
        )
    from e2v_export.random_checkpoint import make_test_checkpoint

    model_dir = cache / "checkpoints" / "large-random-seed0"
    if not (model_dir / "model.pt").exists():
        make_test_checkpoint("large", 0, model_dir)
    return load_checkpoint(model_dir)
