"""The model repository served by a real tritonserver, over gRPC, against FunASR's PyTorch inference."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_export.compare import UtteranceResult, compare
from e2v_export.parity import within_bounds
from e2v_export.repository import FLAVOURS, RepositoryOptions, render_configs, template_values
from expected import REAL_LABELS
from funasr_references import compare_with_cached_funasr

ALL_OUTPUTS = contract.ENSEMBLE_OUTPUTS


def audio_input(samples: np.ndarray, datatype="FP32"):
    samples = samples if samples.ndim == 2 else samples[None, :]
    tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, list(samples.shape), datatype)
    tensor.set_data_from_numpy(samples)
    return tensor


def as_result(response) -> UtteranceResult:
    frames = int(response.as_numpy(contract.NUM_FRAMES)[0, 0])
    return UtteranceResult(
        scores=response.as_numpy(contract.SCORES)[0],
        embedding=response.as_numpy(contract.EMBEDDING)[0],
        frames=response.as_numpy(contract.FRAME_EMBEDDING)[0, :frames],
        frame_scores=response.as_numpy(contract.FRAME_SCORES)[0, :frames],
    )


def infer(url: str, samples: np.ndarray) -> UtteranceResult:
    with grpcclient.InferenceServerClient(url) as client:
        response = client.infer(
            contract.ENSEMBLE_MODEL,
            [audio_input(samples)],
            outputs=[grpcclient.InferRequestedOutput(name) for name in ALL_OUTPUTS],
        )
    return as_result(response)


@pytest.mark.parametrize("seconds", [0.5, 3.3, 12.0, 30.0])
def test_ensemble_matches_funasr(served, seconds):
    exported, server = served
    audio = speech_like(seconds, seed=int(seconds * 10))  # test_export's clips
    row = compare_with_cached_funasr(exported.automodel, infer(server.grpc_url, audio), audio)
    assert row.frames == contract.frames_for_samples(len(audio))
    assert within_bounds(row), row


def encoder_stats(client):
    stats = client.get_inference_statistics(contract.ENCODER_MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_requests_of_different_lengths_are_batched(served):
    exported, server = served
    lengths = [0.6, 29.0, 3.1, 11.0, 1.7, 7.3, 19.5, 2.4]
    waveforms = [speech_like(s, seed=200 + i) for i, s in enumerate(lengths)]
    results, errors = [None] * len(waveforms), []
    done = threading.Semaphore(0)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        before = encoder_stats(client)

        def callback(index, result, error):
            results[index], _ = (result, errors.append(error) if error else None)
            done.release()

        for i, w in enumerate(waveforms):
            client.async_infer(
                contract.ENSEMBLE_MODEL,
                [audio_input(w)],
                callback=lambda result, error, i=i: callback(i, result, error),
                outputs=[grpcclient.InferRequestedOutput(name) for name in ALL_OUTPUTS],
            )
        for _ in waveforms:
            assert done.acquire(timeout=300)
        after = encoder_stats(client)
    assert not errors, errors
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(waveforms)
    assert executions < inferences, f"encoder ran {inferences} requests in {executions} executions: no batching"
    for waveform, response in zip(waveforms, results, strict=True):
        alone = exported.runner.run(waveform)
        row = compare(as_result(response), alone, len(waveform) / contract.SAMPLE_RATE)
        assert within_bounds(row), row


@pytest.mark.parametrize(
    "samples, datatype, message",
    [
        (np.zeros((1, 0), np.float32), "FP32", "empty"),
        (np.zeros((1, 200), np.float32), "FP32", "too short"),
        (np.full((1, 16000), np.nan, np.float32), "FP32", "NaN"),
        (np.array([[0.1, np.inf] * 8000], np.float32), "FP32", "NaN or infinite"),
        (np.zeros((1, 16000 * 31), np.float32), "FP32", "too long"),
        (np.zeros((1, 16000), np.int16), "INT16", "data-type"),
        (np.zeros((1, 2, 16000), np.float32), "FP32", "shape"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(tiny_server, samples, datatype, message):
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, list(samples.shape), datatype)
        tensor.set_data_from_numpy(samples)
        with pytest.raises(InferenceServerException) as error:
            client.infer(contract.ENSEMBLE_MODEL, [tensor])
        assert message.lower() in str(error.value).lower()
    good = infer(tiny_server.grpc_url, speech_like(1.0, seed=7))
    assert good.frames.shape[0] == 49 and abs(good.scores.sum() - 1) < 1e-5


def test_model_identity_is_in_the_ensemble_config(tiny_server):
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        config = client.get_model_config(contract.ENSEMBLE_MODEL, as_json=True)["config"]
    params = contract.string_parameters(config)
    assert params[contract.PARAM_LABELS].split(",") == REAL_LABELS
    assert params[contract.PARAM_EMBEDDING_DIM] == "64"
    assert float(params[contract.PARAM_FRAMES_PER_SECOND]) == contract.FRAMES_PER_SECOND
    assert float(params[contract.PARAM_MAX_SECONDS]) == RepositoryOptions().max_seconds
    assert params[contract.PARAM_RANDOM_WEIGHTS] == "true"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_configs_parse_with_tritons_model_config_protobuf(flavour):
    options = RepositoryOptions(flavour=flavour, instance_kind="gpu" if flavour == "native" else "cpu")
    labels = REAL_LABELS
    configs = {
        name: text_format.Parse(text, model_config_pb2.ModelConfig())
        for name, text in render_configs(options, template_values(options, labels, 1024, "e2v", False)).items()
    }
    ensemble = configs[contract.ENSEMBLE_MODEL]
    assert ensemble.platform == "ensemble"
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [
        contract.PREPROCESS_MODEL,
        contract.ENCODER_MODEL,
        contract.CLASSIFIER_MODEL,
    ]
    assert all(config.name == name for name, config in configs.items())
    for step in ensemble.ensemble_scheduling.step:  # Triton refuses an ensemble larger than its parts
        assert ensemble.max_batch_size <= configs[step.model_name].max_batch_size
    assert configs[contract.SEGMENTS_MODEL].max_batch_size == 0  # one recording's piece per request
    encoder = configs[contract.ENCODER_MODEL]
    assert [i.name for i in encoder.input] == list(contract.ENCODER_INPUTS)
    assert [o.name for o in encoder.output] == list(contract.ENCODER_OUTPUTS)
    assert encoder.dynamic_batching.max_queue_delay_microseconds == options.queue_delay_us
    assert configs[contract.PREPROCESS_MODEL].input[0].allow_ragged_batch
    if flavour == "native":
        assert encoder.platform == "onnxruntime_onnx"
        assert list(encoder.input[1].reshape.shape) == []  # lengths [B]
        accelerator = encoder.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
        assert encoder.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    else:
        assert encoder.backend == "python" and encoder.input[0].allow_ragged_batch
        # one runtime call takes at most max_run_seconds of audio: in samples for the encoder, frames after it
        run_samples = round(options.max_run_seconds * contract.SAMPLE_RATE)
        run_steps = {
            name: int(configs[name].parameters[contract.PARAM_MAX_RUN_STEPS].string_value)
            for name in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL)
        }
        assert run_steps == {
            contract.ENCODER_MODEL: run_samples,
            contract.CLASSIFIER_MODEL: contract.frames_for_samples(run_samples),
        }
        # rows are cut to whole buckets: length_bucket samples, then its frames (a bounded set of shapes)
        buckets = [
            int(configs[name].parameters[contract.PARAM_LENGTH_BUCKET].string_value)
            for name in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL)
        ]
        assert buckets == [options.length_bucket, options.length_bucket // contract.FRAME_HOP]


def test_e2v_serve_starts_reports_ready_and_stops_on_sigterm(tiny, tmp_path):
    from e2v_server.serve import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2v_server.cli",
            "--model-repository",
            str(tiny.repository),
            "--grpc-port",
            str(port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-file",
            str(tmp_path / "triton.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "READY" in line or process.poll() is not None:
                break
        assert "READY" in lines[-1], "".join(lines)
        assert f"127.0.0.1:{port}" in lines[-1]
        result = infer(f"127.0.0.1:{port}", speech_like(2.0, seed=1))
        assert abs(result.scores.sum() - 1) < 1e-5
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        assert "stopped" in out
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("output", contract.ENSEMBLE_OUTPUTS)
def test_a_client_can_ask_for_any_single_output(tiny_server, output):
    # Triton 2.51 deadlocks an ensemble whose outputs also feed a later step; ours must not.
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        response = client.infer(
            contract.ENSEMBLE_MODEL,
            [audio_input(speech_like(1.0, seed=3))],
            outputs=[grpcclient.InferRequestedOutput(output)],
        )
    assert response.as_numpy(output) is not None
