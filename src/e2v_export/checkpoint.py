"""Find an emotion2vec+ checkpoint and load it through FunASR's own Emotion2vec class.

The model is built from the checkpoint's own config.yaml by FunASR's class, and
the weights are mapped exactly as FunASR maps them (the ``scope_map`` of the
config, i.e. the ``d2v_model.`` prefix, then the key itself). What the model
does not use is ignored, as FunASR ignores it, and named in one log line: extra
weights (a pre-training decoder), nested dicts (fairseq's EMA teacher under
``_ema``), optimizer state beside the weights. Unlike FunASR, which only warns
and keeps random weights, a checkpoint that misses a weight the model needs or
holds one of the wrong shape is refused with a message that names the keys, and
so is a file that is not a weights-only torch checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from e2v_common.contract import read_tokens

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.yaml", "model.pt", "tokens.txt")
HUB_MODEL = "iic/emotion2vec_plus_large"  # the real model, for users who can reach the hub
# FunASR builds the pre-training decoder, which no released checkpoint holds and
# inference never runs; these keys may be missing from model.pt.
UNUSED_MODULE_PREFIXES = ("modality_encoders.AUDIO.decoder.",)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_HOSTS = {"ms": ("www.modelscope.cn", 443), "hf": ("huggingface.co", 443)}


class CheckpointError(RuntimeError):
    """A model directory or checkpoint that cannot be used, with the reason."""


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module  # funasr.models.emotion2vec.model.Emotion2vec, eval mode
    config: dict  # the parsed config.yaml
    tokens: list[str]  # raw tokens.txt entries, in output order
    model_dir: Path


def resolve_model_dir(model: str, hub: str = "ms") -> Path:
    """A local model directory for ``model``: an existing path, or a hub id to download.

    Anything that exists on disk, or starts like a path ('/', './', '../', '~'),
    is a local directory and is never sent to a hub.
    """
    path = Path(model).expanduser()
    looks_like_path = model.startswith(("/", "./", "../", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise CheckpointError(f"model directory not found: {path}")
        return path.resolve()
    if not HUB_ID.match(model):
        raise CheckpointError(
            f"{model!r} is neither an existing directory nor a hub id like 'iic/emotion2vec_plus_large'"
        )
    return _download_from_hub(model, hub)


def _download_from_hub(model_id: str, hub: str) -> Path:
    if hub not in HUB_HOSTS:
        raise CheckpointError(f"unknown hub {hub!r}: use 'ms' (ModelScope) or 'hf' (Hugging Face)")
    host, port = HUB_HOSTS[hub]
    try:  # fail fast offline instead of letting the hub client retry for minutes
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise CheckpointError(
            f"cannot reach {host} to download {model_id!r} ({exc}). "
            "On a machine without access to the model hub, download the model elsewhere and "
            "pass its local directory (config.yaml, model.pt, tokens.txt), e.g. "
            "`e2v-export --model /path/to/emotion2vec_plus_large`."
        ) from exc
    log.info("downloading %s from %s", model_id, host)
    if hub == "ms":
        from modelscope.hub.snapshot_download import snapshot_download

        return Path(snapshot_download(model_id))
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_id))


def check_model_dir(model_dir: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{model_dir} is not an emotion2vec model directory: missing {', '.join(missing)} "
            f"(FunASR's format needs {', '.join(REQUIRED_FILES)})"
        )


def emotion2vec_class():
    """FunASR's Emotion2vec class (importing funasr prints an ffmpeg notice on stdout; keep it quiet)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from funasr.models.emotion2vec.model import Emotion2vec
    return Emotion2vec


def load_checkpoint(model: str | Path, hub: str = "ms") -> LoadedCheckpoint:
    """Build FunASR's Emotion2vec from a model directory (or hub id) and load every weight it needs."""
    Emotion2vec = emotion2vec_class()
    model_dir = resolve_model_dir(str(model), hub)
    check_model_dir(model_dir)
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    if config.get("model") != "Emotion2vec":
        raise CheckpointError(f"{model_dir}/config.yaml is for model {config.get('model')!r}, not Emotion2vec")
    tokens = read_tokens(model_dir / "tokens.txt")

    # The same constructor call FunASR's AutoModel makes: model_conf plus the vocabulary size.
    e2v = Emotion2vec(model_conf=config["model_conf"], vocab_size=len(tokens))
    weights, ignored = _read_weights(model_dir / "model.pt")
    mapped, unused = _map_weights(e2v.state_dict(), weights, config, model_dir)
    ignored += unused
    if ignored:
        log.info(
            "%s/model.pt: ignored %d entries the model does not use: %s", model_dir, len(ignored), _summarize(ignored)
        )
    e2v.load_state_dict(mapped, strict=True)
    e2v.eval()
    return LoadedCheckpoint(model=e2v, config=config, tokens=tokens, model_dir=model_dir)


