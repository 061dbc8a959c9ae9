#!/usr/bin/env python
"""The main job for a newcomer, on the embedded Triton server, stopped again at the end.

    make run   (scripts/run.py)            score the example audio and print where the outputs are
    make web   (scripts/run.py web ARGS)   serve the web page (e2v-web ARGS) until Ctrl-C or SIGTERM

Both export a model repository first if there is none, or if it was written by other code than this
checkout's (e2v_export.local_repository says which model: E2V_MODEL_DIR, else the hub, else a
random-weight checkpoint with a warning). E2V_REPOSITORY and E2V_OUTPUT_DIR move the repository
(model_repository/) and the outputs (outputs/).
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
    from e2v_export.local_repository import ensure_repository
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
