"""e2v-export --tune: the candidates and the choice per CPU, the accuracy bars, tuning.json, and a tuned repository
served: refused on a CPU without what its choice needs, a warning on another CPU model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from e2v_common import contract
from e2v_common.cpu import CpuInfo
from e2v_common.runtimes import TUNING_FILE, PrecisionUnavailable, check_tuned_machine
from e2v_export.compare import Agreement
from e2v_export.tune import (
    BARS,
    REFERENCE,
    Candidate,
    Measured,
    candidates,
    choose,
    exclusion,
    layouts,
    requirement,
)
from fake_cpus import AVX2_EPYC, BF16_EPYC, XEON_AMX

ROOT = Path(__file__).resolve().parents[1]
THIS_CPU = CpuInfo.this_machine()
EXACT = Agreement(
    utterances=3, argmax_agreement=1.0, frame_argmax_agreement=1.0, min_embedding_cosine=1.0,
    mean_embedding_cosine=1.0, min_frame_cosine=1.0, max_score_diff=0.0, max_frames_diff=0.0,
)  # fmt: skip
OV_BF16, ORT_INT8 = Candidate("openvino", "bf16"), Candidate("onnxruntime", "int8", "dynamic")
OV_FP32, OV_INT8 = Candidate("openvino", "fp32"), Candidate("openvino", "int8", "static")
ORT_QDQ = Candidate("onnxruntime", "int8", "static")


def test_candidates_and_what_they_need_follow_the_cpu_flags():
    avx2, bf16, amx = (CpuInfo.this_machine(text) for text in (AVX2_EPYC, BF16_EPYC, XEON_AMX))
    assert OV_BF16 not in candidates(avx2) and OV_BF16 in candidates(bf16) and OV_BF16 in candidates(amx)
    for cpu in (avx2, bf16):
        names = [c.name for c in candidates(cpu)]
        assert names[0] == "onnxruntime fp32"  # the reference first
        int8 = {"onnxruntime int8 dynamic", "onnxruntime int8 static (QDQ)", "openvino int8 static (NNCF)"}
        assert int8 <= set(names)
    assert requirement(OV_BF16, bf16)["flags"] == ["avx512_bf16", "amx_bf16"]
    assert requirement(ORT_INT8, bf16)["flags"] == ["avx512_vnni", "avx_vnni", "amx_int8"]
    assert requirement(ORT_INT8, avx2) is None  # 7-bit weights without VNNI: any CPU runs them
    assert requirement(REFERENCE, avx2) is None and requirement(OV_FP32, bf16) is None
    assert layouts(2) == [(1, 2), (2, 1)] and layouts(8) == [(1, 8), (8, 1), (2, 4)]


def test_bars_name_what_a_candidate_misses():
    assert BARS["bf16"].misses(EXACT) == [] and BARS["int8"].misses(EXACT) == []
    bf16_off = replace(EXACT, min_frame_cosine=0.9998, max_score_diff=3e-3)
    assert BARS["bf16"].misses(bf16_off) == ["per-frame cosine < 0.9999", "scores max |diff| > 0.002"]
    assert BARS["int8"].misses(bf16_off) == []  # int8's bar is argmax and embedding only
    int8_off = replace(EXACT, argmax_agreement=0.97, min_embedding_cosine=0.99)
    assert BARS["int8"].misses(int8_off) == ["argmax agreement < 0.98", "embedding cosine < 0.995"]
    assert BARS["fp32"].misses(replace(EXACT, max_score_diff=1e-3)) == ["scores max |diff| > 0.0001"]


def measured(candidate, speed, accuracy=EXACT, user_audio=True, random_weights=False, flavour="portable"):
    result = Measured(candidate, exclusion(candidate, user_audio, random_weights, flavour), speed)
    result.accuracy = asdict(accuracy)
    result.misses = BARS[candidate.precision].misses(accuracy)
    return result


@pytest.mark.parametrize("cpu_text", [AVX2_EPYC, BF16_EPYC], ids=["avx2", "bf16-vnni"])
def test_the_choice_is_the_fastest_that_holds_its_bar_and_int8_needs_your_audio_and_real_weights(cpu_text):
    cpu = CpuInfo.this_machine(cpu_text)
    speeds = {REFERENCE: 4.5, OV_FP32: 4.1, OV_BF16: 12.5, ORT_INT8: 7.0, ORT_QDQ: 6.0, OV_INT8: 19.7}  # audio s/s
    runnable = candidates(cpu)

    def pick(**given):
        return choose([measured(c, speeds[c], **given) for c in runnable], cpu.cores)[0].candidate

    # real weights, judged on your audio: int8 may be chosen, the fastest that holds its bar
    assert pick() == OV_INT8
    # without your audio, or on random weights: fp32 or bf16 only, whatever int8 measured
    best_float = OV_BF16 if cpu.bf16 else REFERENCE
    assert pick(user_audio=False) == best_float and pick(random_weights=True) == best_float
    # a candidate that misses its bar is never chosen, however fast
    missing = [measured(c, speeds[c], replace(EXACT, argmax_agreement=0.9)) if c == OV_INT8 else measured(c, speeds[c])
               for c in runnable]  # fmt: skip
    next_fastest = OV_BF16 if cpu.bf16 else ORT_INT8
    assert choose(missing, cpu.cores)[0].candidate == next_fastest
    # native flavour: only what Triton's own backends serve (no OpenVINO fp32 nor NNCF IR there)
    assert pick(flavour="native") == next_fastest
    assert exclusion(OV_FP32, True, False, "native") and not exclusion(OV_BF16, True, False, "native")


def test_several_instances_only_for_a_clear_gain_over_the_fastest_single_instance():
    ort, ov = measured(REFERENCE, 5.0), measured(OV_FP32, 4.8)
    ort.layouts, ov.layouts = {(2, 1): 5.4}, {(2, 1): 5.4}
    chosen, layout = choose([ort, ov], 2)
    assert (chosen.candidate, layout) == (REFERENCE, (1, 2))  # 8 %: not worth a second copy of the model
    ov.layouts = {(2, 1): 5.6}  # a slower single instance whose two instances serve 12 % faster than the fastest
    chosen, layout = choose([ort, ov], 2)
    assert (chosen.candidate, layout) == (OV_FP32, (2, 1))


def write_tuning(folder: Path, model: str, required: list[str] | None) -> None:
    requires = {"flags": required, "for": "a test"} if required else None
    (folder / TUNING_FILE).write_text(json.dumps({"cpu": {"model": model}, "choice": {"requires": requires}}))


def test_the_serving_side_reads_tuning_json(tmp_path):
    here = CpuInfo.this_machine().model
    assert check_tuned_machine(tmp_path) is None  # not tuned: nothing to check
    write_tuning(tmp_path, here, ["avx512_bf16", "amx_bf16"])
    assert check_tuned_machine(tmp_path, XEON_AMX.replace("AMD EPYC", here)) is None
    with pytest.raises(PrecisionUnavailable, match="avx512_bf16 or amx_bf16"):
        check_tuned_machine(tmp_path, AVX2_EPYC)
    write_tuning(tmp_path, "Another CPU", None)
    assert "tuned on Another CPU" in check_tuned_machine(tmp_path, AVX2_EPYC)


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory) -> tuple[Path, str]:
    """A repository of the tiny checkpoint tuned here with the example clips as the user's audio, and its output."""
    out = tmp_path_factory.mktemp("tuned") / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "e2v_export.cli", "--model", str(tiny.model_dir), "--out", str(out), "--tune",
         "--evaluate", str(ROOT / "examples")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_tune_measures_every_candidate_this_cpu_runs_and_writes_tuning_json(tuned):
    repository, printed = tuned
    report = json.loads((repository / contract.ENCODER_MODEL / TUNING_FILE).read_text())
    assert report["cpu"]["model"] == THIS_CPU.model and report["random_weights"] is True
    assert [c["name"] for c in report["candidates"]] == [c.name for c in candidates(THIS_CPU)]
    for c in report["candidates"]:
        assert c["not_measured"] == "" and c["audio_seconds_per_second"] > 0, c
        # each candidate's verdict is its bar applied to its numbers
        assert c["holds_bar"] == (BARS[c["precision"]].misses(Agreement(**c["accuracy"])) == []), c
        if c["precision"] == "int8":  # random weights: int8 is measured but never chosen
            assert c["excluded"] == "random weights say little about quantization on the real model"
    fp32 = [c for c in report["candidates"] if c["precision"] == "fp32"]
    assert all(c["holds_bar"] for c in fp32)  # OpenVINO fp32 gives ONNX Runtime's numbers
    choice = report["choice"]
    assert choice["precision"] in ("fp32", "bf16")
    chosen = next(c for c in report["candidates"] if c["name"] == choice["name"])
    eligible = [c for c in report["candidates"] if c["holds_bar"] and not c["excluded"]]
    best_single = max(c["audio_seconds_per_second"] for c in eligible)
    if (choice["encoder_instances"], choice["threads"]) == (1, THIS_CPU.cores):
        assert chosen["audio_seconds_per_second"] == best_single
    else:
        (served,) = [x for x in chosen["layouts"] if x["instances"] == choice["encoder_instances"]]
        assert served["audio_seconds_per_second"] >= 1.1 * best_single
    for c in eligible:  # each eligible candidate timed in every layout of several instances
        assert {(x["instances"], x["threads"]) for x in c["layouts"]} == set(layouts(THIS_CPU.cores)[1:])
    assert (choice["encoder_instances"], choice["threads"]) in set(layouts(THIS_CPU.cores))
    assert f"--tune: chose {choice['name']}" in printed and "holds its bar" in printed
    # the repository serves the choice: its configs say so
    ensemble = (repository / contract.ENSEMBLE_MODEL / "config.pbtxt").read_text()
    assert f'string_value: "{choice["runtime"]}"' in ensemble and f'string_value: "{choice["precision"]}"' in ensemble
    encoder = (repository / contract.ENCODER_MODEL / "config.pbtxt").read_text()
    assert f"count: {choice['encoder_instances']}" in encoder


