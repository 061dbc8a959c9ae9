#!/usr/bin/env python
"""Export time and ONNX size for a random-weight checkpoint (default: large, the real architecture).

.venv/bin/python scripts/bench_export.py --size large
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from e2v_common import contract
from e2v_export.checkpoint import load_checkpoint
from e2v_export.onnx_export import export_onnx
from e2v_export.random_checkpoint import SIZES, make_test_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=SIZES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model_dir = make_test_checkpoint(args.size, 0, Path(tmp) / "checkpoint")
        made = time.perf_counter()
        checkpoint = load_checkpoint(model_dir)
        loaded = time.perf_counter()
        params = sum(p.numel() for n, p in checkpoint.model.named_parameters() if ".decoder." not in n)
        export_onnx(checkpoint, Path(tmp) / "onnx")
        exported = time.perf_counter()
        sizes = {
            name: (Path(tmp) / "onnx" / name).stat().st_size
            for name in (contract.ENCODER_ONNX, contract.CLASSIFIER_ONNX)
        }
    print(
        f"{'size':<8}{'params':>14}{'make ckpt s':>13}{'load s':>9}{'export s':>10}"
        f"{'encoder MB':>12}{'classifier MB':>15}"
    )
    print(
        f"{args.size:<8}{params:>14,}{made - start:>13.1f}{loaded - made:>9.1f}{exported - loaded:>10.1f}"
        f"{sizes[contract.ENCODER_ONNX] / 1e6:>12.1f}{sizes[contract.CLASSIFIER_ONNX] / 1e6:>15.2f}"
    )


if __name__ == "__main__":
    main()
