"""The ONNX export against FunASR's own PyTorch inference on random-weight checkpoints of the real architecture."""

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_export.checkpoint import CheckpointError, load_checkpoint
from e2v_export.parity import (
    SCORES_MAX_ABS,
    compare_batch_with_single,
    compare_with_funasr,
    funasr_reference,
    within_bounds,
)
from expected import REAL_LABELS
from funasr_references import compare_with_cached_funasr

DURATIONS = [0.5, 1.0, 3.3, 7.0, 15.0, 30.0]


def assert_within_bounds(row):
    assert within_bounds(row), row


@pytest.mark.parametrize("seconds", DURATIONS)
def test_onnx_matches_funasr_generate(exported, seconds):
    audio = speech_like(seconds, seed=int(seconds * 10))  # the clips test_runtimes and test_triton use too
    row = compare_with_cached_funasr(exported.automodel, exported.runner.run(audio), audio)
    assert row.frames == contract.frames_for_samples(len(audio))
    assert_within_bounds(row)


def test_padded_batch_gives_each_utterance_its_single_result(exported):
    waveforms = [speech_like(s, seed=i) for i, s in enumerate([0.5, 30.0, 2.2, 9.7])]
    for row in compare_batch_with_single(exported.runner, waveforms):
        assert_within_bounds(row)


def test_padded_batch_matches_funasr(tiny):
    waveforms = [speech_like(s, seed=10 + i) for i, s in enumerate([1.3, 6.0, 0.7, 12.0])]
    from e2v_export.compare import compare

    for waveform, ours in zip(waveforms, tiny.runner.run_batch(waveforms), strict=True):
        assert_within_bounds(
            compare(ours, funasr_reference(tiny.automodel, waveform), len(waveform) / contract.SAMPLE_RATE)
        )


def test_audio_shorter_than_one_frame_is_refused_and_one_frame_works(tiny):
    with pytest.raises(ValueError, match="too short"):
        tiny.runner.run(np.zeros(399, np.float32))
    one_frame = speech_like(400 / 16000, seed=3)
    result = tiny.runner.run(one_frame)
    assert result.frames.shape[0] == 1
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.embedding))


def test_silence_gives_funasrs_answer_not_nan(exported):
    silence = np.zeros(16000, np.float32)
    row = compare_with_funasr(exported.automodel, exported.runner, silence)
    result = exported.runner.run(silence)
    assert np.all(np.isfinite(result.scores)) and np.all(np.isfinite(result.frames))
    assert_within_bounds(row)


def test_onnx_files_are_valid_with_dynamic_batch_and_length(tiny):
    for name, inputs, outputs in [
        (tiny.encoder_onnx, contract.ENCODER_INPUTS, contract.ENCODER_OUTPUTS),
        (tiny.classifier_onnx, contract.CLASSIFIER_INPUTS, contract.CLASSIFIER_OUTPUTS),
    ]:
        model = onnx.load(str(name))
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert [i.name for i in model.graph.input] == list(inputs)
        assert [o.name for o in model.graph.output] == list(outputs)
        first = model.graph.input[0].type.tensor_type.shape.dim
        assert first[0].dim_param and first[1].dim_param  # symbolic batch and length
        for tensor in [*model.graph.input, *model.graph.output]:
            assert tensor.type.tensor_type.shape.dim[0].dim_param, f"{tensor.name}: batch axis not dynamic"


def test_labels_reach_the_ensemble_config(tiny):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    text = (tiny.repository / contract.ENSEMBLE_MODEL / "config.pbtxt").read_text("utf-8")
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    labels = config.parameters[contract.PARAM_LABELS].string_value.split(",")
    assert labels == REAL_LABELS


