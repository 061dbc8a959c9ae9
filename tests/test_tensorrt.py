"""TensorRT engine code that runs without a GPU: profiles, the fp32 fallback choice, the tensorrt_plan configs,
the pipeline and parity check on stand-in runners, and that the package imports without TensorRT. The builds
themselves are untested on hardware."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from string import Template
from types import SimpleNamespace

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from e2v_common import contract
from e2v_export.compare import UtteranceResult, agreement, compare
from e2v_export.runner import run_pipeline
from e2v_export.tensorrt import parity as trt_parity
from e2v_export.tensorrt.build import RECORD_FILE, build_engine, build_repository_engines
from e2v_export.tensorrt.cli import main as tensorrt_main
from e2v_export.tensorrt.parity import COSINE_TARGET, check_parity, meets_targets, parity_line, parity_waveforms
from e2v_export.tensorrt.precision import fp32_fallback_layers, keep_in_fp32
from e2v_export.tensorrt.profile import ProfileOptions, classifier_profile, encoder_profile, profile_for
from expected import REAL_LABELS

ROOT = Path(__file__).resolve().parents[1]


def test_package_imports_without_tensorrt_onnxruntime_or_torch():
    code = (
        "import sys\n"
        "sys.modules['tensorrt'] = None  # any `import tensorrt` now fails\n"
        "import e2v_export.tensorrt as t\n"
        "import e2v_export.tensorrt.profile, e2v_export.tensorrt.precision, e2v_export.tensorrt.build\n"
        "import e2v_export.tensorrt.engine, e2v_export.tensorrt.parity, e2v_export.tensorrt.cli\n"
        "assert not {'tensorrt', 'torch', 'onnxruntime'} & {k for k, v in sys.modules.items() if v is not None}\n"
        "try:\n"
        "    t.build_engine('encoder', 'x.onnx', 'x.plan', t.ProfileOptions())\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "tensorrt-cu12==10.5.0" in out.stdout


def test_cli_without_tensorrt_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert tensorrt_main(["build", "--repository", str(tmp_path)]) == 2
    assert "needs the tensorrt package" in capsys.readouterr().err


def test_tensorrt_11_without_weak_typing_is_refused(monkeypatch):
    fake = SimpleNamespace(__version__="11.4.0", BuilderFlag=SimpleNamespace())
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(RuntimeError, match="TensorRT 11 removed weak typing"):
        build_engine("encoder", "x.onnx", "x.plan", ProfileOptions())


def test_default_profile():
    options = ProfileOptions()
    assert options.samples() == (400, 8 * 16000, 30 * 16000)
    assert options.frames() == (1, 399, 1499)
    assert encoder_profile(options) == {
        "waveform": ((1, 400), (4, 128000), (8, 480000)),
        "lengths": ((1,), (4,), (8,)),
    }
    assert classifier_profile(options, 1024) == {
        "frames": ((1, 1, 1024), (4, 399, 1024), (8, 1499, 1024)),
        "frame_lengths": ((1,), (4,), (8,)),
    }


def test_profile_from_options():
    options = ProfileOptions(
        min_batch=2, opt_batch=3, max_batch=16, min_seconds=1, opt_seconds=4, max_seconds=10, pad_multiple=6000
    )
    # 10 s = 160,000 samples, rounded up to the padding multiple: 27 * 6000
    assert options.samples() == (16000, 64000, 162000)
    frames = tuple(contract.frames_for_samples(n) for n in (16000, 64000, 162000))
    assert options.frames() == frames == (49, 199, 506)
    assert encoder_profile(options)["waveform"] == ((2, 16000), (3, 64000), (16, 162000))
    assert classifier_profile(options, 768)["frames"] == ((2, 49, 768), (3, 199, 768), (16, 506, 768))
    assert profile_for(contract.ENCODER_MODEL, options) == encoder_profile(options)
    with pytest.raises(ValueError):
        profile_for(contract.CLASSIFIER_MODEL, options)  # needs the embedding size


@pytest.mark.parametrize(
    "bad",
    [
        dict(min_batch=0),
        dict(opt_batch=9),
        dict(min_batch=5, opt_batch=4),
        dict(opt_seconds=40),
        dict(min_seconds=0),
        dict(pad_multiple=0),
    ],
)
def test_bad_profile_options_are_refused(bad):
    with pytest.raises(ValueError):
        ProfileOptions(**bad).samples()


@pytest.mark.parametrize("max_batch_size,max_seconds,pad_multiple", [(8, 30.0, 8000), (16, 7.3, 8000), (1, 2.0, 6000)])
def test_repository_profile_covers_every_batch_preprocess_can_send(max_batch_size, max_seconds, pad_multiple):
    from e2v_export.repository import RepositoryOptions

    repo = RepositoryOptions(
        flavour="native",
        instance_kind="gpu",
        max_batch_size=max_batch_size,
        max_seconds=max_seconds,
        pad_multiple=pad_multiple,
    )
    options = ProfileOptions.for_repository(repo)
    shortest, _, longest = options.samples()
    # preprocess pads a batch to its longest utterance rounded up to pad_multiple (triton_models/preprocess.py)
    longest_request = int(max_seconds * contract.SAMPLE_RATE)
    assert longest >= -(-longest_request // pad_multiple) * pad_multiple
    assert shortest <= contract.FRAME_RECEPTIVE_FIELD
    assert options.max_batch == max_batch_size and options.min_batch == 1


def test_default_profile_is_the_default_repository_profile():
    from e2v_export.repository import RepositoryOptions

    assert ProfileOptions.for_repository(RepositoryOptions()) == ProfileOptions()


# --- fp32 fallback on a stand-in network -------------------------------------------------------


class Layer:
    def __init__(self, kind, name, *dtypes):
        self.type = SimpleNamespace(name=kind)  # like trt.LayerType.X
        self.name = name
        self.precision = None
        self.outputs = [SimpleNamespace(dtype=SimpleNamespace(name=d)) for d in dtypes or ("FLOAT",)]

    @property
    def num_outputs(self):
        return len(self.outputs)

    def get_output(self, i):
        return self.outputs[i]

    def set_output_type(self, i, dtype):
        self.outputs[i].dtype = dtype


class Network:
    def __init__(self, layers):
        self.layers = layers

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, i):
        return self.layers[i]


FP32 = SimpleNamespace(name="FLOAT")
KEEP = [
    Layer("NORMALIZATION", "/blocks.0/norm1/LayerNormalization"),
    Layer("SOFTMAX", "/blocks.0/attn/Softmax"),
    Layer("REDUCE", "/ReduceSum"),  # the classifier's masked sum over frames
    Layer("ELEMENTWISE", "/blocks.0/norm2/Pow"),  # a decomposed LayerNorm keeps its scope
    Layer("UNARY", "/encoder/layer_norm/Sqrt"),
    Layer("ELEMENTWISE", "/blocks.3/norm1/Div_1"),
    Layer("ELEMENTWISE", "/Pow_3"),  # a variance outside any norm scope
]
LEAVE = [
    Layer("MATRIX_MULTIPLY", "/blocks.0/attn/qkv/MatMul"),
    Layer("ELEMENTWISE", "/blocks.0/attn/Add"),
    Layer("CONVOLUTION", "/feature_extractor/conv_layers.0/0/Conv"),
    Layer("ACTIVATION", "/blocks.0/mlp/act/Erf"),
    Layer("SHAPE", "/Shape", "INT64"),
    Layer("REDUCE", "/ReduceMax", "INT32"),  # integer reductions are left alone
    Layer("ELEMENTWISE", "/blocks.0/norm1/Less", "BOOL"),
    Layer("SOFTMAX", "/weird/Softmax", "FLOAT", "INT64"),  # not all outputs are float
]


def test_fp32_fallback_selects_normalisation_softmax_and_reductions():
    network = Network(LEAVE[:3] + KEEP[:4] + LEAVE[3:] + KEEP[4:])
    assert fp32_fallback_layers(network) == KEEP[:4] + KEEP[4:]


def test_keep_in_fp32_sets_precision_and_output_types_and_names_them():
    network = Network(KEEP + LEAVE)
    names = keep_in_fp32(network, FP32)
    assert names == [f"{layer.type.name} {layer.name}" for layer in KEEP]
    for layer in KEEP:
        assert layer.precision is FP32 and all(o.dtype is FP32 for o in layer.outputs)
    for layer in LEAVE:
        assert layer.precision is None and all(o.dtype is not FP32 for o in layer.outputs)


def test_fp32_fallback_accepts_enum_types():
    import enum

    class LayerType(enum.Enum):  # what pybind11 enums look like from Python
        SOFTMAX = 1
        CONVOLUTION = 2

    softmax, conv = Layer("SOFTMAX", "/Softmax"), Layer("CONVOLUTION", "/Conv")
    softmax.type, conv.type = LayerType.SOFTMAX, LayerType.CONVOLUTION
    assert fp32_fallback_layers(Network([conv, softmax])) == [softmax]


# --- tensorrt_plan configs ------------------------------------------------------------------------


def _render(model: str, engines: str, options) -> model_config_pb2.ModelConfig:
    from e2v_export.repository import TRITON_MODELS, template_values

    values = template_values(options, REAL_LABELS, 1024, "e2v", False)
    text = Template((TRITON_MODELS / f"{model}.{engines}.pbtxt.in").read_text("utf-8")).substitute(values)
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("max_batch_size", [8, 16])
def test_tensorrt_configs_parse_and_match_the_engines(max_batch_size):
    from e2v_export.repository import RepositoryOptions

    options = RepositoryOptions(flavour="native", instance_kind="gpu", max_batch_size=max_batch_size)
    profile = ProfileOptions.for_repository(options)
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        config = _render(model, "tensorrt", options)
        native = _render(model, "native", options)
        assert config.name == model
        assert config.platform == "tensorrt_plan" and config.default_model_filename == contract.PLAN_FILE
        assert config.max_batch_size == profile.max_batch == max_batch_size
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        # the same tensors as the onnxruntime model it replaces, which the ensemble already maps
        assert list(config.input) == list(native.input) and list(config.output) == list(native.output)
        engine_inputs = profile_for(model, profile, 1024)
        assert [i.name for i in config.input] == list(engine_inputs)
        for tensor in config.input:  # [B] + dims (reshaped) is the engine's rank
            rank = 1 + len(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)
            assert rank == len(engine_inputs[tensor.name][0])
    encoder = _render(contract.ENCODER_MODEL, "tensorrt", options)
    shortest, _, longest = profile.samples()
    for warmup in encoder.model_warmup:  # warm-up shapes must lie inside the profile
        assert 1 <= warmup.batch_size <= profile.max_batch
        assert shortest <= warmup.inputs[contract.ENCODER_INPUTS[0]].dims[0] <= longest


# --- parity arithmetic and the pipeline, with stand-in runners ------------------------------------


def _fake_encoder(dim=6):
    def run(feeds):
        waveform, lengths = feeds["waveform"], feeds["lengths"]
        t = contract.frames_for_samples(waveform.shape[1])
        frames = np.zeros((len(waveform), t, dim), np.float32)
        frame_lengths = contract.frames_for_samples(lengths)
        for b, n in enumerate(frame_lengths):
            for k in range(n):
                chunk = waveform[b, k * 320 : k * 320 + 400]
                frames[b, k] = [chunk.mean(), chunk.std(), chunk.max(), chunk.min(), k % 7, b * 0]
        return {"frames": frames, "frame_lengths": frame_lengths.astype(np.int64)}

    return run


def _fake_classifier(weights):
    def run(feeds):
        frames, lengths = feeds["frames"], feeds["frame_lengths"]
        valid = (np.arange(frames.shape[1])[None, :] < lengths[:, None])[..., None]
        embedding = (frames * valid).sum(1) / np.maximum(lengths, 1)[:, None]

        def softmax(x):
            e = np.exp(x - x.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)

        return {
            "embedding": embedding,
            "scores": softmax(embedding @ weights),
            "frame_scores": softmax(frames @ weights) * valid,
            "frame_embedding": frames * valid,
            "num_frames": lengths,
        }

    return run


def test_pipeline_splits_padded_batches_back_into_utterances():
    waveforms = parity_waveforms(5, 1.5, seed=3)
    weights = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    alone = run_pipeline(_fake_encoder(), _fake_classifier(weights), waveforms, batch_size=1)
    batched = run_pipeline(_fake_encoder(), _fake_classifier(weights), waveforms, batch_size=3)
    assert len(alone) == len(batched) == 5
    for a, b, w in zip(alone, batched, waveforms, strict=True):
        assert isinstance(a, UtteranceResult) and isinstance(b, UtteranceResult)
        frames = contract.frames_for_samples(len(w))
        # cut to the utterance's own frames, though the batch was padded to its longest
        assert a.frame_scores.shape == b.frame_scores.shape == (frames, 4)
        assert a.frames.shape == b.frames.shape == (frames, 6)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.frames, b.frames, rtol=1e-5, atol=1e-6)
    result = agreement([compare(b, a) for a, b in zip(alone, batched, strict=True)])
    assert meets_targets(result) and result.argmax_agreement == 1.0 and result.min_embedding_cosine > 0.99999


def _utterance(rng) -> UtteranceResult:
    return UtteranceResult(rng.random(9), rng.standard_normal(16), rng.standard_normal((20, 16)), rng.random((20, 9)))


def _nudged(result: UtteranceResult, rng, scale=1e-6) -> UtteranceResult:
    return UtteranceResult(*(v + scale * rng.standard_normal(v.shape) for v in dataclasses.astuple(result)))


def _agreement(candidates, references):
    return agreement([compare(c, r) for c, r in zip(candidates, references, strict=True)])


def test_parity_targets_on_argmax_agreement_and_cosine():
    rng = np.random.default_rng(0)
    reference = [_utterance(rng) for _ in range(200)]
    close = [_nudged(r, rng) for r in reference]
    assert meets_targets(_agreement(close, reference))

    flipped = list(close)
    flipped[0] = dataclasses.replace(flipped[0], scores=-flipped[0].scores)  # one utterance of 200 disagrees: 99.5 %
    result = _agreement(flipped, reference)
    assert result.argmax_agreement == pytest.approx(0.995) and meets_targets(result)
    assert parity_line(result).endswith(": PASS") and "target >= 99.5%" in parity_line(result)
    flipped[1] = dataclasses.replace(flipped[1], scores=-flipped[1].scores)  # two: 99.0 %, below the target
    assert not meets_targets(_agreement(flipped, reference))

    drifted = [dataclasses.replace(r, embedding=r.embedding + 0.1 * rng.standard_normal(16)) for r in reference]
    result = _agreement(drifted, reference)
    assert result.argmax_agreement == 1.0
    assert result.min_embedding_cosine < COSINE_TARGET and not meets_targets(result)
    assert parity_line(result).endswith(": FAIL")


def _stand_in_runners(monkeypatch, engine_weights, onnx_weights, calls):
    """check_parity's runners replaced by the stand-ins, chosen by the file's model folder."""

    def maker(side, weights):
        def make(path):
            path = Path(path)
            model = path.parent.parent.name
            run = _fake_encoder() if model == contract.ENCODER_MODEL else _fake_classifier(weights)

            def runner(feeds):
                calls.append((side, model, path.name, {k: v.shape for k, v in feeds.items()}))
                return run(feeds)

            return runner

        return make

    monkeypatch.setattr(trt_parity, "onnx_reference", maker("onnx", onnx_weights))
    monkeypatch.setattr(trt_parity, "EngineRunner", maker("engine", engine_weights))


def _repository_with_engines(root: Path) -> Path:
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        (root / model / "1").mkdir(parents=True)
        (root / model / "1" / contract.ONNX_FILE).write_bytes(b"onnx")
        (root / model / "1" / contract.PLAN_FILE).write_bytes(b"plan")
    return root


def test_check_parity_runs_both_pipelines_on_the_same_batches(monkeypatch, tmp_path):
    weights = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    calls = []
    _stand_in_runners(monkeypatch, weights, weights, calls)
    result = check_parity(_repository_with_engines(tmp_path), count=7, max_seconds=1.5, batch_size=3)
    assert result.utterances == 7 and result.argmax_agreement == 1.0 and result.min_embedding_cosine > 0.99999
    assert meets_targets(result)
    onnx = [c[1:] for c in calls if c[0] == "onnx"]
    engine = [c[1:] for c in calls if c[0] == "engine"]
    assert onnx and [(m, s) for m, _, s in onnx] == [(m, s) for m, _, s in engine]  # the same padded batches
    assert {f for _, f, _ in onnx} == {contract.ONNX_FILE} and {f for _, f, _ in engine} == {contract.PLAN_FILE}
    assert [s[contract.ENCODER_INPUTS[1]][0] for m, _, s in onnx if m == contract.ENCODER_MODEL] == [3, 3, 1]


def test_parity_cli_prints_the_verdict_and_fails_below_the_targets(monkeypatch, tmp_path, capsys):
    weights = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    repository = _repository_with_engines(tmp_path)
    argv = ["parity", "--repository", str(repository), "--count", "6", "--max-seconds", "1.5", "--batch-size", "4"]
    _stand_in_runners(monkeypatch, weights, weights, [])
    assert tensorrt_main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("6 utterances: argmax agreement 100.00%") and line.endswith(": PASS")
    _stand_in_runners(monkeypatch, -weights, weights, [])  # the engine's top label is ONNX Runtime's bottom one
    assert tensorrt_main(argv) == 1
    assert capsys.readouterr().out.strip().endswith(": FAIL")


def test_parity_without_engines_says_to_build_them(tmp_path):
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):  # exported, engines not built
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / contract.ONNX_FILE).write_bytes(b"onnx")
    out = subprocess.run(
        [sys.executable, "-m", "e2v_export.tensorrt", "parity", "--repository", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert f"{contract.ENCODER_MODEL}/1/{contract.PLAN_FILE}" in out.stderr
    assert contract.ONNX_FILE not in out.stderr and "e2v_export.tensorrt build --repository" in out.stderr


# --- the build flow against a stand-in of the TensorRT 10 Python API -------------------------------


class FakeNetwork(Network):
    def __init__(self):
        super().__init__(
            [
                Layer("NORMALIZATION", "/blocks.0/norm1/LayerNormalization"),
                Layer("MATRIX_MULTIPLY", "/blocks.0/attn/MatMul"),
                Layer("SOFTMAX", "/blocks.0/attn/Softmax"),
            ]
        )
        self.inputs = {}

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        name = list(self.inputs)[i]
        return SimpleNamespace(name=name, shape=self.inputs[name])


class FakeTensorRT:
    """The parts of the tensorrt module that build_engine uses, recording what it is asked to do."""

    __version__ = "10.5.0.18"
    float32 = SimpleNamespace(name="FLOAT")
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    BuilderFlag = SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY_PRECISION_CONSTRAINTS")
    MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")

    def __init__(self, inputs: dict):
        self.inputs = inputs  # model folder name -> {input name: shape}, as the parser would find them
        self.built = []  # (network, config) per build
        fake = self

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                assert flags == 1 << 0  # explicit batch
                return FakeNetwork()

            def create_builder_config(self):
                config = SimpleNamespace(flags=set(), profiles=[], pools={})
                config.set_flag = config.flags.add
                config.add_optimization_profile = config.profiles.append
                config.set_memory_pool_limit = config.pools.__setitem__
                return config

            def create_optimization_profile(self):
                profile = SimpleNamespace(shapes={})
                profile.set_shape = lambda name, *shapes: profile.shapes.__setitem__(name, shapes)
                return profile

            def build_serialized_network(self, network, config):
                fake.built.append((network, config))
                return b"plan:" + ",".join(network.inputs).encode()

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                self.network.inputs = dict(fake.inputs[Path(path).parent.parent.name])
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_repository_engines_against_a_stand_in(monkeypatch, tmp_path):
    fake = FakeTensorRT(
        {
            contract.ENCODER_MODEL: {"waveform": (-1, -1), "lengths": (-1,)},
            contract.CLASSIFIER_MODEL: {"frames": (-1, -1, 768), "frame_lengths": (-1,)},
        }
    )
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    for model in (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / "model.onnx").write_bytes(b"onnx")
    lines = []
    options = ProfileOptions(max_batch=16, opt_batch=8, max_seconds=10)
    record = build_repository_engines(tmp_path, options, workspace_gib=2, log=lines.append)

    for (network, config), model in zip(fake.built, (contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL), strict=True):
        assert config.flags == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
        assert config.pools == {"WORKSPACE": 2 << 30}
        (profile,) = config.profiles
        assert profile.shapes == profile_for(model, options, 768)
        assert [layer.precision for layer in network.layers] == [FakeTensorRT.float32, None, FakeTensorRT.float32]
        assert (tmp_path / model / "1" / "model.plan").read_bytes().startswith(b"plan:")
    saved = json.loads((tmp_path / contract.ENSEMBLE_MODEL / RECORD_FILE).read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["tensorrt_version"] == "10.5.0.18" and saved["options"]["max_batch"] == 16
    encoder, classifier = saved["engines"]
    assert encoder["profile"]["waveform"] == {"min": [1, 400], "opt": [8, 128000], "max": [16, 160000]}
    assert classifier["profile"]["frames"]["max"] == [16, contract.frames_for_samples(160000), 768]
    assert encoder["fp32_layers"] == [
        "NORMALIZATION /blocks.0/norm1/LayerNormalization",
        "SOFTMAX /blocks.0/attn/Softmax",
    ]
    assert any("kept in fp32" in line for line in lines) and any("  SOFTMAX" in line for line in lines)


def test_an_onnx_file_without_the_contracts_inputs_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT({"encoder": {"input": (-1, -1)}}))
    (tmp_path / "encoder" / "1").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="expected"):  # e.g. FunASR's own export (one input named 'input')
        build_engine(
            "encoder",
            tmp_path / "encoder" / "1" / "model.onnx",
            tmp_path / "x.plan",
            ProfileOptions(),
            log=lambda line: None,
        )


def test_e2v_export_tensorrt_renders_tensorrt_plan_models():
    import dataclasses

    from e2v_export.repository import RepositoryOptions, render_configs, template_values

    if "tensorrt" not in {f.name for f in dataclasses.fields(RepositoryOptions)}:
        pytest.skip("e2v-export --tensorrt is not wired into repository.py yet")
    options = RepositoryOptions(flavour="native", instance_kind="gpu", tensorrt=True, max_seconds=7.3)
    configs = {
        name: text_format.Parse(text, model_config_pb2.ModelConfig())
        for name, text in render_configs(options, template_values(options, REAL_LABELS, 1024, "e2v", False)).items()
    }
    assert configs[contract.ENCODER_MODEL].platform == configs[contract.CLASSIFIER_MODEL].platform == "tensorrt_plan"
    assert configs[contract.PREPROCESS_MODEL].backend == "python"
    for bad in (dict(flavour="portable", tensorrt=True), dict(flavour="native", instance_kind="cpu", tensorrt=True)):
        with pytest.raises(ValueError):
            RepositoryOptions(**bad).check()
    # the onnxruntime-TensorRT profile of the plain native flavour covers the padded longest batch too
    native = RepositoryOptions(flavour="native", instance_kind="gpu", max_seconds=7.3)
    assert template_values(native, REAL_LABELS, 1024, "e2v", False)["max_samples"] == 120000
