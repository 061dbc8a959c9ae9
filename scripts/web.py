#!/usr/bin/env python
"""`make web`: the web page on the model `make run` uses. Export a model repository if there is none
(scripts/run.py's ensure_repository: E2V_MODEL_DIR, else the hub, else a random-weight checkpoint with a
warning), start the embedded Triton server, serve e2v-web until Ctrl-C (or SIGTERM), then stop the server.

Arguments are passed on to e2v-web (for example --port 7861 --max-upload-mb 100); --url and --output-dir
are set here (E2V_OUTPUT_DIR, default outputs/).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import CACHE, OUTPUTS, REPOSITORY, ensure_repository  # noqa: E402  (scripts/run.py)


def main(argv: list[str] | None = None) -> int:
    from e2v_client import web
    from e2v_server.serve import ServerStartError, TritonServer

    argv = sys.argv[1:] if argv is None else argv
    ensure_repository()
    CACHE.mkdir(exist_ok=True)
    log = CACHE / "triton.log"

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    print("web: starting the embedded Triton server ...", flush=True)
    try:
        server = TritonServer(REPOSITORY, log_file=log).start()
    except (ServerStartError, KeyboardInterrupt) as exc:
        print(f"web: error: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    try:
        print(f"web: server READY in {server.startup_seconds:.1f} s at {server.grpc_url} (log: {log})", flush=True)
        return web.main(["--url", server.grpc_url, "--output-dir", str(OUTPUTS), *argv])
    except KeyboardInterrupt:
        return 0
    finally:
        print("web: stopping the server", flush=True)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
