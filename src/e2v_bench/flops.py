"""The model's cost: analytic forward FLOPs of emotion2vec, per utterance and per workload."""

from __future__ import annotations

from e2v_common.contract import SAMPLE_RATE

# (embedding dim, conv front-end channels) of each random checkpoint size (e2v_export.random_checkpoint)
WIDTHS = {"tiny": (64, 32), "base": (768, 512), "large": (1024, 512)}
# the conv front-end: (kernel, stride) of its seven layers
CONV_SPEC = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


def model_gflops(
    num_samples: int,
    dim: int = 1024,
    blocks: int = 12,
    conv_dim: int = 512,
    extra_tokens: int = 10,
    pos_kernel: int = 19,
    pos_groups: int = 16,
    pos_layers: int = 5,
) -> float:
    """Analytic forward FLOPs (2 per multiply-add) of emotion2vec for one utterance (model-spec.md §2.6)."""
    flops, length, channels = 0.0, num_samples, 1
    for kernel, stride in CONV_SPEC:
        length = (length - kernel) // stride + 1
        flops += 2 * length * conv_dim * channels * kernel
        channels = conv_dim
    frames = length
    flops += 2 * frames * conv_dim * dim  # projection
    flops += pos_layers * 2 * frames * dim * (dim // pos_groups) * pos_kernel  # positional convs
    n = frames + extra_tokens
    flops += blocks * (2 * n * 12 * dim * dim + 4 * n * n * dim)
    flops += 2 * dim * 9  # head
    return flops / 1e9


def workload_gflop(lengths_s: list[float], size: str) -> float:
    """GFLOP of one pass over utterances of these lengths (seconds) on a checkpoint of this size."""
    dim, conv_dim = WIDTHS[size]
    return sum(model_gflops(int(s * SAMPLE_RATE), dim=dim, conv_dim=conv_dim) for s in lengths_s)
