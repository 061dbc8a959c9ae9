"""The README's "any language" examples, run against the real gateway (`public_server`): curl with KServe v2 JSON
over HTTPS (examples/curl/score.sh, shown verbatim in docs/api.md) and Node.js with KServe v2 gRPC and Triton's own
protos (examples/node/score.js). Both must give Triton's own scores for the same samples and refuse a wrong token
with a plain message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from expected import REAL_LABELS

ROOT = Path(__file__).resolve().parents[1]
CURL_SCRIPT = ROOT / "examples" / "curl" / "score.sh"
CURL_TIMELINE = ROOT / "examples" / "curl" / "timeline.sh"
NODE_DIR = ROOT / "examples" / "node"
WRONG_TOKEN = "w" * 43  # well-formed, not the server's
TOLERANCE = 1e-5
STACK_TRACE = re.compile(r"^\s+at |Traceback|node:internal|Error: .*\n\s+at ", re.MULTILINE)

needs_node = pytest.mark.skipif(
    shutil.which("node") is None, reason="no Node.js: install it (18 or later) and run make setup"
)


@dataclass
class Clip:
    wav: Path  # 16 kHz mono 16-bit PCM, for score.js
    f32: Path  # the same samples as raw float32 little-endian, for score.sh
    samples: np.ndarray  # float32, exactly what both send: pcm / 32768


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Clip:
    folder = tmp_path_factory.mktemp("any_language")
    pcm = np.round(speech_like(2.5, 90) * 32767).astype(np.int16)
    samples = pcm.astype(np.float32) / 32768
    wav, f32 = folder / "clip.wav", folder / "clip.f32"
    wavfile.write(wav, contract.SAMPLE_RATE, pcm)
    samples.astype("<f4").tofile(f32)  # as `ffmpeg -i clip.m4a -ac 1 -ar 16000 -f f32le clip.f32` writes it
    return Clip(wav, f32, samples)


@pytest.fixture(scope="module")
def expected(public_server, clip) -> dict[str, float]:
    """Triton's own scores for the clip, asked directly (loopback gRPC, no gateway), by label."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(public_server.triton_grpc_url)
    config = client.get_model_config(contract.ENSEMBLE_MODEL, as_json=True)["config"]
    labels = contract.string_parameters(config)[contract.PARAM_LABELS].split(",")
    audio = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, clip.samples.size], "FP32")
    audio.set_data_from_numpy(clip.samples[None, :])
    result = client.infer(contract.ENSEMBLE_MODEL, [audio], outputs=[grpcclient.InferRequestedOutput(contract.SCORES)])
    client.close()
    scores = result.as_numpy(contract.SCORES)[0]
    assert labels == REAL_LABELS and scores.shape == (len(labels),)
    return dict(zip(labels, scores.tolist(), strict=True))


@pytest.fixture
def wrong_token_file(tmp_path) -> Path:
    path = tmp_path / "wrong-token"
    path.write_text(WRONG_TOKEN + "\n")
    return path


def run_curl_script(
    public_server, clip: Clip, token_file: Path, tmp_path: Path, script: Path = CURL_SCRIPT
) -> tuple[subprocess.CompletedProcess, str]:
    """score.sh as a user runs it, with curl wrapped to record its arguments (where `ps` would show a token)."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    args_log = tmp_path / "curl-args"
    (shim / "curl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >>"{args_log}"\nexec {shutil.which("curl")} "$@"\n')
    (shim / "curl").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}:{os.environ['PATH']}",
        "E2V_URL": public_server.url,
        "E2V_TOKEN_FILE": str(token_file),
        "E2V_ROOT_CERT": str(public_server.root_cert),
    }
    done = subprocess.run([str(script), str(clip.f32)], capture_output=True, text=True, env=env, timeout=120)
    return done, args_log.read_text() if args_log.exists() else ""


def run_node(public_server, clip: Clip, token_file: Path, *options: str) -> subprocess.CompletedProcess:
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("examples/node/node_modules is missing: run make setup (or npm ci in examples/node)")
    # localhost, a name in the gateway's certificate: an IP address makes Node warn (DEP0123), see its README
    url = f"localhost:{public_server.url.rsplit(':', 1)[1]}"
    command = ["node", "examples/node/score.js", "--url", url, "--root-cert", str(public_server.root_cert)]
    command += ["--token-file", str(token_file), *options, str(clip.wav)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_scores(got: dict[str, float], expected: dict[str, float]) -> None:
    assert list(got) == list(expected) == REAL_LABELS
    assert np.allclose(list(got.values()), list(expected.values()), rtol=0, atol=TOLERANCE), (got, expected)


def assert_refused_plainly(done: subprocess.CompletedProcess, token: str) -> None:
    assert done.returncode != 0
    assert "refused the token" in done.stderr, done.stderr
    assert not STACK_TRACE.search(done.stderr), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
    assert token not in done.stdout + done.stderr


def test_curl_script_scores_like_triton(public_server, clip, expected, tmp_path):
    done, curl_args = run_curl_script(public_server, clip, public_server.token_file, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    got = {label: float(score) for label, score in (line.split(": ") for line in done.stdout.splitlines())}
    assert_scores(got, expected)
    assert curl_args.count("https://") == 2  # the config, then the inference
    assert public_server.token not in curl_args  # read from a header file, never an argument


def test_curl_script_refuses_a_wrong_token_plainly(public_server, clip, wrong_token_file, tmp_path):
    done, curl_args = run_curl_script(public_server, clip, wrong_token_file, tmp_path)
    assert_refused_plainly(done, WRONG_TOKEN)
    assert str(wrong_token_file) in done.stderr
    assert WRONG_TOKEN not in curl_args


@pytest.mark.parametrize("script", [CURL_SCRIPT, CURL_TIMELINE], ids=["score.sh", "timeline.sh"])
def test_the_docs_show_the_curl_scripts_verbatim(script):
    """docs/api.md's bash blocks are the scripts the tests run, so the text a reader copies cannot rot."""
    blocks = re.findall(r"^```bash\n(.*?)^```$", (ROOT / "docs" / "api.md").read_text(), re.MULTILINE | re.DOTALL)
    assert script.read_text() in blocks, (
        f"docs/api.md must show examples/curl/{script.name} verbatim in a ```bash block"
    )


