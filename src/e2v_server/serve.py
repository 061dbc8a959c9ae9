"""Start a Triton server on a model repository and wait until emotion2vec is ready (TritonServer).

Which tritonserver: a given binary, else one on PATH (NVIDIA's container), else the one shipped in the
nvidia-pytriton wheel. The bundled one needs the Python-backend stub for the running Python beside the
backend, the venv's bin first on PATH (so the stub's Python finds numpy and our packages) and the
interpreter's lib folder on LD_LIBRARY_PATH; this module prepares that in a cache folder, never in
site-packages. The command line, e2v-serve, is cli.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from e2v_common import contract


class ServerStartError(RuntimeError):
    """tritonserver could not be found or started, or its models did not become ready."""


@dataclass
class TritonCommand:
    binary: Path
    backend_dir: Path | None  # None: the server's own default (NVIDIA's container)
    env: dict = field(default_factory=dict)


def _ephemeral_ports() -> range:
    """The ports the kernel hands to outgoing connections (ip_local_port_range)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the ephemeral range: a port from bind(0) is an ephemeral one, and
    before the server binds it any outgoing connection may take it (a client polling a loading server can even
    connect to itself on it), so the server then exits with 'already in use'."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(20000, 65000) if port not in ephemeral]
    for port in random.sample(candidates, 200):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} outside the ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")


SHM_REGION_PREFIX = "/dev/shm/triton_python_backend_shm_region_"  # a stub's shared memory with tritonserver
PYTHON_STUB = "triton_python_b"  # the Python-backend stub's process name (/proc/PID/stat: 15 characters)
EXIT_TIMEOUT_S = 5  # tritonserver's --exit-timeout-secs: in-flight requests get this long on SIGTERM
PR_SET_PDEATHSIG = 1
# Triton's gRPC front end keeps request/response objects for reuse (8 by default), and with them the buffers of
# the requests they carried: over a soak at concurrency 4 tritonserver grew 4-5 MB/min, whatever the request
# rate; with none kept it stays flat (+0.2 MB/min), at the same throughput (docs/operations.md, Memory). Every
# tritonserver we start carries it: this launcher, the GPU image, compose and k8s (tests/test_deploy.py).
GRPC_MEMORY_ARGS = ["--grpc-infer-allocation-pool-size=0"]


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, parent pid) of a process from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def _stub_children(server_pid: int) -> dict[int, tuple[str, str]]:
    """{pid: (state, model instance)} of tritonserver's Python-backend stubs ("" for a zombie's instance)."""
    stubs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat and stat[0] == PYTHON_STUB and stat[2] == server_pid:
            try:  # the stub's arguments end with the model instance name and its kind
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
                instance = arguments[-3].decode() if len(arguments) >= 3 else ""
            except OSError:
                instance = ""
            stubs[int(entry.name)] = (stat[1], instance)
    return stubs


def stub_pid(server_pid: int, model: str) -> int:
    """The process of `model`'s Python-backend stub under tritonserver `server_pid` (its first instance)."""
    stubs = _stub_children(server_pid)
    return min(pid for pid, (_, instance) in stubs.items() if re.fullmatch(rf"{model}(_\d+)+", instance))


def _shm_regions(pid: int) -> set[Path]:
    """The Python backend's shared-memory regions (one file in /dev/shm per stub) that a process maps."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {
        Path(line[line.index(SHM_REGION_PREFIX) :].removesuffix(" (deleted)"))
        for line in maps.splitlines()
        if SHM_REGION_PREFIX in line
    }


class StubWatch:
    """The Python-backend stubs of one tritonserver. Triton 2.51 never restarts a dead stub: every request to its
    model then fails ("Stub process ... is not healthy"), readiness stays true, and shutdown waits for the exit
    timeout (all measured). So the launcher watches them and restarts the server when one dies."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.known: dict[int, str] = {}  # pid -> model instance of each stub seen alive
        self.shm_regions: set[Path] = set()  # the stubs' shared memory, to remove if the server cannot

    def dead(self) -> list[str]:
        """The model instances whose stub has died (a zombie, or gone) since it was first seen alive."""
        stubs = _stub_children(self.server_pid)
        self.shm_regions |= _shm_regions(self.server_pid)
        self.known.update({pid: instance for pid, (state, instance) in stubs.items() if state != "Z" and instance})
        return sorted(instance for pid, instance in self.known.items() if stubs.get(pid, ("Z",))[0] == "Z")


