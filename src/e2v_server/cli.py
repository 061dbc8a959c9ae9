"""e2v-serve: start a Triton server on a model repository and wait until emotion2vec is ready.

Which tritonserver: ``--tritonserver PATH``, else one on PATH (NVIDIA's container), else the one shipped in
the nvidia-pytriton wheel (serve.TritonServer prepares it). Beyond loopback, nginx is the front door
(gateway.py). The server is watched, and restarted when it or a model's stub dies, a few times at most.

    e2v-serve --model-repository model_repository [--grpc-port 8001] [--host 127.0.0.1]
    e2v-serve --model-repository model_repository --public 0.0.0.0:8443 --token-file token.txt \
        [--tls-cert server.crt --tls-key server.key]     # beyond loopback: behind the gateway (gateway.py)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from e2v_common import contract
from e2v_server import gateway
from e2v_server.serve import ServerStartError, TritonServer

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2v-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default="model_repository")
    parser.add_argument("--host", default="127.0.0.1", help="address Triton binds (default: loopback only)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--tritonserver", help="path of a tritonserver binary to use")
    parser.add_argument("--log-file", help="write the server's log to this file (default: this terminal)")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument(
        "--model-python",
        help="the python3 (for example a virtual environment's, same minor version) whose packages the "
        "repository's Python models use; they need only numpy and onnxruntime (default: this Python)",
    )
    public = parser.add_argument_group(
        "public mode: nginx in front of the loopback-bound server (TLS, bearer token, request-size limit)"
    )
    public.add_argument("--public", metavar="HOST:PORT", help="serve gRPC and HTTP through the gateway here")
    public.add_argument("--token-file", help="file holding the bearer token clients must send (required)")
    public.add_argument("--tls-cert", help="certificate chain (PEM); default: a self-signed one, made once")
    public.add_argument("--tls-key", help="the certificate's private key (PEM)")
    public.add_argument(
        "--admin-key-file",
        help="Triton's admin protocols (shared memory, repository, statistics, trace, logging) need this key "
        f"in the header {gateway.ADMIN_KEY_HEADER} (gRPC: {gateway.GRPC_ADMIN_KEY_HEADER}); a new random key "
        "is written there if the file does not exist. Public mode always restricts them (default file: "
        "$E2V_CACHE/gateway/admin-key); without --public, giving this file restricts them too",
    )
    public.add_argument(
        "--print-gateway-env",
        action="store_true",
        help="print the gateway's request-size limits for this repository (for docker/ and deploy/) and exit",
    )
    return parser


def _cache_dir() -> Path:
    return Path(os.environ.get("E2V_CACHE", Path.home() / ".cache" / "e2v"))


def _gateway_settings(args) -> dict:
    """The checked public-mode settings: the token, TLS files, admin key and request limits."""
    if not args.token_file:
        raise gateway.GatewayError("--public needs --token-file: the gateway refuses requests without the token")
    if args.host not in LOOPBACK:
        raise gateway.GatewayError(f"--public puts the gateway in front: Triton stays on loopback, not {args.host}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise gateway.GatewayError("--tls-cert and --tls-key go together")
    host, _ = gateway.split_address(args.public)
    token = gateway.read_token(args.token_file)
    limits = gateway.RequestLimits.of_repository(Path(args.model_repository))
    if args.tls_cert:
        tls = (Path(args.tls_cert), Path(args.tls_key))
    else:
        tls = gateway.self_signed_certificate(host, _cache_dir() / "gateway")
        print(f"e2v-serve: self-signed certificate {tls[0]} (clients: --root-cert {tls[0]})", flush=True)
    admin_key_file = Path(args.admin_key_file or _cache_dir() / "gateway" / "admin-key")
    return {
        "token": token,
        "tls": tls,
        "admin_key": gateway.read_or_make_admin_key(admin_key_file),
        "admin_key_file": admin_key_file,
        "limits": limits,
    }


def _restrictions(args, settings: dict | None) -> list[str]:
    """Triton's flags for its admin protocols: behind the key in public mode, or wherever --admin-key-file is
    given (docker/ and deploy/k8s, where the gateway runs in its own container)."""
    if settings:
        return gateway.triton_restriction_args(settings["admin_key"])
    if args.admin_key_file:
        return gateway.triton_restriction_args(gateway.read_or_make_admin_key(Path(args.admin_key_file)))
    return []


def _start_gateway(args, server: TritonServer, settings: dict, run_dir: Path) -> gateway.Gateway:
    front = gateway.Gateway(
        args.public,
        settings["token"],
        *settings["tls"],
        triton_grpc=server.grpc_url,
        triton_http=f"{server.host}:{server.http_port}",
        limits=settings["limits"],
        run_dir=run_dir,
    )
    return front.start()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_gateway_env:
        try:
            limits = gateway.RequestLimits.of_repository(Path(args.model_repository))
        except gateway.GatewayError as exc:
            print(f"e2v-serve: error: {exc}", file=sys.stderr)
            return 1
        print("\n".join(f"{name}={value}" for name, value in limits.env().items()))
        return 0

    def on_signal(_signum, _frame):
        raise KeyboardInterrupt  # SIGTERM stops as Ctrl-C does

    signal.signal(signal.SIGTERM, on_signal)
    server = front = None
    with tempfile.TemporaryDirectory(prefix="e2v-gateway-") as run_dir:
        try:
            settings = _gateway_settings(args) if args.public else None
            restrictions = _restrictions(args, settings)
            server = TritonServer(
                args.model_repository,
                args.host,
                args.grpc_port,
                args.http_port,
                args.metrics_port,
                args.tritonserver,
                args.log_file,
                extra_args=restrictions,
                ready_timeout=args.ready_timeout,
                model_python=args.model_python,
            )
            print(f"e2v-serve: starting {server.command.binary} on {args.model_repository} ...", flush=True)
            server.start()
            front = _start_gateway(args, server, settings, Path(run_dir)) if settings else None
        except (ServerStartError, gateway.GatewayError, KeyboardInterrupt) as exc:
            print(f"e2v-serve: error: {exc or 'interrupted'}", file=sys.stderr)
            if server:
                server.stop()
            return 1
        _announce(args, server, front, settings)
        return _serve_until_stopped(server, front)


def _announce(args, server: TritonServer, front, settings) -> None:
    print(
        f"e2v-serve: {contract.ENSEMBLE_MODEL} READY in {server.startup_seconds:.1f} s; "
        f"gRPC {server.grpc_url}, HTTP {args.host}:{server.http_port}, metrics {args.host}:{server.metrics_port}.",
        flush=True,
    )
    if front:
        print(
            f"e2v-serve: gateway on {args.public} (TLS; gRPC and HTTP; bearer token required; requests over "
            f"{settings['limits'].grpc_bytes} bytes on gRPC refused); admin key in {settings['admin_key_file']}.",
            flush=True,
        )
    print("e2v-serve: Ctrl-C stops.", flush=True)


RESTARTS_ALLOWED = 5  # within RESTART_WINDOW_S; more means something is wrong for good: exit, let the
RESTART_WINDOW_S = 600.0  # orchestrator (k8s, compose, systemd) decide


def _serve_until_stopped(server: TritonServer, front) -> int:
    """Watch the server until SIGTERM or Ctrl-C: restart it when it exits or a model's stub dies (Triton would
    fail that model's requests for good while saying it is ready), a few times at most."""
    restarts: list[float] = []
    try:
        while True:
            time.sleep(0.5)
            if front and front.process.poll() is not None:
                print(f"e2v-serve: nginx exited with code {front.process.returncode}", file=sys.stderr)
                server.stop()
                return 1
            exited, dead = server.process.poll(), server.dead_stubs()
            if exited is None and not dead:
                continue
            why = f"tritonserver exited with code {exited}" if exited is not None else f"stub of {dead} died"
            restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S] + [time.monotonic()]
            if len(restarts) > RESTARTS_ALLOWED:
                print(f"e2v-serve: {why}; {RESTARTS_ALLOWED} restarts already, giving up", file=sys.stderr)
                _stop_all(server, front)
                return 1
            print(f"e2v-serve: {why}: restarting the server ...", file=sys.stderr, flush=True)
            try:
                server.restart()
            except ServerStartError as exc:
                print(f"e2v-serve: error: restart failed: {exc}", file=sys.stderr)
                _stop_all(server, front)
                return 1
            print(f"e2v-serve: {contract.ENSEMBLE_MODEL} READY again in {server.startup_seconds:.1f} s", flush=True)
    except KeyboardInterrupt:
        print("e2v-serve: stopping ...", flush=True)
        _stop_all(server, front)
        print("e2v-serve: stopped", flush=True)
        return 0


def _stop_all(server: TritonServer, front) -> None:
    if front:
        front.stop()
    server.stop()


if __name__ == "__main__":
    sys.exit(main())
