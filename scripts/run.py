#!/usr/bin/env python
"""The main job for a newcomer (`make run`): export a model repository if there is none, start the
embedded Triton server, score the example audio, print where the outputs are, stop the server.

The model: E2V_MODEL_DIR if set (a local emotion2vec+ directory), else the real emotion2vec+ large
from the model hub when it can be reached, else a random-weight checkpoint of the real architecture
(its predictions are meaningless; a warning says so).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = Path(os.environ.get("E2V_REPOSITORY", ROOT / "model_repository"))
OUTPUTS = Path(os.environ.get("E2V_OUTPUT_DIR", ROOT / "outputs"))
CACHE = ROOT / ".cache"


def ensure_repository() -> None:
    from e2v_export.checkpoint import CheckpointError, load_checkpoint
    from e2v_export.random_checkpoint import make_test_checkpoint
    from e2v_export.repository import code_fingerprint, read_stamp, write_repository
    from e2v_server import contract

    stamp = read_stamp(REPOSITORY)
    if (REPOSITORY / contract.ENSEMBLE_MODEL / "config.pbtxt").exists():
        if stamp and stamp["code"] == code_fingerprint():
            print(f"run: using the model repository in {REPOSITORY} (delete it to export again)")
            return
        print(f"run: {REPOSITORY} was exported by other code than this checkout's: exporting again")
    model = os.environ.get("E2V_MODEL_DIR")
    if not model and stamp and Path(stamp["checkpoint"]).is_dir():
        model = stamp["checkpoint"]  # the checkpoint the stale repository came from
    if model:
        checkpoint = load_checkpoint(model)
    else:
        try:
            checkpoint = load_checkpoint("iic/emotion2vec_plus_large")
        except CheckpointError as exc:
            print(
                f"run: WARNING: {exc}\nrun: WARNING: falling back to a RANDOM-WEIGHT checkpoint of the real "
                "emotion2vec+ large architecture: its predictions are meaningless. Set E2V_MODEL_DIR to a "
                "downloaded emotion2vec_plus_large folder for real results.",
                file=sys.stderr,
            )
            model_dir = CACHE / "checkpoints" / "large-random-seed0"
            if not (model_dir / "model.pt").exists():
                make_test_checkpoint("large", 0, model_dir)
            checkpoint = load_checkpoint(model_dir)
    print(f"run: exporting {checkpoint.model_dir} to {REPOSITORY} ...", flush=True)
    write_repository(checkpoint, REPOSITORY)


def main() -> int:
    from e2v_client.cli import main as client_main
    from e2v_server.serve import TritonServer

    ensure_repository()
    CACHE.mkdir(exist_ok=True)
    log = CACHE / "triton.log"
    print("run: starting the embedded Triton server ...", flush=True)
    with TritonServer(REPOSITORY, log_file=log) as server:
        print(f"run: server READY in {server.startup_seconds:.1f} s at {server.grpc_url} (log: {log})", flush=True)
        code = client_main(
            [str(ROOT / "examples"), "--url", server.grpc_url, "--output-dir", str(OUTPUTS), "--embedding"]
        )
        print("run: stopping the server", flush=True)
    summary = sorted(OUTPUTS.glob("summary_*.csv"))[-1]
    with open(summary, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = Path(row["source_file"]).name
            print(f"  {name:<18} {row['emotion'] or row['error']:<10} {row['confidence']:<9} -> {row['folder']}")
    print(f"run: outputs are in {OUTPUTS}/ (one outputs_YYYYMMDD_HHMMSS folder per example clip)")
    return code


if __name__ == "__main__":
    sys.exit(main())
