"""Random-weight checkpoints of the real emotion2vec+ architecture, in FunASR's directory format.

The real weights cannot be downloaded everywhere (not on our CI), so tests and
benchmarks use checkpoints written here: the real emotion2vec+ large
config.yaml (``large``), the same at 768 wide (``base``), or the same topology
with small widths (``tiny``). ``model.pt`` uses the real checkpoint's layout:
a fairseq-style dict whose "model" entry holds ``d2v_model.``-prefixed
weights plus the unprefixed ``proj.*`` head, and no decoder weights.
``funasr.AutoModel(model=DIR)`` loads the result like the real model.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import torch
import yaml

from e2v_export.checkpoint import UNUSED_MODULE_PREFIXES, emotion2vec_class

SIZES = ("tiny", "base", "large")


def real_config() -> dict:
    """emotion2vec+ large's config.yaml, shipped with this package."""
    text = resources.files("e2v_export").joinpath("assets/emotion2vec_plus_large.config.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def real_tokens() -> str:
    return resources.files("e2v_export").joinpath("assets/emotion2vec_plus_large.tokens.txt").read_text("utf-8")


def config_for(size: str) -> dict:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    config = copy.deepcopy(real_config())
    conf = config["model_conf"]
    audio = conf["modalities"]["audio"]
    if size == "base":  # emotion2vec+ base: same depth, 768 wide, 12 heads
        conf.update(embed_dim=768, num_heads=12)
        audio["num_alibi_heads"] = 12
        audio["conv_pos_groups"] = 16
    elif size == "tiny":  # same topology (7 convs, 5 pos convs, 4 + 8 blocks, ALiBi, 10 extra tokens), small widths
        conf.update(embed_dim=64, num_heads=4)
        audio["num_alibi_heads"] = 4
        audio["conv_pos_groups"] = 4
        audio["feature_encoder_spec"] = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"
        audio["decoder"]["decoder_dim"] = 32
        audio["decoder"]["decoder_groups"] = 4
    return config


def make_test_checkpoint(size: str, seed: int, out: str | Path) -> Path:
    """Write config.yaml, model.pt, tokens.txt and configuration.json to ``out``."""
    Emotion2vec = emotion2vec_class()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = config_for(size)
    tokens = real_tokens()
    vocab_size = len(tokens.splitlines())

    torch.manual_seed(seed)
    model = Emotion2vec(model_conf=config["model_conf"], vocab_size=vocab_size)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        audio = model.modality_encoders["AUDIO"]
        # Trained values are not all 1.0: give each head its own ALiBi scale, one of them
        # negative to exercise FunASR's clamp_min(0).
        scale = torch.rand(audio.alibi_scale.shape, generator=generator) * 1.5 + 0.25
        scale.view(-1)[-1] = -0.5
        audio.alibi_scale.copy_(scale)
        # Non-trivial LayerNorm affines, so that a skipped norm shows up in parity tests.
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.mul_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            elif "norm" in name and name.endswith("bias"):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        # A head with spread-out logits, so that argmax checks mean something.
        model.proj.weight.mul_(8.0)

    weights = {}
    for key, tensor in model.state_dict().items():
        if key.startswith(UNUSED_MODULE_PREFIXES):
            continue  # the released checkpoints carry no decoder
        weights[key if key.startswith("proj.") else "d2v_model." + key] = tensor.clone()
    torch.save({"model": weights}, out / "model.pt")

    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    (out / "tokens.txt").write_text(tokens, "utf-8")
    (out / "configuration.json").write_text(
        json.dumps(
            {
                "framework": "pytorch",
                "task": "emotion-recognition",
                "pipeline": {"type": "funasr-pipeline"},
                "model": {"type": "funasr"},
                "file_path_metas": {
                    "init_param": "model.pt",
                    "tokenizer_conf": {"token_list": "tokens.txt"},
                    "config": "config.yaml",
                },
                "random_weights": {"size": size, "seed": seed},
            },
            indent=2,
        ),
        "utf-8",
    )
    return out
