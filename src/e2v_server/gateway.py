"""The gateway: nginx in front of a loopback-bound Triton, for every deployment beyond loopback.

nginx/emotion2vec.conf.template is the one configuration (TLS, bearer token, request-size limits from the
repository's max_seconds, open health endpoints, gRPC and HTTP on one port). `e2v-serve --public` renders it
here and runs Debian's nginx with it; docker/compose.yaml and deploy/k8s hand the same file to the official
nginx image, whose entrypoint renders it with envsubst. Triton's own admin protocols are restricted with a
key header as well (triton_restriction_args), so a token holder still cannot reach them without the key.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from e2v_common import contract

TEMPLATE = Path(__file__).parent / "nginx" / "emotion2vec.conf.template"
PLACEHOLDER = re.compile(r"\$\{(E2V_[A-Z0-9_]+)\}")  # what envsubst fills in; nginx's own $variables stay

TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9_-]{32,}")  # secrets.token_urlsafe(32), `openssl rand -hex 32`, ...
# Triton's admin protocols, each refused unless the request carries the admin key: over HTTP in the header
# ADMIN_KEY_HEADER, over gRPC in the metadata GRPC_ADMIN_KEY_HEADER (Triton prefixes the gRPC one)
ADMIN_KEY_HEADER = "admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
ADMIN_PROTOCOLS = "shared-memory,model-repository,statistics,trace,logging"

GRPC_BYTES_PER_SAMPLE = 4  # float32 in the protobuf
HTTP_BYTES_PER_SAMPLE = 24  # a float as JSON text with its separator (binary tensors need 4)
HEADROOM_BYTES = 64 * 1024  # request framing, names, parameters (a live stream's first chunk: its STATE)
# A live stream is one gRPC call whose body is all its chunks: each chunk's request around its samples is about
# 200 bytes from tritonclient (measured), plus gRPC's framing; 512 leaves room for other clients. Sized for the
# smallest chunks a stream may send, 20 ms (50 a second).
STREAM_CHUNK_OVERHEAD_BYTES = 512
STREAM_CHUNKS_PER_SECOND = 50
STREAM_BYTES_PER_SECOND = (
    contract.SAMPLE_RATE * GRPC_BYTES_PER_SAMPLE + STREAM_CHUNKS_PER_SECOND * STREAM_CHUNK_OVERHEAD_BYTES
)


class GatewayError(RuntimeError):
    """The gateway could not be configured or started."""


@dataclass(frozen=True)
class RequestLimits:
    """The most the gateway passes on, in bytes: one request, by protocol, and one live stream (gRPC
    ModelStreamInfer, all its chunks)."""

    grpc_bytes: int
    http_bytes: int
    stream_bytes: int

    @classmethod
    def for_seconds(cls, max_seconds: float, max_stream_seconds: float) -> RequestLimits:
        """For the longest request (max_seconds of audio) and the most audio one stream takes; the stream
        model refuses a stream at max_stream_seconds first, so a client that follows the API never meets
        the gateway's limit, and one that does not is cut there."""
        samples = int(max_seconds * contract.SAMPLE_RATE)
        return cls(
            samples * GRPC_BYTES_PER_SAMPLE + HEADROOM_BYTES,
            samples * HTTP_BYTES_PER_SAMPLE + HEADROOM_BYTES,
            round(max_stream_seconds * STREAM_BYTES_PER_SECOND) + HEADROOM_BYTES,
        )

    @classmethod
    def of_repository(cls, repository: Path) -> RequestLimits:
        """The limits of an exported repository: its ensemble's max_seconds, its stream model's
        max_stream_seconds."""
        ensemble = model_parameters(repository, contract.ENSEMBLE_MODEL)
        stream = model_parameters(repository, contract.STREAM_MODEL)
        return cls.for_seconds(
            float(ensemble[contract.PARAM_MAX_SECONDS]), float(stream[contract.PARAM_MAX_STREAM_SECONDS])
        )

    def env(self) -> dict[str, str]:
        return {
            "E2V_GRPC_MAX_BODY": str(self.grpc_bytes),
            "E2V_HTTP_MAX_BODY": str(self.http_bytes),
            "E2V_GRPC_STREAM_MAX_BODY": str(self.stream_bytes),
        }


