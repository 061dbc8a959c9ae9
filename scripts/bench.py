#!/usr/bin/env python
"""Throughput and latency: this service (Triton over gRPC, client included) against FunASR's PyTorch
inference, in one run on one machine. Prints tables, writes a PNG plot and a JSON of every figure.

    .venv/bin/python scripts/bench.py                       # large random checkpoint, the full run
    .venv/bin/python scripts/bench.py --size base --quick   # a smaller, faster look
    .venv/bin/python scripts/bench.py --size tiny --utterances 3 --concurrency 1 --out /tmp/bench  # a smoke run

Workload: a fixed, seeded set of speech-like utterances of 1 to 30 s (the real architecture with random
weights: speed does not depend on the weights' values), written as WAV files that every system reads and
decodes itself. Each system runs in its own process (peak memory is that process's, or the server's
process tree), warms up on one utterance, then runs the workload once, timed.

Systems:
  funasr            FunASR AutoModel(model=DIR).generate(path), one file at a time, as its users call it
  funasr-batch      the same with generate([paths], batch_size=8): FunASR forces batch 1 on CPU and
                    loops one utterance at a time inside, so this shows its own batching
  onnx              our ONNX models alone in ONNX Runtime, one utterance at a time (no serving layer)
  triton cN         e2v-client library -> gRPC -> embedded Triton (portable repository), N requests in flight
  ...-int8          the same with the int8 encoder (e2v-export --int8)
  triton-pad cN     before the length grouping: one padded batch per execute() (--max-padding-ratio 1000)
Figures: audio seconds per wall second (and RTF), achieved GFLOP/s (analytic FLOPs of the model), p50/p95/p99
latency per request, p95 latency of a 5 s utterance alone (concurrency 1), peak memory, ratio to FunASR.
The code is the e2v_bench package; this script is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from e2v_bench import report, systems
from e2v_bench.accuracy import int8_accuracy
from e2v_bench.flops import workload_gflop
from e2v_bench.models import random_checkpoint
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_export.random_checkpoint import SIZES

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=SIZES)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8 utterances, concurrency 1 and 4")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    parser.add_argument("--plot-only", action="store_true", help="redraw bench.png from the out folder's bench.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.utterances, args.concurrency = 8, [1, 4]
    return args


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = random_checkpoint(CACHE, args.size)
    workload = prepare_workload(CACHE, args.utterances, args.seed)
    audio_seconds = workload.audio_seconds
    gflop = workload_gflop(workload.lengths, args.size)
    print(
        f"workload: {len(workload.paths)} utterances, {audio_seconds:.1f} s of audio (1-30 s), {gflop:.0f} GFLOP; "
        f"{args.size} checkpoint; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}",
        flush=True,
    )

    common = {"paths": [str(p) for p in workload.paths], "probe": str(workload.probe)}
    results = report.Results(audio_seconds, gflop)
    systems.run_funasr(results, model_dir, common)
    variants = systems.triton_variants(args.concurrency, int8=not args.no_int8, padded=not args.quick)
    repositories = systems.run_triton(results, variants, args.size, model_dir, CACHE, common, out)

    accuracy = None
    if "triton-int8" in repositories:
        accuracy = int8_accuracy(repositories["triton"], repositories["triton-int8"], workload.paths)
    print()
    report.print_table(results.rows)
    if accuracy:
        report.print_accuracy(accuracy)
    summary = {"lengths_s": workload.lengths, "audio_seconds": audio_seconds, "gflop": gflop, "size": args.size}
    report.write_json(out / "bench.json", summary, results, accuracy)
    report.plot(results.rows, args.concurrency, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


def main() -> None:
    args = parse_args()
    if args.plot_only:
        saved = json.loads((Path(args.out) / "bench.json").read_text())
        report.plot(saved["rows"], args.concurrency, Path(args.out) / "bench.png")
    else:
        run(args)


if __name__ == "__main__":
    main()
