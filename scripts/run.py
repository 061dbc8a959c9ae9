#!/usr/bin/env python
"""The main job for a newcomer, on the embedded Triton server, stopped again at the end.

    make run   (scripts/run.py)            score the example audio and print where the outputs are
    make web   (scripts/run.py web ARGS)   serve the web page (e2v-web ARGS) until Ctrl-C or SIGTERM

Both export a model repository first if there is none, or if it was written by other code than this
checkout's. The model: E2V_MODEL_DIR if set (a local emotion2vec+ directory), else the real emotion2vec+
large from the model hub when it can be reached, else a random-weight checkpoint of the real architecture
(its predictions are meaningless; a warning says so). A repository written by other code than this
checkout's (its export stamp carries a hash of the templates and export code) is exported again from the
checkpoint it came from. The export is tuned to this machine (e2v-export --tune, without int8: that needs
your own audio). E2V_REPOSITORY and E2V_OUTPUT_DIR move the repository (model_repository/) and the outputs
(outputs/).
"""

from __future__ import annotations

import csv
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = Path(os.environ.get("E2V_REPOSITORY", ROOT / "model_repository"))
OUTPUTS = Path(os.environ.get("E2V_OUTPUT_DIR", ROOT / "outputs"))
CACHE = ROOT / ".cache"
SERVER_LOG = CACHE / "triton.log"


def ensure_repository(repository: Path, cache: Path) -> None:
    """Export `repository` unless it is there and was written by this code; random checkpoints go in `cache`."""
    from e2v_common import contract
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, code_fingerprint, read_stamp
    from e2v_export.tune import export_tuned

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


def hub_or_random_checkpoint(cache: Path):
    from e2v_export.checkpoint import HUB_MODEL, CheckpointError, load_checkpoint

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


def score_examples(grpc_url: str) -> int:
    from e2v_client.cli import main as client_main

    code = client_main([str(ROOT / "examples"), "--url", grpc_url, "--output-dir", str(OUTPUTS), "--embedding"])
    summary = sorted(OUTPUTS.glob("summary_*.csv"))[-1]
    with open(summary, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = Path(row["source_file"]).name
            print(f"  {name:<18} {row['emotion'] or row['error']:<10} {row['confidence']:<9} -> {row['folder']}")
    print(f"run: outputs are in {OUTPUTS}/ (one outputs_YYYYMMDD_HHMMSS folder per example clip)")
    return code


def serve_web(grpc_url: str, web_args: list[str]) -> int:
    from e2v_client import web

    try:
        return web.main(["--url", grpc_url, "--output-dir", str(OUTPUTS), *web_args])
    except KeyboardInterrupt:
        return 0


def main(argv: list[str]) -> int:
    from e2v_server.serve import ServerStartError, TritonServer

    def on_sigterm(signum, frame):  # stop as on Ctrl-C, so that the server is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    ensure_repository(REPOSITORY, CACHE)
    CACHE.mkdir(exist_ok=True)
    print("run: starting the embedded Triton server ...", flush=True)
    try:
        server = TritonServer(REPOSITORY, log_file=SERVER_LOG).start()
    except (ServerStartError, KeyboardInterrupt) as exc:
        print(f"run: error: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    try:
        print(
            f"run: server READY in {server.startup_seconds:.1f} s at {server.grpc_url} (log: {SERVER_LOG})", flush=True
        )
        if argv[:1] == ["web"]:
            return serve_web(server.grpc_url, argv[1:])
        return score_examples(server.grpc_url)
    finally:
        print("run: stopping the server", flush=True)
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