@pytest.mark.skipif(not THIS_CPU.bf16, reason="needs a CPU with native bf16 (AVX512_BF16 or AMX); this one has none")
def test_bf16_is_measured_where_the_cpu_has_it(tuned):
    report = json.loads((tuned[0] / contract.ENCODER_MODEL / TUNING_FILE).read_text())
    (bf16,) = [c for c in report["candidates"] if c["precision"] == "bf16"]
    assert bf16["accuracy"]["min_embedding_cosine"] > 0.99  # bf16 rounding, not fp32 passed off as bf16


def test_a_tuned_repository_refuses_a_cpu_without_its_needs_and_warns_on_another_model(tuned, tmp_path):
    from e2v_server.serve import ServerStartError, TritonServer

    repository = tmp_path / "repo"
    shutil.copytree(tuned[0], repository)
    tuning_file = repository / contract.ENCODER_MODEL / TUNING_FILE
    report = json.loads(tuning_file.read_text())

    report["choice"]["requires"] = {"flags": ["amx_fp8_test_flag"], "for": "a test"}
    tuning_file.write_text(json.dumps(report))
    log = tmp_path / "refused.log"
    with pytest.raises(ServerStartError), TritonServer(repository, log_file=log, ready_timeout=120):
        pass
    assert "amx_fp8_test_flag" in log.read_text()

    report["choice"]["requires"], report["cpu"]["model"] = None, "Another CPU model"
    tuning_file.write_text(json.dumps(report))
    log = tmp_path / "warned.log"
    with TritonServer(repository, log_file=log) as server:
        assert server.grpc_url
    assert log.read_text().count("was tuned on Another CPU model, not on this CPU") == 1