def test_unused_labels_are_masked_as_funasr_masks_them(tiny, tmp_path):
    from e2v_export.onnx_export import export_onnx
    from e2v_export.parity import funasr_automodel
    from e2v_export.runner import Emotion2vecRunner

    model_dir = tmp_path / "old_tokens"
    shutil.copytree(tiny.model_dir, model_dir)
    old_tokens = [
        "生气/angry",
        "unuse_0",
        "unuse_1",
        "开心/happy",
        "中立/neutral",
        "unuse_2",
        "难过/sad",
        "unuse_3",
        "<unk>",
    ]
    (model_dir / "tokens.txt").write_text("\n".join(old_tokens) + "\n", "utf-8")
    export_onnx(load_checkpoint(model_dir), tmp_path / "onnx")
    runner = Emotion2vecRunner(tmp_path / "onnx" / contract.ENCODER_ONNX, tmp_path / "onnx" / contract.CLASSIFIER_ONNX)
    audio = speech_like(2.0, seed=5)
    ours = runner.run(audio)
    ref = funasr_reference(funasr_automodel(model_dir), audio)  # FunASR leaves the unused labels out
    used = [i for i, t in enumerate(old_tokens) if not t.startswith("unuse")]
    unused = [i for i, t in enumerate(old_tokens) if t.startswith("unuse")]
    assert np.all(ours.scores[unused] == 0.0) and np.all(ours.frame_scores[:, unused] == 0.0)
    assert np.abs(ours.scores[used] - ref.scores).max() <= SCORES_MAX_ABS
    assert abs(ours.scores.sum() - 1.0) < 1e-6


# --- loading checkpoints --------------------------------------------------


def test_test_checkpoint_has_the_real_key_layout(tiny):
    state = torch.load(tiny.model_dir / "model.pt", weights_only=True)["model"]
    assert "proj.weight" in state and "proj.bias" in state
    assert all(k.startswith("d2v_model.") for k in state if not k.startswith("proj."))
    assert not any(".decoder." in k for k in state)
    assert "d2v_model.modality_encoders.AUDIO.alibi_scale" in state


def test_large_test_checkpoint_is_the_real_architecture():
    from e2v_export.checkpoint import emotion2vec_class
    from e2v_export.random_checkpoint import config_for

    config = config_for("large")
    model = emotion2vec_class()(model_conf=config["model_conf"], vocab_size=9)
    inference_params = sum(p.numel() for n, p in model.named_parameters() if ".decoder." not in n)
    assert inference_params == 162_140_185  # model-spec.md §2.5
    audio = config["model_conf"]["modalities"]["audio"]
    assert (config["model_conf"]["embed_dim"], config["model_conf"]["num_heads"], config["model_conf"]["depth"]) == (
        1024,
        16,
        8,
    )
    assert (audio["prenet_depth"], audio["num_extra_tokens"], audio["use_alibi_encoder"]) == (4, 10, True)


def test_missing_files_are_refused(tiny, tmp_path):
    for name in ("model.pt", "tokens.txt"):
        model_dir = tmp_path / f"without_{name}"
        shutil.copytree(tiny.model_dir, model_dir)
        (model_dir / name).unlink()
        with pytest.raises(CheckpointError, match=f"missing {name}"):
            load_checkpoint(model_dir)


