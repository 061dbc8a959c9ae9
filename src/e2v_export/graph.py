"""Export-ready forward passes over FunASR's own emotion2vec modules.

FunASR's forward cannot be exported for padded batches (model-spec.md §4-5):
its ALiBi bias is cached in a Python dict, its padding-mask branches depend on
data, its positional convolution sees padded frames, and it means over all
frames. These modules reuse FunASR's submodules and weights unchanged and only
rewrite the glue between them:

* frame lengths from the conv front-end's closed-form length formula;
* padded frames zeroed before each of the positional convolutions;
* the ALiBi bias computed in the graph from the sequence length;
* a key padding mask added in every attention block (extra tokens always attend);
* a masked mean over the valid frames only.

A padded batch then gives each utterance its single-utterance result up to
floating-point round-off.
"""

from __future__ import annotations

import torch
from torch import nn

from e2v_common.contract import FRAME_HOP, FRAME_RECEPTIVE_FIELD, is_unused_label


def conv_geometry(feature_encoder_spec: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(receptive field, hop) in samples of a stack of unpadded convs given as (dim, kernel, stride)."""
    field, hop = 1, 1
    for _, kernel, stride in feature_encoder_spec:
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def check_supported(e2v) -> None:
    """Refuse model options this export does not implement, instead of exporting something different."""
    cfg = e2v.cfg
    audio = cfg.modalities.audio
    unsupported = {
        "layer_norm_first": bool(cfg.get("layer_norm_first")),
        "normalize=false": not cfg.get("normalize"),
        "conv_pos_pre_ln": bool(audio.get("conv_pos_pre_ln")),
        "learned_alibi": bool(audio.get("learned_alibi")),
        "learned_alibi_scale_per_layer": bool(audio.get("learned_alibi_scale_per_layer")),
        "use_alibi_encoder=false": not audio.get("use_alibi_encoder"),
        "extractor_mode!=layer_norm": audio.get("extractor_mode") != "layer_norm",
    }
    found = [name for name, on in unsupported.items() if on]
    if found:
        raise NotImplementedError(f"emotion2vec options not supported by this export: {', '.join(found)}")
    encoder = e2v.modality_encoders["AUDIO"]
    geometry = conv_geometry(encoder.feature_enc_layers)
    if geometry != (FRAME_RECEPTIVE_FIELD, FRAME_HOP):
        raise NotImplementedError(
            f"conv front-end has receptive field/hop {geometry}, the serving contract expects "
            f"{(FRAME_RECEPTIVE_FIELD, FRAME_HOP)}"
        )


def alibi_slopes(num_heads: int, num_alibi_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes as FunASR computes them, zero for heads without ALiBi."""
    from funasr.models.emotion2vec.base import get_alibi

    # get_alibi's bias at (0, 1) is -slope * |0 - 1|.
    slopes = -get_alibi(2, num_alibi_heads)[:, 0, 1]
    return torch.cat([slopes, torch.zeros(num_heads - num_alibi_heads)])


def strided_conv_as_matmuls(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """A bias-free Conv1d on channels-last input [B, L, C_in] -> [B, L_out, C_out], as a sum of MatMuls.

    out[t] = sum_j x[stride * t + j] @ W[:, :, j].T: one MatMul per kernel tap, on strided slices
    of the input (no im2col buffer). Same arithmetic as the convolution; written this way so that
    int8 dynamic quantization, which ONNX Runtime applies to MatMuls, covers the conv front-end.
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    out_length = (x.shape[1] - kernel) // stride + 1
    y = None
    for j in range(kernel):
        tap = x[:, j : j + stride * (out_length - 1) + 1 : stride] @ conv.weight[:, :, j].t()
        y = tap if y is None else y + tap
    return y


class EncoderGraph(nn.Module):
    """(waveform [B, N] normalised, lengths [B]) -> (frames [B, T, D], frame_lengths [B]).

    conv_as_matmul: run conv layers 1.. of the front-end channels-last as MatMuls (for int8).
    """

    def __init__(self, e2v, conv_as_matmul: bool = False):
        super().__init__()
        self.conv_as_matmul = conv_as_matmul
        check_supported(e2v)
        audio = e2v.modality_encoders["AUDIO"]
        cfg = e2v.cfg
        self.local_encoder = audio.local_encoder
        self.project_features = audio.project_features
        # relative_positional_encoder is Sequential(TransposeLast, layer x depth, TransposeLast).
        self.pos_conv_layers = nn.ModuleList(list(audio.relative_positional_encoder)[1:-1])
        self.context_norm = audio.context_encoder.norm
        self.blocks = nn.ModuleList(list(audio.context_encoder.blocks) + list(e2v.blocks))
        self.extra_tokens = audio.extra_tokens
        self.num_extra_tokens = audio.modality_cfg.num_extra_tokens
        self.num_heads = cfg.num_heads
        num_alibi_heads = audio.modality_cfg.num_alibi_heads
        scale = torch.zeros(self.num_heads)
        scale[:num_alibi_heads] = audio.alibi_scale.detach().reshape(-1).clamp_min(0)
        self.register_buffer("alibi_slopes", alibi_slopes(self.num_heads, num_alibi_heads), persistent=False)
        self.register_buffer("alibi_scale", scale, persistent=False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        frames = torch.div(lengths - FRAME_RECEPTIVE_FIELD, FRAME_HOP, rounding_mode="floor") + 1
        return torch.where(lengths >= FRAME_RECEPTIVE_FIELD, frames, torch.zeros_like(frames))

    def alibi_bias(self, num_tokens: torch.Tensor | int) -> torch.Tensor:
        """[1, H, n, n] bias over frames; the extra tokens get 0 in both directions (FunASR pads with 0)."""
        position = torch.arange(num_tokens, device=self.alibi_slopes.device)
        is_frame = (position >= self.num_extra_tokens).to(torch.float32)
        distance = (position[None, :] - position[:, None]).abs().to(torch.float32)
        distance = distance * is_frame[None, :] * is_frame[:, None]
        # Same order of operations as FunASR: (slope * -distance) * clamp_min(scale, 0).
        bias = (self.alibi_slopes[:, None, None] * -distance[None]) * self.alibi_scale[:, None, None]
        return bias.unsqueeze(0)

    def attention(self, attn_module, x, bias, key_bias):
        batch, tokens, dim = x.shape
        qkv = attn_module.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * attn_module.scale) @ k.transpose(-2, -1)
        scores = scores + bias + key_bias
        weights = scores.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return attn_module.proj(out)

    def block(self, blk, x, bias, key_bias):
        # AltBlock with layer_norm_first=False (post-LN), eval mode.
        x = x + self.attention(blk.attn, x, bias, key_bias)
        r = blk.norm1(x)
        return blk.norm2(r + blk.mlp(r))

    def local_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Conv front-end and projection: [B, N] -> [B, T, D]."""
        if not self.conv_as_matmul:
            return self.project_features(self.local_encoder(waveform))
        layers = self.local_encoder.conv_layers
        x = layers[0](waveform.unsqueeze(1)).transpose(1, 2)  # first conv (1 input channel) as is
        for layer in layers[1:]:
            conv, _dropout, norm, gelu = layer  # Conv1d, Dropout(0), (Transpose, Fp32LayerNorm, Transpose), GELU
            x = gelu(norm[1](strided_conv_as_matmuls(x, conv)))
        _transpose, norm, linear = self.project_features
        return linear(norm(x))

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor):
        batch, num_samples = waveform.shape
        sample_valid = torch.arange(num_samples, device=waveform.device)[None, :] < lengths[:, None]
        x = self.local_features(waveform * sample_valid.to(waveform.dtype))  # [B, T, D]
        num_frames = x.shape[1]
        frame_lengths = self.frame_lengths(lengths)
        frame_valid = torch.arange(num_frames, device=x.device)[None, :] < frame_lengths[:, None]  # [B, T]

        # Positional conv: zero the padded frames before every layer so each utterance
        # sees the conv's own zero padding, as it does when run alone.
        keep = frame_valid.to(x.dtype).unsqueeze(1)  # [B, 1, T]
        h = x.transpose(1, 2)
        for layer in self.pos_conv_layers:
            h = layer(h * keep)
        x = x + h.transpose(1, 2)

        x = torch.cat([self.extra_tokens.expand(batch, -1, -1), x], dim=1)
        bias = self.alibi_bias(num_frames + self.num_extra_tokens)
        key_valid = torch.cat(
            [torch.ones(batch, self.num_extra_tokens, dtype=torch.bool, device=x.device), frame_valid], dim=1
        )
        key_bias = torch.zeros(key_valid.shape, dtype=torch.float32, device=x.device).masked_fill(
            ~key_valid, float("-inf")
        )[:, None, None, :]  # [B, 1, 1, n]

        x = self.context_norm(x)
        for blk in self.blocks:
            x = self.block(blk, x, bias, key_bias)
        frames = x[:, self.num_extra_tokens :] * frame_valid.unsqueeze(-1).to(x.dtype)
        return frames, frame_lengths


class ClassifierGraph(nn.Module):
    """(frames [B, T, D], frame_lengths [B])
    -> (embedding [B, D], scores [B, L], frame_scores [B, T, L], frame_embedding [B, T, D], num_frames [B]).

    The embedding is the mean of the valid frames, and the utterance scores are
    the softmax of the head on that mean, as FunASR's inference computes them.
    Frame scores apply the same head to each frame; padded frames score 0.
    frame_embedding and num_frames pass the inputs through (padded frames 0), so
    that a Triton ensemble can take every output from this last step.
    """

    def __init__(self, e2v, tokens: list[str]):
        super().__init__()
        if e2v.proj is None:
            raise ValueError("the checkpoint has no classifier head (proj)")
        if e2v.proj.out_features != len(tokens):
            raise ValueError(f"head has {e2v.proj.out_features} outputs but tokens.txt has {len(tokens)} labels")
        self.proj = e2v.proj
        # FunASR sets the logits of 'unuse*' labels to -inf before the softmax.
        mask = torch.tensor([float("-inf") if is_unused_label(t) else 0.0 for t in tokens])
        self.register_buffer("label_mask", mask, persistent=False)

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor):
        valid = (torch.arange(frames.shape[1], device=frames.device)[None, :] < frame_lengths[:, None]).to(frames.dtype)
        count = frame_lengths.clamp_min(1).to(frames.dtype)[:, None]
        embedding = (frames * valid.unsqueeze(-1)).sum(dim=1) / count
        scores = (self.proj(embedding) + self.label_mask).softmax(dim=-1)
        frame_scores = (self.proj(frames) + self.label_mask).softmax(dim=-1) * valid.unsqueeze(-1)
        frame_embedding = frames * valid.unsqueeze(-1)
        return embedding, scores, frame_scores, frame_embedding, frame_lengths.clone()