def model_parameters(repository: Path, model: str) -> dict[str, str]:
    """The string parameters of one model's config in an exported repository."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(repository) / model / "config.pbtxt"
    if not path.exists():
        raise GatewayError(f"{repository} is not an exported model repository (no {path.relative_to(repository)})")
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    parameters = contract.string_parameters(json_format.MessageToDict(config, preserving_proto_field_name=True))
    if model == contract.STREAM_MODEL and contract.PARAM_MAX_STREAM_SECONDS not in parameters:
        raise GatewayError(f"{repository} was exported before live streams had a length limit: export it again")
    return parameters


def read_token(path: str | Path) -> str:
    """The bearer token in a file (its first line). The error never shows the token."""
    try:
        lines = Path(path).read_text().split()
    except OSError as exc:
        raise GatewayError(f"cannot read the token file {path}: {exc.strerror}") from None
    token = lines[0] if lines else ""
    if not TOKEN_ALPHABET.fullmatch(token):
        raise GatewayError(
            f"the token in {path} must be 32 or more of A-Z a-z 0-9 - _ (make one: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return token


def read_or_make_admin_key(path: Path) -> str:
    """The admin key in `path`; a new random one, written there readable by its owner only, if there is none."""
    path = Path(path)
    if path.exists():
        return read_token(path)
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def triton_restriction_args(admin_key: str) -> list[str]:
    """tritonserver flags that refuse the admin protocols without ADMIN_KEY_HEADER: admin_key."""
    restriction = f"{ADMIN_PROTOCOLS}:{ADMIN_KEY_HEADER}={admin_key}"
    return [f"--grpc-restricted-protocol={restriction}", f"--http-restricted-api={restriction}"]


def render(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """The template with its ${E2V_...} placeholders filled in, as envsubst would; every one must be given."""
    text = template.read_text()
    missing = sorted(set(PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise GatewayError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def self_signed_certificate(host: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (and localhost) in `folder`, made once and reused, so that clients
    can pin it with --root-cert. For production, pass a certificate from your CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = folder / f"self-signed-{host}.crt", folder / f"self-signed-{host}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    names = {host, "localhost", "127.0.0.1"}
    alt_names = []
    for name in sorted(names):
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# nginx's main configuration when e2v-serve runs it: everything under one private folder, in the foreground
NGINX_MAIN = """daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    access_log {run}/access.log;
    include {run}/emotion2vec.conf;
}}
"""


def find_nginx() -> Path:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise GatewayError("no nginx found: install Debian's nginx package (make setup does)")


def split_address(address: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[V6]:PORT") -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise GatewayError(f"--public {address}: give HOST:PORT, e.g. 0.0.0.0:8443")
    return host.strip("[]") or "0.0.0.0", int(port)


class Gateway:
    """nginx running the gateway configuration in front of Triton's loopback endpoints; a context manager."""

    def __init__(
        self,
        listen: str,
        token: str,
        tls_cert: Path,
        tls_key: Path,
        triton_grpc: str,
        triton_http: str,
        limits: RequestLimits,
        run_dir: Path,
        ready_timeout: float = 15.0,
    ):
        self.host, self.port = split_address(listen)
        self.run_dir = Path(run_dir)
        self.values = {
            "E2V_GATEWAY_LISTEN": f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}",
            "E2V_TLS_CERT": str(Path(tls_cert).resolve()),
            "E2V_TLS_KEY": str(Path(tls_key).resolve()),
            "E2V_TOKEN": token,
            "E2V_TRITON_GRPC": triton_grpc,
            "E2V_TRITON_HTTP": triton_http,
            **limits.env(),
        }
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """HOST:PORT for clients on this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{host}:{self.port}"

    def write_config(self) -> Path:
        # The folder is traversable (nginx's workers may run as another user and write body files below it);
        # the configuration holds the token, so only its owner (nginx's master) reads it.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o711)
        site = self.run_dir / "emotion2vec.conf"
        site.touch(mode=0o600)
        site.write_text(render(self.values))
        main = self.run_dir / "nginx.conf"
        main.write_text(NGINX_MAIN.format(run=self.run_dir))
        return main

    def start(self) -> Gateway:
        nginx = find_nginx()
        main = self.write_config()
        command = [str(nginx), "-p", str(self.run_dir), "-c", str(main), "-e", str(self.run_dir / "error.log")]
        checked = subprocess.run([*command, "-t", "-q"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise GatewayError(f"nginx refused the configuration: {checked.stderr.strip()}")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GatewayError(f"nginx exited with code {self.process.returncode}: {self.error_log_tail()}")
            try:
                with socket.create_connection((self.url.rsplit(":", 1)[0], self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise GatewayError(f"nginx did not listen on {self.url} within {self.ready_timeout:.0f} s")

    def error_log_tail(self, lines: int = 5) -> str:
        log = self.run_dir / "error.log"
        return " | ".join(log.read_text().splitlines()[-lines:]) if log.exists() else "(no error log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # nginx: fast shutdown
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
