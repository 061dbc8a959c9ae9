"""The engines' optimisation profile: batch and length ranges, and the (min, opt, max) shape of each input.

One explicit-batch profile over batch and length serves both models: the encoder's over waveform samples,
the classifier's over the frame counts the encoder makes of them. Imports only the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2v_common import contract

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max) shapes


@dataclass(frozen=True)
class ProfileOptions:
    """Batch and length ranges of the engines' optimisation profile (one profile for both models)."""

    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 8  # the configs' max_batch_size
    min_seconds: float = contract.FRAME_RECEPTIVE_FIELD / contract.SAMPLE_RATE  # one frame
    opt_seconds: float = 8.0
    max_seconds: float = 30.0
    # preprocess pads each batch to a multiple of this many samples: the longest waveform the encoder
    # sees is max_seconds rounded up to it
    pad_multiple: int = 8000

    @classmethod
    def for_repository(cls, options) -> ProfileOptions:
        """The profile a repository's serving options imply (e2v_export.repository.RepositoryOptions)."""
        return cls(
            min_batch=1,
            opt_batch=max(1, options.max_batch_size // 2),
            max_batch=options.max_batch_size,
            opt_seconds=min(options.max_seconds, cls.opt_seconds),
            max_seconds=options.max_seconds,
            pad_multiple=options.pad_multiple,
        )

    def check(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.pad_multiple < 1:
            raise ValueError("pad_multiple must be at least 1")
        if not 0 < self.min_seconds <= self.opt_seconds <= self.max_seconds:
            raise ValueError(
                "need 0 < min <= opt <= max seconds, "
                f"got {self.min_seconds:g}/{self.opt_seconds:g}/{self.max_seconds:g}"
            )
        if round(self.max_seconds * contract.SAMPLE_RATE) < contract.FRAME_RECEPTIVE_FIELD:
            raise ValueError("max_seconds is shorter than one frame")

    def batches(self) -> tuple[int, int, int]:
        return self.min_batch, self.opt_batch, self.max_batch

    def samples(self) -> tuple[int, int, int]:
        """(min, opt, max) waveform lengths in samples."""
        self.check()
        longest = contract.round_up(round(self.max_seconds * contract.SAMPLE_RATE), self.pad_multiple)
        shortest = max(contract.FRAME_RECEPTIVE_FIELD, round(self.min_seconds * contract.SAMPLE_RATE))
        typical = min(max(shortest, round(self.opt_seconds * contract.SAMPLE_RATE)), longest)
        return shortest, typical, longest

    def frames(self) -> tuple[int, int, int]:
        """(min, opt, max) frame counts: T = (N - 400) // 320 + 1 of the sample range."""
        return tuple(int(contract.frames_for_samples(n)) for n in self.samples())


def encoder_profile(options: ProfileOptions) -> Profile:
    """waveform [B, N] float32 and lengths [B] int64."""
    waveform, lengths = contract.ENCODER_INPUTS
    batches, samples = options.batches(), options.samples()
    return {
        waveform: tuple((b, n) for b, n in zip(batches, samples, strict=True)),
        lengths: tuple((b,) for b in batches),
    }


def classifier_profile(options: ProfileOptions, embedding_dim: int) -> Profile:
    """frames [B, T, D] float32 and frame_lengths [B] int64, T over the encoder's frame range."""
    frames, frame_lengths = contract.CLASSIFIER_INPUTS
    batches, counts = options.batches(), options.frames()
    return {
        frames: tuple((b, t, embedding_dim) for b, t in zip(batches, counts, strict=True)),
        frame_lengths: tuple((b,) for b in batches),
    }


def profile_for(model: str, options: ProfileOptions, embedding_dim: int | None = None) -> Profile:
    if model == contract.ENCODER_MODEL:
        return encoder_profile(options)
    if model == contract.CLASSIFIER_MODEL:
        if not embedding_dim:
            raise ValueError("the classifier profile needs the embedding size")
        return classifier_profile(options, embedding_dim)
    raise ValueError(f"no TensorRT engine for model {model!r}")