def test_mismatched_checkpoint_names_the_keys(tiny, tmp_path):
    model_dir = tmp_path / "mismatch"
    shutil.copytree(tiny.model_dir, model_dir)
    state = torch.load(model_dir / "model.pt", weights_only=True)
    weights = state["model"]
    weights["proj.weight"] = torch.zeros(9, 32)  # wrong width
    for key in [k for k in weights if k.startswith("d2v_model.blocks.3.")]:
        del weights[key]  # a missing block
    weights["d2v_model.surplus.weight"] = torch.zeros(1)  # unused: ignored, not a reason to refuse
    torch.save(state, model_dir / "model.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(model_dir)
    message = str(error.value)
    assert "proj.weight" in message and "blocks.3.attn.qkv.bias" in message and "blocks.3.mlp" in message
    assert "surplus" not in message


def release_layouts(weights: dict, decoder: dict) -> dict[str, dict]:
    """model.pt contents in the shapes a released checkpoint may have, around the same weights."""
    adam = {
        "state": {0: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
        "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.01, "params": [0]}],
    }
    ema = {key.removeprefix("d2v_model."): value + 0.5 for key, value in weights.items() if ".blocks.0." in key}
    return {
        "model": {"model": weights},
        "flat": dict(weights),
        "ema": {"model": {**weights, "d2v_model._ema": ema}},
        "adam": {"model": weights, "optimizer": adam, "epoch": 40},
        "decoder": {"model": {**weights, **decoder}},
    }


@pytest.mark.parametrize("layout", ["model", "flat", "ema", "adam", "decoder"])
def test_release_layouts_load_export_and_give_funasrs_numbers(tiny, tmp_path, layout, caplog):
    from e2v_export.checkpoint import UNUSED_MODULE_PREFIXES
    from e2v_export.onnx_export import export_onnx
    from e2v_export.parity import funasr_automodel
    from e2v_export.runner import Emotion2vecRunner

    weights = torch.load(tiny.model_dir / "model.pt", weights_only=True)["model"]
    decoder = {
        "d2v_model." + key: torch.randn(value.shape)
        for key, value in tiny.automodel.model.state_dict().items()
        if key.startswith(UNUSED_MODULE_PREFIXES)
    }
    assert decoder  # FunASR's class builds the pre-training decoder
    model_dir = tmp_path / layout
    shutil.copytree(tiny.model_dir, model_dir)
    torch.save(release_layouts(weights, decoder)[layout], model_dir / "model.pt")

    with caplog.at_level("INFO", logger="e2v_export.checkpoint"):
        checkpoint = load_checkpoint(model_dir)
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    expected_names = {"ema": ["d2v_model._ema (dict of"], "adam": ["optimizer (dict of", "epoch (int)"]}
    if layout in expected_names:
        assert len(ignored) == 1 and all(name in ignored[0] for name in expected_names[layout]), ignored
    else:
        assert not ignored, ignored

    export_onnx(checkpoint, tmp_path / "onnx")
    runner = Emotion2vecRunner(tmp_path / "onnx" / contract.ENCODER_ONNX, tmp_path / "onnx" / contract.CLASSIFIER_ONNX)
    assert_within_bounds(compare_with_funasr(funasr_automodel(model_dir), runner, speech_like(2.5, seed=8)))


def test_unused_weights_are_counted_and_named_in_one_line(tiny, tmp_path, caplog):
    model_dir = tmp_path / "surplus"
    shutil.copytree(tiny.model_dir, model_dir)
    state = torch.load(model_dir / "model.pt", weights_only=True)
    for i in range(3):
        state["model"][f"d2v_model.teacher.blocks.{i}.weight"] = torch.zeros(2)
    state["model"]["d2v_model.surplus"] = torch.zeros(1)
    torch.save(state, model_dir / "model.pt")
    with caplog.at_level("INFO", logger="e2v_export.checkpoint"):
        load_checkpoint(model_dir)
    (line,) = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert "ignored 4 entries" in line and "d2v_model.teacher.blocks.* (3)" in line and "d2v_model.surplus" in line


def test_a_file_without_weights_is_refused(tiny, tmp_path):
    model_dir = tmp_path / "no_weights"
    shutil.copytree(tiny.model_dir, model_dir)
    torch.save({"model": {"epoch": 3}}, model_dir / "model.pt")
    with pytest.raises(CheckpointError, match="no weights"):
        load_checkpoint(model_dir)
    torch.save([torch.zeros(1)], model_dir / "model.pt")
    with pytest.raises(CheckpointError, match="not a dict of weights"):
        load_checkpoint(model_dir)


class NotWeights:
    pass


def test_checkpoint_with_pickled_code_is_refused(tiny, tmp_path):
    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny.model_dir, model_dir)
    with open(model_dir / "model.pt", "wb") as f:
        pickle.dump({"model": NotWeights()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(model_dir)


def test_relative_path_is_never_taken_for_a_hub_name(tiny, tmp_path, monkeypatch):
    # "emotion2vec_plus_large" is a FunASR hub alias; as an existing relative folder it must load locally.
    shutil.copytree(tiny.model_dir, tmp_path / "emotion2vec_plus_large")
    monkeypatch.chdir(tmp_path)
    assert load_checkpoint("emotion2vec_plus_large").model_dir == (tmp_path / "emotion2vec_plus_large").resolve()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint("./no_such_model")


def test_hub_name_offline_fails_fast_with_a_way_out():
    # Our machines and CI cannot reach the model hubs.
    import time

    start = time.monotonic()
    with pytest.raises(CheckpointError, match="pass its local directory"):
        load_checkpoint("iic/emotion2vec_plus_large")
    assert time.monotonic() - start < 30


def test_cli_writes_a_repository(tiny, tmp_path):
    out = tmp_path / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "e2v_export.cli", "--model", str(tiny.model_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        assert (out / model / "1" / "model.onnx").is_file()
    for model in (
        contract.PREPROCESS_MODEL,
        contract.ENCODER_MODEL,
        contract.CLASSIFIER_MODEL,
        contract.ENSEMBLE_MODEL,
    ):
        assert (out / model / "config.pbtxt").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "e2v_export.cli", "--model", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "missing config.yaml" in bad.stderr


def test_conv_front_end_as_matmuls_matches_funasr(tiny, tmp_path):
    # The int8 export runs the conv front-end as MatMuls; in fp32 it must still be FunASR's answer.
    from e2v_export.onnx_export import export_onnx
    from e2v_export.runner import Emotion2vecRunner

    export_onnx(load_checkpoint(tiny.model_dir), tmp_path, conv_as_matmul=True)
    runner = Emotion2vecRunner(tmp_path / contract.ENCODER_ONNX, tmp_path / contract.CLASSIFIER_ONNX)
    for seconds in (0.5, 7.0):
        row = compare_with_funasr(tiny.automodel, runner, speech_like(seconds, seed=31))
        assert within_bounds(row), row
    waveforms = [speech_like(s, seed=40 + i) for i, s in enumerate([0.7, 5.0, 2.0])]
    assert all(within_bounds(row) for row in compare_batch_with_single(runner, waveforms))


def test_int8_repository_quantizes_the_weight_matmuls(tiny, tmp_path):
    from e2v_export.repository import RepositoryOptions, write_repository
    from e2v_export.runner import Emotion2vecRunner

    repo = write_repository(load_checkpoint(tiny.model_dir), tmp_path / "repo", RepositoryOptions(precision="int8"))
    encoder = onnx.load(str(repo / contract.ENCODER_MODEL / "1" / "model.onnx"))
    ops = [node.op_type for node in encoder.graph.node]
    # 12 blocks x (qkv, out, fc1, fc2) + projection + conv taps of layers 1-6 (3, 3, 3, 3, 2, 2)
    assert ops.count("MatMulInteger") == 12 * 4 + 1 + 16
    assert 'string_value: "int8"' in (repo / contract.ENSEMBLE_MODEL / "config.pbtxt").read_text()
    runner = Emotion2vecRunner(repo / contract.ENCODER_MODEL / "1" / "model.onnx", tiny.classifier_onnx)
    result = runner.run(speech_like(3.0, seed=2))
    assert np.all(np.isfinite(result.scores)) and abs(result.scores.sum() - 1) < 1e-5


def test_parity_report_checks_a_model_folder_on_the_users_audio(tiny):
    # what a user with the real weights runs once: the report pointed at a checkpoint folder and their audio
    root = Path(__file__).resolve().parents[1]
    report = [sys.executable, root / "scripts" / "parity_report.py"]
    done = subprocess.run(
        [*report, "--model", tiny.model_dir, "--audio", root / "examples"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 utterances: argmax agreement 100.00%" in done.stdout and "PASS" in done.stdout
    for name in ("complaint.mp3", "good_news.ogg", "schedule.m4a"):
        assert name in done.stdout
