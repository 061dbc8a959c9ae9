"""The gateway of `e2v-serve --public`: real nginx with the shipped configuration in front of a real Triton.

What an operator putting the service on the internet relies on: TLS, the bearer token on everything but
health, requests larger than the largest legal one refused before Triton buffers them, Triton's admin
protocols behind their own key, and the launcher refusing unsafe settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_server import gateway

MB = 1024 * 1024


def _client(public_server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(public_server.url, ssl=True, root_certificates=str(public_server.root_cert))


def _bearer(token: str) -> dict:
    return {contract.TOKEN_HEADER: f"Bearer {token}"}


def _infer(client, samples: np.ndarray, headers: dict):
    tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, samples.size], "FP32")
    tensor.set_data_from_numpy(samples.reshape(1, -1).astype(np.float32))
    output = grpcclient.InferRequestedOutput(contract.SCORES)
    return client.infer(contract.ENSEMBLE_MODEL, [tensor], outputs=[output], headers=headers)


def _curl(public_server, path: str, *args: str) -> tuple[int, str]:
    """(HTTP status, body) of a request through the gateway over TLS, the gateway's certificate pinned."""
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(public_server.root_cert), "-w", "\n%{http_code}", *args,
         f"{public_server.https}{path}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def test_a_good_request_scores_over_tls_as_triton_scores_it(public_server, tiny):
    samples = speech_like(3.0, seed=3)
    with _client(public_server) as client:
        scores = _infer(client, samples, _bearer(public_server.token)).as_numpy(contract.SCORES)[0]
    with grpcclient.InferenceServerClient(public_server.triton_grpc_url) as direct:
        expected = _infer(direct, samples, {}).as_numpy(contract.SCORES)[0]
    np.testing.assert_array_equal(scores, expected)
    assert np.isclose(scores.sum(), 1.0, atol=1e-4)


def test_the_longest_legal_request_passes_the_size_limit(public_server):
    max_seconds = float(gateway.model_parameters(public_server.repository, contract.ENSEMBLE_MODEL)["max_seconds"])
    samples = speech_like(max_seconds, seed=4)
    with _client(public_server) as client:
        scores = _infer(client, samples, _bearer(public_server.token)).as_numpy(contract.SCORES)
    assert scores.shape == (1, 9)


@pytest.mark.parametrize(
    "headers",
    [{}, _bearer("x" * 43), {contract.TOKEN_HEADER: "Bearer"}, "lower-case scheme", "token in another header"],
    ids=["missing", "wrong", "empty", "lower-case-scheme", "other-header"],
)
def test_grpc_without_the_token_is_refused_as_unauthenticated(public_server, headers):
    if headers == "lower-case scheme":
        headers = {contract.TOKEN_HEADER: f"bearer{public_server.token}"}  # not "Bearer <token>"
    elif headers == "token in another header":
        headers = {"x-api-key": public_server.token}
    with _client(public_server) as client:
        for call in (
            lambda: _infer(client, speech_like(1.0, seed=5), headers),
            lambda: client.get_model_config(contract.ENSEMBLE_MODEL, headers=headers),
            lambda: client.get_server_metadata(headers=headers),
            lambda: client.is_model_ready(contract.ENSEMBLE_MODEL, headers=headers),
        ):
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "bearer token" in refused.value.message()


def test_health_is_open_for_probes_and_nothing_else_is(public_server):
    with _client(public_server) as client:
        assert client.is_server_live() and client.is_server_ready()  # no token
    assert _curl(public_server, "/v2/health/ready")[0] == 200
    assert _curl(public_server, "/v2/health/live")[0] == 200
    status, body = _curl(public_server, f"/v2/models/{contract.ENSEMBLE_MODEL}/config")
    assert status == 401 and json.loads(body) == {"error": "missing or wrong bearer token"}
    assert _curl(public_server, "/anything-else", "-H", f"Authorization: Bearer {public_server.token}")[0] == 404
    assert _curl(public_server, "/metrics")[0] == 404  # metrics stay on Triton's loopback port


