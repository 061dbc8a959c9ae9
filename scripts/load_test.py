#!/usr/bin/env python
"""Load test with Triton's own perf_analyzer (from the tritonclient 2.51 wheel) against the ensemble over gRPC.

    .venv/bin/python scripts/load_test.py                          # concurrency sweep 1, 2, 4, 8
    .venv/bin/python scripts/load_test.py --soak 600 --concurrency 4  # 10 minutes: errors and server memory
    .venv/bin/python scripts/load_test.py --runtime openvino          # the OpenVINO fp32 encoder

It starts the embedded server on the bench repository of --size, --runtime and --precision (the one
scripts/bench.py serves for them, cached under the same tag: large, large-int8, large-openvino, ...; random
checkpoint), or uses --url. Input: variable-length utterances (1-30 s, the bench workload) in perf_analyzer's JSON input
format, used round-robin. perf_analyzer's CSV is kept in the output folder. The soak run samples the
server's memory (PSS of tritonserver and its Python stubs) every 5 s, reports how flat it stays after
--warmup (the mean, floor and peak of each minute against their own mean, issue bar +-5 %) and draws it
(memory-<tag>.png in the output folder; the samples in server_memory-<tag>-soak.json).
The code is the e2v_bench package; this script is its command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np

from e2v_bench import perf_analyzer
from e2v_bench.memory import ProcessTreeMemory, flatness, plot_memory, trend
from e2v_bench.models import encoder_suffix, export_repository, random_checkpoint, repository_dir
from e2v_bench.workload import cache_dir, prepare_workload
from e2v_common import contract
from e2v_common.cpu import CpuInfo, choose_encoder
from e2v_common.runtimes import PRECISIONS, RUNTIMES
from e2v_export.random_checkpoint import SIZES
from e2v_export.repository import RepositoryOptions

ROOT = Path(__file__).resolve().parent.parent
CACHE = cache_dir(ROOT)
SEED = 0  # the bench workload's
MEMORY_INTERVAL_S = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server (default: start the embedded one)")
    parser.add_argument("--size", default="large", choices=SIZES)
    parser.add_argument("--runtime", default="onnxruntime", choices=RUNTIMES, help="the encoder's runtime")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="the encoder's precision")
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8],
        help="requests in flight, one perf_analyzer run each (default: 1 2 4 8)",
    )
    parser.add_argument("--measurement-ms", type=int, default=30000)
    parser.add_argument("--soak", type=float, help="one run of this many seconds; reports errors and memory trend")
    parser.add_argument("--warmup", type=float, default=300.0, help="soak seconds before memory must stay flat")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    args = parser.parse_args()
    try:  # the combinations the export refuses, and bf16 on a CPU without it
        RepositoryOptions(runtime=args.runtime, precision=args.precision).check_runtime()
        if not args.url:
            choose_encoder(CpuInfo.this_machine(), args.runtime, args.precision)
    except ValueError as exc:
        parser.error(str(exc))
    return args


@contextlib.contextmanager
def embedded_server(args: argparse.Namespace, tag: str, out: Path):
    """The embedded Triton on the bench repository of this size, runtime and precision, and its memory
    sampled every 5 s."""
    from e2v_server.serve import TritonServer

    model_dir = random_checkpoint(CACHE, args.size)
    repository = export_repository(model_dir, repository_dir(CACHE, tag), args.runtime, args.precision)
    server = TritonServer(repository, log_file=out / f"triton-load-{tag}.log")
    with server, ProcessTreeMemory(server.process.pid, MEMORY_INTERVAL_S, proportional=True) as memory:
        yield server.grpc_url, memory


def sweep(args: argparse.Namespace, url: str, input_data: Path, csv_path: Path) -> None:
    """One perf_analyzer run per concurrency, their CSVs merged into csv_path."""
    parts = []
    for c in args.concurrency:
        parts.append(csv_path.with_suffix(f".c{c}.csv"))
        length = f"{args.soak:.0f} s" if args.soak else "until stable"
        print(f"perf_analyzer: concurrency {c}, {length} ...", flush=True)
        stdout = perf_analyzer.run_perf_analyzer(url, input_data, str(c), parts[-1], args.soak, args.measurement_ms)
        errors = perf_analyzer.reported_errors(stdout)
        print("\n".join(errors) if errors else "perf_analyzer reported no errors")
    perf_analyzer.merge_csv(parts, csv_path)


def report_memory(
    samples: list[tuple[float, float]], path: Path, plot: Path | None, title: str, warmup_s: float | None
) -> None:
    """The trend of the server's memory printed (with warmup_s: how flat after it), its samples written as
    JSON to path and drawn in plot."""
    t = trend(samples)
    print(
        f"server memory (PSS, tritonserver + stubs): start {t['start_mb']:.0f} MB, end {t['end_mb']:.0f} MB, "
        f"peak {t['peak_mb']:.0f} MB over {t['seconds']:.0f} s ({t['samples']} samples)"
    )
    flat = flatness(samples, warmup_s) if warmup_s is not None and t["seconds"] > warmup_s + 120 else None
    if flat:
        print(f"after {warmup_s:.0f} s of warm-up (bar: within 5 % of their mean):")
        for kind in ("means", "floors", "peaks"):
            values = flat[f"window_{kind}_mb"]
            print(
                f"  minute {kind:6s} {min(values):.0f}-{max(values):.0f} MB, at most "
                f"{flat[f'{kind}_deviation']:.1%} from their mean {np.mean(values):.0f} MB"
            )
        print(f"  slope {flat['slope_mb_per_min']:+.1f} MB/min; samples {flat['min_mb']:.0f}-{flat['max_mb']:.0f} MB")
    path.write_text(json.dumps({"samples": samples, "flatness": flat}))
    if plot:
        plot_memory(samples, plot, title, flat, measure="PSS")
        print(f"server memory plot: {plot}")


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workload = prepare_workload(CACHE, args.utterances, SEED)
    input_data = perf_analyzer.write_input_data(workload.paths, CACHE / f"perf_input-{args.utterances}.json")
    per_request = float(np.mean(workload.lengths))
    tag = f"{args.size}{encoder_suffix(args.runtime, args.precision)}"  # the repository's, as scripts/bench.py
    soak = "-soak" if args.soak else ""
    csv_path = out / f"perf_analyzer-{tag}{soak}.csv"

    samples: list[tuple[float, float]] = []  # the embedded server's memory
    if args.url:
        sweep(args, args.url, input_data, csv_path)
    else:
        with embedded_server(args, tag, out) as (url, memory):
            sweep(args, url, input_data, csv_path)
        samples = memory.samples
    print(
        f"\nperf_analyzer on {contract.ENSEMBLE_MODEL} ({tag}), gRPC, {len(workload.paths)} utterances of 1-30 s "
        f"(mean {per_request:.1f} s) round-robin:"
    )
    perf_analyzer.print_csv(csv_path, per_request)
    print(f"perf_analyzer CSV: {csv_path}")
    if samples:
        plot = out / f"memory-{tag}.png" if args.soak else None
        concurrency = ", ".join(str(c) for c in args.concurrency)
        encoder = f"{args.runtime} {args.precision}"
        run = f"{args.soak:.0f} s soak" if args.soak else "sweep"  # without --soak, args.soak is None
        title = f"Triton server memory: {tag} ({encoder}), {run} at concurrency {concurrency}"
        report_memory(samples, out / f"server_memory-{tag}{soak}.json", plot, title, args.warmup if args.soak else None)


if __name__ == "__main__":
    main()