def _read_weights(path: Path) -> tuple[dict, list[str]]:
    """The tensors of a weights-only checkpoint, unwrapped as FunASR unwraps it, and the names of the
    entries beside them that are not weights (optimizer state, nested dicts such as fairseq's _ema)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a git-LFS pointer, a truncated download, a pickle with code in it
        raise CheckpointError(f"cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of weights")
    ignored = []
    # Unwrap the containers FunASR unwraps (fairseq keeps the weights under "model").
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state.get(key), dict):
            ignored += [f"{name} ({_kind(value)})" for name, value in state.items() if name != key]
            state = state[key]
    weights = {name: value for name, value in state.items() if torch.is_tensor(value)}
    ignored += [f"{name} ({_kind(value)})" for name, value in state.items() if not torch.is_tensor(value)]
    if not weights:
        raise CheckpointError(f"{path} holds no weights (tensors)")
    return weights, ignored


def _kind(value) -> str:
    if isinstance(value, dict):
        tensors = sum(torch.is_tensor(v) for v in value.values())
        return f"dict of {len(value)}" + (f", {tensors} tensors" if tensors else "")
    return type(value).__name__


def _summarize(names: list[str], shown: int = 8) -> str:
    """Names grouped by module (cut before the first layer number, at most four parts), at most `shown` items."""
    groups: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        cut = min(next((i for i, part in enumerate(parts) if part.isdigit()), len(parts)), 4)
        group = name if cut >= len(parts) else ".".join(parts[:cut]) + ".*"
        groups[group] = groups.get(group, 0) + 1
    items = [group if count == 1 else f"{group} ({count})" for group, count in groups.items()]
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _scope_prefixes(config: dict) -> list[str]:
    """Source-key prefixes to try, from the config's scope_map (pairs of src, dst), as FunASR does."""
    scope_map = list(config.get("scope_map") or [])
    scope_map += ["module.", "None"]
    prefixes = []
    for src, dst in zip(scope_map[0::2], scope_map[1::2], strict=False):
        if str(dst).lower() not in ("none", ""):
            raise CheckpointError(f"scope_map destination prefixes are not supported: {dst!r}")
        prefixes.append("" if str(src).lower() == "none" else str(src))
    return prefixes


def _map_weights(destination: dict, source: dict, config: dict, model_dir: Path) -> tuple[dict, list[str]]:
    """{model key: weight} for every key of the model, found as FunASR finds it; and the source keys not used.

    Refused (CheckpointError naming the keys): a weight the model needs that is missing, or of the wrong shape.
    """
    prefixes = _scope_prefixes(config)
    mapped, missing, wrong_shape, used = {}, [], [], set()
    for key, tensor in destination.items():
        source_key = next((p + key for p in prefixes if p + key in source), key if key in source else None)
        if source_key is None:
            if not key.startswith(UNUSED_MODULE_PREFIXES):
                missing.append(key)
            mapped[key] = tensor
            continue
        used.add(source_key)
        if source[source_key].shape != tensor.shape:
            wrong_shape.append(f"{source_key}: {tuple(source[source_key].shape)} != expected {tuple(tensor.shape)}")
            continue
        mapped[key] = source[source_key].to(tensor.dtype)
    problems = []
    if missing:
        problems.append(
            f"missing keys ({len(missing)}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    if wrong_shape:
        problems.append(f"shape mismatches ({len(wrong_shape)}): {'; '.join(wrong_shape[:10])}")
    if problems:
        raise CheckpointError(
            f"{model_dir}/model.pt does not match the model its config.yaml describes: " + " | ".join(problems)
        )
    return mapped, sorted(set(source) - used)