def test_http_with_the_token_reads_the_labels_and_scores(public_server, tiny):
    token = ("-H", f"Authorization: Bearer {public_server.token}")
    status, body = _curl(public_server, f"/v2/models/{contract.ENSEMBLE_MODEL}/config", *token)
    assert status == 200
    labels = json.loads(body)["parameters"][contract.PARAM_LABELS]["string_value"].split(",")
    assert len(labels) == 9
    samples = speech_like(1.0, seed=6)
    request = {"inputs": [{"name": contract.ENSEMBLE_INPUT, "shape": [1, samples.size], "datatype": "FP32",
                           "data": samples.tolist()}], "outputs": [{"name": contract.SCORES}]}  # fmt: skip
    body_file = public_server.token_file.parent / "request.json"
    body_file.write_text(json.dumps(request))
    status, body = _curl(public_server, f"/v2/models/{contract.ENSEMBLE_MODEL}/infer", *token, "-d", f"@{body_file}")
    assert status == 200, body
    assert len(json.loads(body)["outputs"][0]["data"]) == 9


def _triton_tree_rss(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / MB


def test_an_oversize_request_is_refused_before_triton_buffers_it(public_server):
    from e2v_bench.memory import ProcessTreeMemory

    triton = public_server.triton_pid()
    with _client(public_server) as client:
        _infer(client, speech_like(2.0, seed=7), _bearer(public_server.token))  # warm
        before = _triton_tree_rss(triton)
        huge = np.zeros(60_000_000, dtype=np.float32)  # 229 MB, the size that once grew the server by 3 GB
        with ProcessTreeMemory(triton, 0.05) as memory:
            start = time.monotonic()
            with pytest.raises(InferenceServerException) as refused:
                _infer(client, huge, _bearer(public_server.token))
            seconds = time.monotonic() - start
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "request too large" in refused.value.message()
        # the server still scores afterwards
        assert _infer(client, speech_like(1.0, seed=8), _bearer(public_server.token)).as_numpy(contract.SCORES).size
    growth = memory.peak - before
    print(f"oversize gRPC request refused in {seconds:.1f} s; Triton's peak growth {growth:.1f} MB")
    assert growth < 50, f"Triton's memory grew by {growth:.0f} MB on a refused request"

    # HTTP: refused from its Content-Length, before any of the body is read
    big = public_server.token_file.parent / "big.json"
    big.write_bytes(b" " * (gateway.RequestLimits.for_seconds(30, 300).http_bytes + 1))
    status, body = _curl(
        public_server,
        f"/v2/models/{contract.ENSEMBLE_MODEL}/infer",
        "-H", f"Authorization: Bearer {public_server.token}", "--data-binary", f"@{big}",
    )  # fmt: skip
    assert status == 413 and "request too large" in json.loads(body)["error"]


def test_admin_protocols_need_the_admin_key_even_with_the_token(public_server):
    token = _bearer(public_server.token)
    admin = {gateway.GRPC_ADMIN_KEY_HEADER: public_server.admin_key}
    with (
        _client(public_server) as client,
        grpcclient.InferenceServerClient(public_server.triton_grpc_url) as direct,
    ):
        for target, headers in ((client, token), (direct, {})):  # through the gateway, and on loopback
            for call in (
                lambda c, h: c.get_inference_statistics(contract.ENSEMBLE_MODEL, headers=h),
                lambda c, h: c.get_model_repository_index(headers=h),
                lambda c, h: c.get_system_shared_memory_status(headers=h),
                lambda c, h: c.get_trace_settings(headers=h),
                lambda c, h: c.get_log_settings(headers=h),
            ):
                with pytest.raises(InferenceServerException, match="restricted"):
                    call(target, headers)
            assert target.get_inference_statistics(contract.ENSEMBLE_MODEL, headers={**headers, **admin})
    status, body = _curl(public_server, "/v2/models/stats", "-H", f"Authorization: Bearer {public_server.token}")
    assert status == 403 and "restricted" in body
    status, _ = _curl(
        public_server,
        "/v2/models/stats",
        "-H", f"Authorization: Bearer {public_server.token}",
        "-H", f"{gateway.ADMIN_KEY_HEADER}: {public_server.admin_key}",
    )  # fmt: skip
    assert status == 200


def test_a_client_that_does_not_trust_the_certificate_is_refused(public_server, tmp_path):
    other_cert, _ = gateway.self_signed_certificate("127.0.0.1", tmp_path)
    untrusting = grpcclient.InferenceServerClient(public_server.url, ssl=True, root_certificates=str(other_cert))
    plaintext = grpcclient.InferenceServerClient(public_server.url)  # no TLS at all
    for client in (untrusting, plaintext):
        with client, pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=10)