# Looked up here, not in the child: between fork and exec, an import or a dlopen can wait for good on a lock
# another thread of this process held at the fork (a restart from a client's thread hung so, never exec'ing)
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the launcher dies, even by kill -9, so no
    tritonserver outlives e2v-serve. (It fires when the thread that started the server ends: start it from
    the main thread, or a thread that lives as long as the server.) Only the system call runs here."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _bundled_triton_root() -> Path | None:
    try:
        import pytriton
    except ImportError:
        return None
    root = Path(pytriton.__file__).parent / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def _path_with(python: Path) -> str:
    """PATH with `python`'s folder first: the Python-backend stub embeds the first python3 on PATH, whose
    packages (and virtual environment) the Python models then see."""
    return f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _prepare_bundled(root: Path, cache_dir: Path, model_python: Path) -> TritonCommand:
    """A backends folder with the Python-backend stub for this interpreter, and the environment it needs."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerStartError(f"the bundled Triton has no Python-backend stub for Python {version}")
    backend_dir = cache_dir / f"triton-backends-py{version}"
    python_dir = backend_dir / "python"
    if not (python_dir / "triton_python_backend_stub").exists():
        python_dir.mkdir(parents=True, exist_ok=True)
        for item in (root / "backends" / "python").iterdir():
            if item.is_file():
                shutil.copy2(item, python_dir / item.name)
        # libtriton_python.so and the stub find the wheel's libraries through an $ORIGIN-relative
        # RPATH that no longer holds from a copy: LD_LIBRARY_PATH (below) points at them instead.
        shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = {
        "PATH": _path_with(model_python),
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(libs), sysconfig.get_config_var("LIBDIR") or "", os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
    }
    return TritonCommand(root / "bin" / "tritonserver", backend_dir, env)


def find_tritonserver(
    explicit: str | None = None, cache_dir: Path | None = None, model_python: str | Path | None = None
) -> TritonCommand:
    """The tritonserver to run and its environment.

    model_python: the Python (same minor version as this one) whose packages the repository's Python
    models get; default: this one.
    """
    cache_dir = cache_dir or Path(os.environ.get("E2V_CACHE", Path.home() / ".cache" / "e2v"))
    model_python = Path(model_python or sys.executable)
    path = {"PATH": _path_with(model_python)}
    if explicit:
        if not Path(explicit).is_file():
            raise ServerStartError(f"--tritonserver {explicit}: no such file")
        return TritonCommand(Path(explicit), None, path)
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonCommand(Path(on_path), None, path)
    root = _bundled_triton_root()
    if root is None:
        raise ServerStartError(
            "no tritonserver found: pass --tritonserver PATH, run inside NVIDIA's Triton container, "
            "or install nvidia-pytriton==0.7.0 (make setup does)"
        )
    return _prepare_bundled(root, cache_dir, model_python)


class TritonServer:
    """A running tritonserver process; use as a context manager or call stop()."""

    def __init__(
        self,
        model_repository,
        host="127.0.0.1",
        grpc_port=None,
        http_port=None,
        metrics_port=None,
        tritonserver=None,
        log_file=None,
        extra_args=(),
        ready_timeout=300.0,
        model_python=None,
    ):
        self.model_repository = Path(model_repository).resolve()
        if not (self.model_repository / contract.ENSEMBLE_MODEL / "config.pbtxt").exists():
            raise ServerStartError(
                f"{self.model_repository} is not an exported model repository (no "
                f"{contract.ENSEMBLE_MODEL}/config.pbtxt): run e2v-export --out {model_repository} first"
            )
        self.host = host
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.command = find_tritonserver(tritonserver, model_python=model_python)
        self.log_path = Path(log_file) if log_file else None
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self.stubs: StubWatch | None = None
        self.startup_seconds: float | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def args(self) -> list[str]:
        args = [
            str(self.command.binary),
            f"--model-repository={self.model_repository}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--strict-readiness=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            *GRPC_MEMORY_ARGS,
        ]
        if self.command.backend_dir:
            args.append(f"--backend-directory={self.command.backend_dir}")
        return args + self.extra_args

    def start(self) -> TritonServer:
        env = {**os.environ, **self.command.env}
        start = time.monotonic()
        # No log file: the server logs to this process's terminal. The server keeps its own copy of the
        # file handle; ours is closed once it has started.
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext() as log:
            self.process = subprocess.Popen(
                self.args(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, with its stubs: stop() ends them all
                preexec_fn=_die_with_parent,
            )
        self.stubs = StubWatch(self.process.pid)
        try:
            self.wait_ready(start)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - start
        self.stubs.dead()  # learn the stubs while they are alive
        return self

    def dead_stubs(self) -> list[str]:
        """Model instances whose Python-backend stub has died: their model fails every request until a restart."""
        return self.stubs.dead() if self.process and self.process.poll() is None else []

    def stub_pid(self, model: str) -> int:
        """The process of `model`'s Python-backend stub (its first instance)."""
        return stub_pid(self.process.pid, model)

    def restart(self) -> None:
        """Kill the server (a dead stub would hold a graceful exit until the exit timeout) and start it again on
        the same ports; readiness is false meanwhile."""
        self.kill()
        self.start()

    def wait_ready(self, start: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while time.monotonic() - start < self.ready_timeout:
                if self.process.poll() is not None:
                    raise ServerStartError(
                        f"tritonserver exited with code {self.process.returncode} while loading"
                        + (f"; see {self.log_path}:\n{self.log_errors()}" if self.log_path else "")
                    )
                try:
                    # every model: a client of the stream model must not find it still loading after a restart
                    if client.is_server_ready(client_timeout=2):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.25)
            raise ServerStartError(f"the models were not all ready after {self.ready_timeout:.0f} s")
        finally:
            client.close()

    def log_errors(self, lines: int = 10) -> str:
        """The last error lines of the server's log (Triton marks them with E or F in the first column)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line[:1] in ("E", "F")][-lines:])

    def stop(self, timeout: float = EXIT_TIMEOUT_S + 3.0) -> None:
        """SIGTERM: Triton finishes in-flight requests (up to its exit timeout) and unloads the models. With a
        dead stub, which would hold that for the whole exit timeout, or past `timeout`: SIGKILL to the group."""
        if self.process is None or self.process.poll() is not None:
            self._kill_group()
            self._remove_shm_regions()
            return
        if self.dead_stubs():
            self.kill()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._kill_group()
        self._remove_shm_regions()

    def kill(self) -> None:
        """Stop at once: SIGKILL to tritonserver and its stubs (its process group)."""
        if self.process is not None and self.process.poll() is None:
            self._kill_group()
            self.process.wait()
        self._remove_shm_regions()

    def _remove_shm_regions(self) -> None:
        """A killed server leaves its stubs' shared-memory files in /dev/shm, holding RAM until reboot (one
        per stub, tens of MB each after long requests; 263 had piled up on a test machine): remove them."""
        if self.stubs and self.process is not None and self.process.poll() is not None:
            for region in self.stubs.shm_regions:
                region.unlink(missing_ok=True)

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the server's process group: a stub stuck after its server exited (seen:
        the encoder's, deadlocked when tritonserver died mid-request) would hold its memory for good."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        # SIGKILL is not instant: return once the stubs this server had are dead (or zombies, waiting for a reaper)
        deadline = time.monotonic() + 3.0
        stubs = list(self.stubs.known) if self.stubs else []
        while any(_running(pid) for pid in stubs) and time.monotonic() < deadline:
            time.sleep(0.02)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
