"""e2v-web: a local web page for emotion2vec+ on a Triton server, like the emotion2vec+ desktop tool.

    e2v-web --url 127.0.0.1:8001 --host 127.0.0.1 --port 7860 --output-dir outputs --max-upload-mb 50
    e2v-web --url gateway.example:8443 --root-cert gateway.crt --token-file token      # e2v-serve --public

The page has no login, so it binds 127.0.0.1 unless --host says otherwise (and warns when it does); uploads
are bounded by --max-upload-mb (Gradio refuses bigger ones, and the page's logic checks again).
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import signal
import sys
import threading

import numpy as np

from e2v_client.cli import add_server_arguments, client_options, plaintext_token_warning
from e2v_client.client import ConfigError
from e2v_client.web.app import MB, WebApp
from e2v_client.web.files import make_work_dir
from e2v_client.web.page import CSS, build_page, theme
from e2v_client.web.plots import plot_scores, save_png


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="e2v-web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the page binds (default: %(default)s, loopback)")
    parser.add_argument("--port", type=int, default=7860, help="port of the page (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload in MB (default: %(default)s)")
    add_server_arguments(parser, retries=2)
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    return args


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn(app: WebApp, args) -> None:
    """Say on the terminal what the page will also say: the server cannot be used yet, or its model is a fake."""
    if app.info is None:
        print(
            f"e2v-web: warning: cannot use the server at {args.url} yet ({app.server_error}); the page says so "
            "and tries again on each request",
            file=sys.stderr,
        )
    elif app.info.random_weights:
        print(
            "e2v-web: warning: the server runs a random-weight test checkpoint; its predictions are meaningless",
            file=sys.stderr,
        )
    if not _is_loopback(args.host):
        print(
            f"e2v-web: warning: binding {args.host}: the page has no login, anyone who can reach it can upload "
            "audio and download outputs",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import matplotlib  # noqa: F401
        from gradio.utils import get_upload_folder
    except ImportError as exc:
        print(f"e2v-web: error: {exc}: install the web extra (pip install 'emotion2vec-triton[web]')", file=sys.stderr)
        return 2

    try:
        security = client_options(args)
    except ConfigError as exc:
        print(f"e2v-web: error: {exc}", file=sys.stderr)
        return 2
    if warning := plaintext_token_warning(security, "e2v-web"):
        print(warning, file=sys.stderr)
    app = WebApp(
        args.url,
        args.output_dir,
        get_upload_folder(),
        make_work_dir(),
        args.max_upload_mb,
        args.timeout,
        args.retries,
        **security,
    )
    app.refresh_info()
    _warn(app, args)
    page = build_page(app)
    save_png(plot_scores(["warm-up"], np.ones(1), "warm-up"), io.BytesIO())  # matplotlib's start-up, not on first use

    def on_sigterm(signum, frame):  # stop as on Ctrl-C: close the page, remove the work folder
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=int(args.max_upload_mb * MB),
            allowed_paths=[],
            show_error=False,
            ssr_mode=False,
            inbrowser=False,
            share=False,
            quiet=True,
            theme=theme(),
            css=CSS,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        print(f"e2v-web: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        app.close()
        return 2
    print(
        f"e2v-web: http://{args.host}:{args.port}/ (server {args.url}, outputs in {app.output_dir}); Ctrl-C stops",
        flush=True,
    )
    try:
        page.block_thread()  # until Ctrl-C or SIGTERM
    finally:
        page.close()
        app.close()
    return 0