def test_the_token_never_reaches_the_logs(public_server):
    text = public_server.log.read_text()
    run_dirs = list(Path(tempfile.gettempdir()).glob("e2v-gateway-*/*.log"))  # nginx's access and error logs
    assert public_server.token not in text
    assert all(public_server.token not in log.read_text() for log in run_dirs)


def _serve(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"E2V_CACHE": str(cache)} if cache else {})}
    command = [str(Path(sys.executable).with_name("e2v-serve")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_e2v_serve_refuses_unsafe_public_settings(tiny, tmp_path):
    repository = f"--model-repository={tiny.repository}"
    short = tmp_path / "short"
    short.write_text("abc\n")
    cases = {
        "needs --token-file": [repository, "--public=127.0.0.1:0"],
        "Triton stays on loopback": [repository, "--public=127.0.0.1:0", f"--token-file={short}", "--host=0.0.0.0"],
        "32 or more": [repository, "--public=127.0.0.1:0", f"--token-file={short}"],
        "go together": [repository, "--public=127.0.0.1:0", f"--token-file={short}", f"--tls-cert={short}"],
        "HOST:PORT": [repository, "--public=somewhere", f"--token-file={short}"],
    }
    for message, args in cases.items():
        result = _serve(*args, cache=tmp_path / "cache")
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert "abc" not in result.stderr + result.stdout  # the token file's content is never shown


def test_print_gateway_env_gives_the_limits_of_the_repository(tiny):
    result = _serve(f"--model-repository={tiny.repository}", "--print-gateway-env")
    assert result.returncode == 0
    values = dict(line.split("=", 1) for line in result.stdout.split())
    max_seconds = float(gateway.model_parameters(tiny.repository, contract.ENSEMBLE_MODEL)["max_seconds"])
    stream_seconds = float(gateway.model_parameters(tiny.repository, contract.STREAM_MODEL)["max_stream_seconds"])
    samples = int(max_seconds * contract.SAMPLE_RATE)
    assert int(values["E2V_GRPC_MAX_BODY"]) == samples * 4 + gateway.HEADROOM_BYTES
    assert int(values["E2V_HTTP_MAX_BODY"]) == samples * gateway.HTTP_BYTES_PER_SAMPLE + gateway.HEADROOM_BYTES
    # one live stream: its seconds of audio in 20 ms chunks of 1,280 bytes of samples and 512 around them
    assert int(values["E2V_GRPC_STREAM_MAX_BODY"]) == stream_seconds * 50 * (1280 + 512) + gateway.HEADROOM_BYTES


def test_render_fills_every_placeholder_and_refuses_a_missing_one():
    values = {name: "x" for name in gateway.PLACEHOLDER.findall(gateway.TEMPLATE.read_text())}
    assert "${E2V_" not in gateway.render(values)
    assert "$http_authorization" in gateway.render(values)  # nginx's own variables are left alone
    with pytest.raises(gateway.GatewayError, match="E2V_TOKEN"):
        gateway.render({k: v for k, v in values.items() if k != "E2V_TOKEN"})
