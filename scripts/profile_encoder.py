#!/usr/bin/env python
"""Which operators take an encoder's time, from the runtime's own profiler (e2v_bench.profile): one clip of
synthetic speech, a warm-up run, then RUNS timed runs. Prints the CPU and the table.

.venv/bin/python scripts/profile_encoder.py --size large --runtime onnxruntime --precision fp32
.venv/bin/python scripts/profile_encoder.py --size large --runtime openvino --precision bf16
.venv/bin/python scripts/profile_encoder.py --size tiny --runs 1      # a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from e2v_bench import profile
from e2v_bench.models import random_checkpoint
from e2v_bench.workload import cache_dir
from e2v_common import contract
from e2v_common.cpu import CpuInfo
from e2v_common.runtimes import PRECISIONS, RUNTIMES
from e2v_common.synthetic_speech import speech_like
from e2v_export.checkpoint import load_checkpoint
from e2v_export.random_checkpoint import SIZES
from e2v_export.repository import QUANTIZATIONS, RepositoryOptions, export_models

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=SIZES)
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--quantization", default="dynamic", choices=QUANTIZATIONS, help="int8 only")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the clip (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    options = RepositoryOptions(runtime=args.runtime, precision=args.precision, quantization=args.quantization)
    options.check_runtime()
    cpu = CpuInfo.this_machine()
    clip = speech_like(args.seconds, seed=7)
    checkpoint = load_checkpoint(random_checkpoint(cache_dir(ROOT), args.size))
    with tempfile.TemporaryDirectory() as tmp:
        files = export_models(checkpoint, args.precision, Path(tmp), args.runtime, args.quantization)
        encoder = files[contract.ENCODER_MODEL]
        if args.runtime == "onnxruntime":
            totals = profile.profile_onnxruntime(encoder, clip, args.runs, args.threads, Path(tmp))
        else:
            totals = profile.profile_openvino(encoder, clip, args.runs, args.threads, args.precision)
    print(f"CPU: {cpu.describe()}")
    print(f"{args.size} encoder in {args.runtime} at {args.precision}, one {args.seconds:g} s clip, {args.runs} runs:")
    print(profile.table(totals, args.runs))


if __name__ == "__main__":
    main()