@pytest.fixture(scope="module")
def recording(public_server, tmp_path_factory) -> tuple[Clip, object]:
    """A recording longer than one request (two pieces of at most 30 s: the state is handed back once), and the
    segments e2v-client's library gets for it over loopback gRPC."""
    import asyncio

    from e2v_client import audio
    from e2v_client.client import Emotion2vecClient

    clips = [audio.load(p).samples for p in sorted((ROOT / "examples").glob("*.*")) if p.suffix != ".md"]
    gap = np.zeros(contract.SAMPLE_RATE, np.float32)
    samples = np.concatenate([gap, *[x for c in clips * 3 for x in (c, gap)]])
    assert 35 < len(samples) / contract.SAMPLE_RATE < 60
    folder = tmp_path_factory.mktemp("recording")
    recording = Clip(folder / "recording.wav", folder / "recording.f32", samples)
    wavfile.write(recording.wav, contract.SAMPLE_RATE, np.round(samples * 32768).astype(np.int16))
    samples.astype("<f4").tofile(recording.f32)

    async def library():
        async with Emotion2vecClient(public_server.triton_grpc_url) as client:
            return await client.score(samples, "segment")

    return recording, asyncio.run(library())


def assert_timeline(printed: str, prediction) -> None:
    """Lines "START-END EMOTION CONFIDENCE" that are the library's segments."""
    lines = [line.split() for line in printed.splitlines()]
    assert len(lines) == len(prediction.segments) >= 6
    for (times, emotion, confidence), segment in zip(lines, prediction.segments, strict=True):
        start, end = map(float, times.split("-"))
        assert (start, end) == pytest.approx((segment.start, segment.end), abs=1e-9)
        assert emotion == prediction.label_of(segment.scores)
        assert float(confidence) == pytest.approx(float(segment.scores.max()), abs=TOLERANCE)


def test_curl_timeline_script_gives_the_clients_segments(public_server, recording, tmp_path):
    clip, prediction = recording
    done, curl_args = run_curl_script(public_server, clip, public_server.token_file, tmp_path, CURL_TIMELINE)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_timeline(done.stdout, prediction)
    assert curl_args.count("https://") == 3 and public_server.token not in curl_args  # the config, two pieces


@needs_node
@pytest.mark.parametrize("option", ["--segments", "--stream"])  # in pieces, or as a live stream
def test_node_client_gives_the_clients_segments(public_server, recording, option):
    clip, prediction = recording
    done = run_node(public_server, clip, public_server.token_file, option)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert_timeline(done.stdout, prediction)


@needs_node
def test_node_client_scores_like_triton(public_server, clip, expected):
    done = run_node(public_server, clip, public_server.token_file)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    *json_lines, top_line = done.stdout.strip().splitlines()
    got = json.loads("\n".join(json_lines))
    assert_scores(got, expected)
    top = max(expected, key=expected.get)
    assert top_line.startswith(f"top: {top} ")


@needs_node
def test_node_client_refuses_a_wrong_token_plainly(public_server, clip, wrong_token_file):
    done = run_node(public_server, clip, wrong_token_file)
    assert_refused_plainly(done, WRONG_TOKEN)
    assert "gRPC status 16" in done.stderr


@needs_node
def test_node_client_refuses_a_wav_it_cannot_send(public_server, clip, tmp_path):
    stereo = tmp_path / "stereo.wav"
    wavfile.write(stereo, 44100, np.zeros((4410, 2), np.int16))
    done = run_node(public_server, Clip(stereo, clip.f32, clip.samples), public_server.token_file)
    assert done.returncode != 0
    assert "need 16 kHz mono 16-bit PCM" in done.stderr and not STACK_TRACE.search(done.stderr), done.stderr
