#!/usr/bin/env python
"""Throughput and latency: this service (Triton over gRPC, client included) against FunASR's PyTorch
inference, side by side in one run on one machine. Prints the CPU (flags and peaks) and tables, writes a
PNG plot and a JSON of every figure.

    .venv/bin/python scripts/bench.py                       # large random checkpoint, the full run
    .venv/bin/python scripts/bench.py --size base --quick   # a smaller, faster look
    .venv/bin/python scripts/bench.py --size tiny --utterances 3 --concurrency 1 --out /tmp/bench  # a smoke run

Workload: a fixed, seeded set of speech-like utterances of 1 to 30 s (the real architecture with random
weights: speed does not depend on the weights' values), written as WAV files that every system reads and
decodes itself. Each system runs in its own process (peak memory is that process's, or the server's
process tree), warms up on one utterance, then runs the workload once, timed.

Systems (e2v_bench.systems has the details):
  funasr, funasr ncpu=2, funasr-batch 8   FunASR AutoModel generate(), fp32: one file at a time as its users
                    call it, torch threads 2, and generate([paths], batch_size=8)
  funasr bf16       one file at a time inside torch.autocast("cpu", dtype=torch.bfloat16) (emulated where the
                    CPU has no native bf16: measured as it is)
  onnx[-int8], openvino[-bf16]   the exported encoder and classifier alone (e2v_export.runner), no serving layer
  triton[-int8|-openvino|-openvino-bf16] cN   e2v-client library -> gRPC -> embedded Triton, N requests in flight
  triton-tuned cN   the repository e2v-export --tune writes here (what make run serves)
  triton-pad cN     before the length grouping: one padded batch per execute() (--max-padding-ratio 1000)
  triton[-openvino]-2x1 cN   two encoder instances of one thread (OpenVINO: two streams) against one of two
bf16 runs only where the CPU has native bf16; elsewhere those systems are listed as skipped, with the reason.
Figures: precision, audio seconds per wall second (and RTF), achieved GFLOP/s (analytic FLOPs of the model)
and its share of the CPU's nominal peak at that precision, p50/p95/p99 latency per request, p95 latency of a
5 s utterance alone (concurrency 1), peak memory, ratio to FunASR; the agreement of each encoder choice
(int8, OpenVINO) with ONNX Runtime fp32 on the workload.
The code is the e2v_bench package; this script is its command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2v_bench import report, systems
from e2v_bench.flops import workload_gflop
from e2v_bench.models import random_checkpoint
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_common.cpu import CpuInfo
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
    parser.add_argument(
        "--quick", action="store_true", help="8 utterances, concurrency 1 and 4, no serving layouts (pad, 2x1)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="PREFIX", help="run only these Triton variants (e.g. triton triton-2x1), no peers"
    )
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    parser.add_argument("--plot-only", action="store_true", help="redraw bench.png from the out folder's bench.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.utterances, args.concurrency = 8, [1, 4]
    return args


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = CpuInfo.this_machine()
    model_dir = random_checkpoint(CACHE, args.size)
    workload = prepare_workload(CACHE, args.utterances, args.seed)
    audio_seconds = workload.audio_seconds
    gflop = workload_gflop(workload.lengths, args.size)
    print(
        f"workload: {len(workload.paths)} utterances, {audio_seconds:.1f} s of audio (1-30 s), {gflop:.0f} GFLOP; "
        f"{args.size} checkpoint; {cpu.cores} cores of {cpu.model}",
        flush=True,
    )

    common = {"paths": [str(p) for p in workload.paths], "probe": str(workload.probe)}
    results = report.Results(audio_seconds, gflop, cpu)
    funasr_skipped = [] if args.only else systems.run_funasr(results, model_dir, common, cpu)
    variants, triton_skipped = systems.triton_variants(args.concurrency, cpu, not args.no_int8, not args.quick)
    if not args.only or systems.TUNED in args.only:  # tuned first: make run's repository, measured on this CPU
        variants.insert(0, systems.tuned_variant(args.concurrency, args.size, model_dir, CACHE))
    if args.only:
        variants = [variant for variant in variants if variant.prefix in args.only]
    results.skipped = funasr_skipped + triton_skipped
    repositories = systems.run_triton(results, variants, args.size, model_dir, CACHE, common, out)
    accuracy = systems.accuracy(variants, repositories, workload.paths)

    print(f"\nCPU: {cpu.describe()}")
    report.print_table(results.rows)
    report.print_skipped(results.skipped)
    report.print_accuracy(accuracy)
    summary = {"lengths_s": workload.lengths, "audio_seconds": audio_seconds, "gflop": gflop, "size": args.size}
    report.write_json(out / "bench.json", summary, results, accuracy)
    report.plot(results.rows, out / "bench.png", args.size, cpu.cores, cpu.model)
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


def plot_only(out: Path) -> None:
    saved = json.loads((out / "bench.json").read_text())
    cpu = saved.get("cpu", {"cores": saved["machine"]["cpus"], "model": ""})  # older runs recorded no CPU
    rows = [{"precision": "fp32", **row} for row in saved["rows"]]  # nor precisions
    report.plot(rows, out / "bench.png", saved["workload"]["size"], cpu["cores"], cpu["model"])


def main() -> None:
    args = parse_args()
    if args.plot_only:
        plot_only(Path(args.out))
    else:
        run(args)


if __name__ == "__main__":
    main()
