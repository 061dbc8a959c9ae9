"""e2v-client and e2v-web through the gateway (`e2v-serve --public`): TLS, the bearer token, fast clear refusals.

Everything runs against the real gateway of the `public_server` fixture (nginx in front of Triton on the tiny
repository). The token must travel only as the authorization header: the tests look for it everywhere else.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from e2v_client import audio
from e2v_client.batch import BatchOptions, run_batch
from e2v_client.cli import client_options
from e2v_client.client import AccessError, ConfigError, Emotion2vecClient, RetryPolicy, read_token_file
from e2v_client.outputs import AUDIO_FILE, EMBEDDING_FILE, FOLDER_PREFIX, RESULT_FILE
from e2v_client.web.blocking_client import BlockingClient
from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server.gateway import self_signed_certificate

TINY_DIM = 64
FAST = 5.0  # seconds: a refused client is told at once (--retries 10 would back off for over a minute)
WRONG_TOKEN = "w" * 43  # a well-formed token that is not the server's


def run_client(*args, timeout=120):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "e2v_client.cli", "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - started


def folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(FOLDER_PREFIX)) if root.exists() else []


def gateway_logs(public_server) -> Path:
    """The folder of the gateway's nginx (its access and error logs), from the master process's command line."""
    import psutil

    for child in psutil.Process(public_server.process.pid).children(recursive=True):
        found = re.search(r"-p\s+(\S+)", " ".join(child.cmdline()))
        if child.name() == "nginx" and found:
            return Path(found.group(1))
    raise AssertionError("no nginx under e2v-serve --public")


def refused_config_calls(public_server) -> int:
    """ModelConfig calls the gateway answered itself (the refusal: a trailers-only 204), so far."""
    log = (gateway_logs(public_server) / "access.log").read_text()
    return sum("GRPCInferenceService/ModelConfig" in line and '" 204 ' in line for line in log.splitlines())


def assert_token_nowhere(token: str, *texts: str, folders_root: Path | None = None) -> None:
    for text in texts:
        assert token not in text
    if folders_root is not None and folders_root.exists():
        for path in folders_root.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("gateway_clips")
    paths = []
    for i, seconds in enumerate((2.0, 3.5, 1.2)):
        paths.append(root / f"clip_{i}.wav")
        audio.write_wav(paths[-1], audio.from_samples(speech_like(seconds, 70 + i), 16000))
    return paths


@pytest.fixture(scope="module")
def other_cert(tmp_path_factory) -> Path:
    """A certificate for the same address that the gateway does not have."""
    return self_signed_certificate("127.0.0.1", tmp_path_factory.mktemp("other_tls"))[0]


@pytest.fixture
def wrong_token_file(tmp_path) -> Path:
    path = tmp_path / "wrong-token"
    path.write_text(f"\n  {WRONG_TOKEN}  \n")
    return path


def test_token_and_root_cert_score_through_the_gateway_like_the_model(public_server, tiny, clips, tmp_path):
    out = tmp_path / "outputs"
    done, _ = run_client(
        *clips,
        "--url",
        public_server.url,
        "--root-cert",
        public_server.root_cert,
        "--token-file",
        public_server.token_file,
        "--embedding",
        "--output-dir",
        out,
    )
    assert done.returncode == 0, done.stderr
    assert "warning: --token-file without" not in done.stderr
    written = folders(out)
    assert len(written) == len(clips)
    for folder in written:
        rate, samples = wavfile.read(folder / AUDIO_FILE)
        assert rate == 16000
        result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
        expected = tiny.runner.run(samples.astype(np.float32) / 32768)
        scores = np.array(list(result["scores"].values()))
        assert np.abs(scores - expected.scores).max() <= 1e-5 + 5e-7  # result.json rounds to 6 decimals
        assert result["emotion"] == list(result["scores"])[int(np.argmax(expected.scores))]
        embedding = np.load(folder / EMBEDDING_FILE)
        assert embedding.shape == (TINY_DIM,) and np.abs(embedding - expected.embedding).max() < 1e-4
    assert len(list(out.glob("summary_*.csv"))) == 1
    assert_token_nowhere(public_server.token, done.stdout, done.stderr, folders_root=out)


def test_every_call_carries_the_token_and_nothing_shows_it(public_server):
    token = read_token_file(public_server.token_file)
    assert token == public_server.token

    async def scenario():
        async with Emotion2vecClient(public_server.url, root_cert=public_server.root_cert, token=token) as client:
            server = client._servers[0]  # calls the client itself does not make go through the gateway too
            ready = await server.is_server_ready()
            model_ready = await server.is_model_ready(contract.ENSEMBLE_MODEL)
            metadata = await server.get_model_metadata(contract.ENSEMBLE_MODEL, as_json=True)
            prediction = await client.score(speech_like(1.0, 5))
            shown = repr(vars(client)) + repr(vars(server)) + str(client.info) + repr(prediction)
            return ready, model_ready, metadata, shown

    ready, model_ready, metadata, shown = asyncio.run(scenario())
    assert ready and model_ready and metadata["name"] == contract.ENSEMBLE_MODEL
    assert_token_nowhere(token, shown)


@pytest.mark.parametrize("which", ["wrong", "missing"])
def test_wrong_or_missing_token_fails_at_once_without_retries(public_server, clips, wrong_token_file, tmp_path, which):
    out = tmp_path / "outputs"
    token_args = ["--token-file", wrong_token_file] if which == "wrong" else []
    before = refused_config_calls(public_server)
    done, seconds = run_client(
        *clips,
        "--url",
        public_server.url,
        "--root-cert",
        public_server.root_cert,
        *token_args,
        "--retries",
        "10",
        "--output-dir",
        out,
    )
    assert done.returncode == 2, done.stderr
    assert seconds < FAST, seconds
    assert refused_config_calls(public_server) - before == 1  # asked once: not retried
    assert "bearer token" in done.stderr
    assert ("refused the bearer token" if which == "wrong" else "requires a bearer token") in done.stderr
    assert "Is it running" not in done.stderr
    assert not folders(out)
    logs = gateway_logs(public_server)
    assert_token_nowhere(
        public_server.token,
        done.stdout,
        done.stderr,
        public_server.log.read_text(),
        (logs / "access.log").read_text(),
        (logs / "error.log").read_text() if (logs / "error.log").exists() else "",
        folders_root=out,
    )
    assert WRONG_TOKEN not in done.stdout + done.stderr


def test_a_batch_refused_mid_run_stops_with_one_error_and_no_rows(public_server, clips, tmp_path):
    # A token refused after the first call (rotated on the server, say): the batch stops at once, writes no
    # failure row per file, and --resume finishes the job later.
    async def scenario():
        async with Emotion2vecClient(
            public_server.url, root_cert=public_server.root_cert, token=public_server.token
        ) as good:
            info = good.info
        refused = Emotion2vecClient(
            public_server.url, root_cert=public_server.root_cert, token=WRONG_TOKEN, retry=RetryPolicy(attempts=11)
        )
        refused.info = info  # connected before the token changed
        rows = []
        try:
            with pytest.raises(AccessError) as caught:
                await run_batch(refused, clips * 4, BatchOptions(tmp_path / "outputs", concurrency=2), rows.append)
        finally:
            await refused.close()
        return caught.value, rows

    started = time.monotonic()
    error, rows = asyncio.run(scenario())
    assert time.monotonic() - started < FAST
    assert "refused the bearer token" in str(error) and public_server.url in str(error)
    assert WRONG_TOKEN not in str(error) and public_server.token not in str(error)
    assert rows == [] and not (tmp_path / "outputs").exists()


def test_wrong_root_cert_fails_at_once(public_server, clips, other_cert, tmp_path):
    out = tmp_path / "outputs"
    done, seconds = run_client(
        clips[0],
        "--url",
        public_server.url,
        "--root-cert",
        other_cert,
        "--token-file",
        public_server.token_file,
        "--retries",
        "10",
        "--output-dir",
        out,
    )
    assert done.returncode == 2, done.stderr
    assert seconds < FAST, seconds
    assert "TLS certificate is not trusted" in done.stderr and "--root-cert" in done.stderr
    assert "Is it running" not in done.stderr
    assert not folders(out)
    assert_token_nowhere(public_server.token, done.stdout, done.stderr)


def test_plaintext_to_the_tls_gateway_is_a_clear_error(public_server, clips, tmp_path):
    done, seconds = run_client(
        clips[0],
        "--url",
        public_server.url,
        "--token-file",
        public_server.token_file,
        "--retries",
        "10",
        "--output-dir",
        tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert seconds < FAST, seconds
    assert "the token travels unencrypted" in done.stderr  # the warning before it was sent
    assert "may need TLS (--ssl or --root-cert FILE)" in done.stderr
    assert_token_nowhere(public_server.token, done.stdout, done.stderr)


def test_tls_to_a_plaintext_server_is_a_clear_error(public_server, clips, tmp_path):
    done, seconds = run_client(
        clips[0], "--url", public_server.triton_grpc_url, "--ssl", "--retries", "10", "--output-dir", tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert seconds < FAST, seconds
    assert "does not speak TLS" in done.stderr


def test_token_and_certificate_files_that_cannot_be_used_are_named(public_server, clips, tmp_path):
    empty = tmp_path / "empty-token"
    empty.write_text("\n  \n")
    not_pem = tmp_path / "notes.crt"
    not_pem.write_text(public_server.token)  # a file holding a secret, given by mistake: never echoed
    cases = [
        (["--token-file", empty], f"the token file {empty} is empty"),
        (["--token-file", tmp_path / "absent"], f"cannot read the token file {tmp_path / 'absent'}"),
        (["--root-cert", not_pem], f"the root certificate {not_pem} holds no PEM certificate"),
    ]
    for args, message in cases:
        done, _ = run_client(clips[0], "--url", public_server.url, *args, "--output-dir", tmp_path / "out")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert_token_nowhere(public_server.token, done.stdout, done.stderr)
    with pytest.raises(ConfigError) as caught:
        Emotion2vecClient(public_server.url, token="not a token\n")
    assert "not a token" not in str(caught.value)


def test_e2v_web_scores_through_the_gateway(public_server, tiny, tmp_path, wrong_token_file):
    from e2v_client.web.app import WebApp
    from e2v_client.web.cli import parse_args

    args = parse_args(
        [
            "--url",
            public_server.url,
            "--root-cert",
            str(public_server.root_cert),
            "--token-file",
            str(public_server.token_file),
        ]
    )
    assert public_server.token not in repr(args)  # the arguments hold the file's name, not the token
    options = client_options(args)
    assert options["ssl"] and options["root_cert"] == str(public_server.root_cert)

    client = BlockingClient(args.url, timeout=args.timeout, retries=args.retries, **options)
    try:
        assert client.connect().random_weights
        samples = speech_like(2.5, 12)
        prediction = client.call(client.async_client.score(samples))
        expected = tiny.runner.run(samples)
        assert np.abs(prediction.scores - expected.scores).max() < 1e-5
        assert np.abs(prediction.embedding - expected.embedding).max() < 1e-4
        assert public_server.token not in repr(vars(client))
    finally:
        client.close()

    # the page's own logic: an upload scored through the gateway and written as e2v-client writes it
    uploads, work = tmp_path / "uploads", tmp_path / "work"
    uploads.mkdir()
    work.mkdir()
    upload = uploads / "speech.wav"
    audio.write_wav(upload, audio.from_samples(speech_like(1.5, 13), 16000))
    app = WebApp(args.url, tmp_path / "outputs", uploads, work, **options)
    try:
        result = app.run([str(upload)], None, "utterance", True)
        assert [r.ok for r in result.results] == [True], result.message
        assert len(folders(tmp_path / "outputs")) == 1
    finally:
        app.close()
    assert_token_nowhere(public_server.token, result.message, folders_root=tmp_path)

    # a wrong token: the page says why, without the token
    wrong = client_options(
        parse_args(
            [
                "--url",
                public_server.url,
                "--root-cert",
                str(public_server.root_cert),
                "--token-file",
                str(wrong_token_file),
            ]
        )
    )
    app = WebApp(args.url, tmp_path / "outputs2", uploads, work, retries=10, **wrong)
    try:
        started = time.monotonic()
        assert app.refresh_info() is None
        assert time.monotonic() - started < FAST
        assert "refused the bearer token" in app.server_error
        assert "refused the bearer token" in app.header_html()
        assert WRONG_TOKEN not in app.header_html() + app.server_error
    finally:
        app.close()
