#!/usr/bin/env python
"""Print the ONNX-vs-FunASR parity table on random-weight checkpoints (the numbers behind issue #2).

.venv/bin/python scripts/parity_report.py --sizes tiny base
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from e2v_export.checkpoint import load_checkpoint
from e2v_export.compare import UtteranceDiff
from e2v_export.onnx_export import export_onnx
from e2v_export.onnx_runner import OnnxEmotion2vec
from e2v_export.parity import compare_batch_with_single, compare_with_funasr, funasr_automodel
from e2v_export.random_checkpoint import SIZES, make_test_checkpoint
from e2v_export.synthetic import speech_like
from e2v_server import contract

DURATIONS = [0.5, 1.0, 3.3, 7.0, 15.0, 30.0]
HEADER = (
    f"{'size':<6}{'case':<22}{'frames':>7}{'scores max|d|':>15}{'emb cosine':>13}"
    f"{'frames max|d|':>15}{'fscores max|d|':>16}{'argmax':>8}"
)


def row(size: str, case: str, diff: UtteranceDiff) -> str:
    return (
        f"{size:<6}{case:<22}{diff.frames:>7}{diff.scores_max_abs:>15.2e}{diff.embedding_cosine:>13.8f}"
        f"{diff.frames_max_abs:>15.2e}{diff.frame_scores_max_abs:>16.2e}{'same' if diff.argmax_equal else 'DIFF':>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=SIZES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(HEADER)
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_test_checkpoint(size, args.seed, Path(tmp) / "checkpoint")
            export_onnx(load_checkpoint(model_dir), Path(tmp) / "onnx")
            runner = OnnxEmotion2vec(
                Path(tmp) / "onnx" / contract.ENCODER_ONNX, Path(tmp) / "onnx" / contract.CLASSIFIER_ONNX
            )
            automodel = funasr_automodel(model_dir)
            for seconds in DURATIONS:
                diff = compare_with_funasr(automodel, runner, speech_like(seconds, seed=int(seconds * 10)))
                print(row(size, f"vs FunASR {seconds:g} s", diff), flush=True)
            waveforms = [speech_like(s, seed=i) for i, s in enumerate([0.5, 30.0, 2.2, 9.7])]
            for diff in compare_batch_with_single(runner, waveforms):
                print(row(size, f"batch4 vs alone {diff.seconds:g} s", diff), flush=True)


if __name__ == "__main__":
    main()