def test_the_users_audio_is_judged_and_undecodable_files_are_named(tmp_path, capsys):
    from e2v_export.tune import audio_sets

    shutil.copy(ROOT / "examples" / "good_news.ogg", tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    sets = audio_sets([str(tmp_path)])
    assert len(sets.accuracy) == 1 and sets.calibration is None and sets.described.startswith("your audio: 1 clip")
    printed = capsys.readouterr().out
    assert "--tune: skipped" in printed and "broken.wav" in printed
    with pytest.raises(ValueError, match="no audio file could be decoded"):
        audio_sets([str(tmp_path / "broken.wav")])


def test_tune_refuses_a_fixed_runtime_or_gpu_instances(tiny, tmp_path):
    for extra, message in [
        (["--precision", "fp32"], "leave out --runtime and --precision"),
        (["--flavour", "native"], "use it with CPU instances"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "e2v_export.cli", "--model", str(tiny.model_dir), "--out", str(tmp_path / "r"),
             "--tune", *extra],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()


def test_native_flavour_serves_the_choice_with_tritons_own_backends(tiny, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions
    from e2v_export.tune import export_tuned, native_backend

    options = RepositoryOptions(flavour="native", instance_kind="cpu")
    repository = export_tuned(load_checkpoint(tiny.model_dir), tmp_path / "native", options, log=lambda *a, **k: None)
    report = json.loads((repository / contract.ENCODER_MODEL / TUNING_FILE).read_text())
    (ov_fp32,) = [c for c in report["candidates"] if c["name"] == "openvino fp32"]
    assert ov_fp32["excluded"].startswith("no Triton backend of the native flavour serves it")
    choice = report["choice"]
    assert choice["native_backend"] == native_backend(Candidate(choice["runtime"], choice["precision"]))
    assert (choice["encoder_instances"], choice["threads"]) == (1, THIS_CPU.cores)  # one layout measured natively
    encoder = text_format.Parse(
        (repository / contract.ENCODER_MODEL / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    if choice["runtime"] == "onnxruntime":
        assert encoder.platform == "onnxruntime_onnx"
    else:
        assert encoder.backend == "openvino" and encoder.parameters["HINT_BF16"].string_value == "YES"
    assert not (repository / contract.ENCODER_MODEL / "1" / "model.py").exists()  # Triton's backend, not ours
