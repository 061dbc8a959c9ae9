#!/usr/bin/env python
"""Throughput and latency: this service (Triton over gRPC, client included) against FunASR's PyTorch
inference, in one run on one machine. Prints tables, writes a PNG plot and a JSON of every figure.

    .venv/bin/python scripts/bench.py                       # large random checkpoint, the full run
    .venv/bin/python scripts/bench.py --size base --quick   # a smaller, faster look

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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
PROBE_SECONDS = 5.0
PROBE_REPEATS = 10


# --- the model's cost -------------------------------------------------------------
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
    spec = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    flops, length, channels = 0.0, num_samples, 1
    for kernel, stride in spec:
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


# --- workload ----------------------------------------------------------------------
def workload_lengths(count: int, seed: int) -> list[float]:
    """Utterance lengths from 1 to 30 s, most of them short, as in real recordings (log-uniform)."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.uniform(np.log(1.0), np.log(30.0), count))
    lengths[:2] = [1.0, 30.0]  # both ends always present
    return [round(float(x), 2) for x in rng.permutation(lengths)]


def write_workload(folder: Path, lengths: list[float], seed: int) -> list[Path]:
    from e2v_client import audio
    from e2v_export.synthetic import speech_like

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, seconds in enumerate(lengths):
        path = folder / f"utt_{i:03d}_{seconds:05.2f}s.wav"
        if not path.exists():
            audio.write_wav(path, audio.from_samples(speech_like(seconds, seed + i), 16000))
        paths.append(path)
    probe = folder / "probe_5s.wav"
    if not probe.exists():
        audio.write_wav(probe, audio.from_samples(speech_like(PROBE_SECONDS, seed + 999), 16000))
    return paths


# --- workers: each runs in its own process and prints one JSON line ----------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; getrusage's maxrss can carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_funasr(args) -> dict:
    from e2v_export.parity import funasr_automodel

    model = funasr_automodel(args.model_dir)
    if args.ncpu:
        import torch

        torch.set_num_threads(args.ncpu)
    paths = [str(p) for p in args.paths]
    import contextlib
    import io

    def generate(x, **kw):
        with contextlib.redirect_stdout(io.StringIO()):
            return model.generate(x, granularity="utterance", extract_embedding=False, **kw)

    generate(args.probe)
    probe = []
    for _ in range(PROBE_REPEATS):
        start = time.perf_counter()
        generate(args.probe)
        probe.append(time.perf_counter() - start)
    latencies = []
    start = time.perf_counter()
    if args.batch:
        generate(paths, batch_size=args.batch)
    else:
        for path in paths:
            t = time.perf_counter()
            generate(path)
            latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"wall": wall, "latencies": latencies, "probe": probe, "client_mb": peak_rss_mb()}


def worker_onnx(args) -> dict:
    from e2v_client import audio
    from e2v_export.onnx_runner import OnnxEmotion2vec

    repo = Path(args.repository)
    runner = OnnxEmotion2vec(repo / "encoder" / "1" / "model.onnx", repo / "classifier" / "1" / "model.onnx")
    runner.run(audio.load(args.probe).samples)
    probe = []
    for _ in range(PROBE_REPEATS):
        start = time.perf_counter()
        runner.run(audio.load(args.probe).samples)
        probe.append(time.perf_counter() - start)
    latencies = []
    start = time.perf_counter()
    for path in args.paths:
        t = time.perf_counter()
        runner.run(audio.load(path).samples)
        latencies.append(time.perf_counter() - t)
    return {"wall": time.perf_counter() - start, "latencies": latencies, "probe": probe, "client_mb": peak_rss_mb()}


def worker_triton(args) -> dict:
    from e2v_client import audio
    from e2v_client.client import Emotion2vecClient

    async def run():
        async with Emotion2vecClient(args.url, timeout=600) as client:
            await client.score(audio.load(args.probe).samples)
            probe = []
            if args.probe_latency:
                for _ in range(PROBE_REPEATS):
                    start = time.perf_counter()
                    await client.score((await asyncio.to_thread(audio.load, args.probe)).samples)
                    probe.append(time.perf_counter() - start)
            limit = asyncio.Semaphore(args.concurrency)
            latencies = []

            async def one(path):
                async with limit:
                    t = time.perf_counter()
                    clip = await asyncio.to_thread(audio.load, path)
                    await client.score(clip.samples)
                    latencies.append(time.perf_counter() - t)

            start = time.perf_counter()
            await asyncio.gather(*(one(p) for p in args.paths))
            return {"wall": time.perf_counter() - start, "latencies": latencies, "probe": probe}

    result = asyncio.run(run())
    result["client_mb"] = peak_rss_mb()
    return result


WORKERS = {"funasr": worker_funasr, "onnx": worker_onnx, "triton": worker_triton}


def run_worker(kind: str, **options) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--worker-options", json.dumps(options, default=str)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the server ----------------------------------------------------------------------
class MemorySampler:
    """Peak RSS of a process tree, sampled every 50 ms."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.process] + self.process.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs) / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def export_repository(model_dir: Path, out: Path, int8: bool, **options) -> Path:
    from e2v_export.checkpoint import load_checkpoint
    from e2v_export.repository import RepositoryOptions, write_repository

    marker = out / ".bench-options.json"
    wanted = json.dumps({"model": str(model_dir), "int8": int8, **options}, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return out
    shutil.rmtree(out, ignore_errors=True)
    write_repository(load_checkpoint(model_dir), out, RepositoryOptions(int8=int8, **options))
    marker.write_text(wanted)
    return out


def summarize(name: str, result: dict, audio_seconds: float, gflop: float, funasr: dict | None) -> dict:
    lat = np.array(result["latencies"] or [np.nan]) * 1000
    probe = np.array(result["probe"] or [np.nan]) * 1000
    row = {
        "system": name,
        "audio_s_per_s": audio_seconds / result["wall"],
        "rtf": result["wall"] / audio_seconds,
        "gflop_per_s": gflop / result["wall"],
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "probe5s_p50_ms": float(np.percentile(probe, 50)),
        "probe5s_p95_ms": float(np.percentile(probe, 95)),
        "client_mb": result.get("client_mb"),
        "server_mb": result.get("server_mb"),
        "wall_s": result["wall"],
    }
    if funasr:
        row["x_funasr"] = row["audio_s_per_s"] / funasr["audio_s_per_s"]
    return row


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'system':<24}{'audio s/s':>10}{'RTF':>7}{'GFLOP/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'5s p95 ms':>11}{'server MB':>11}{'client MB':>11}{'x FunASR':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:

        def fmt(value, spec):
            if isinstance(value, (int, float)) and not np.isnan(value):
                return format(value, spec)
            return "-".rjust(int(spec.split(".")[0]))

        print(
            f"{r['system']:<24}{fmt(r['audio_s_per_s'], '10.2f')}{fmt(r['rtf'], '7.3f')}{fmt(r['gflop_per_s'], '9.1f')}"
            f"{fmt(r['p50_ms'], '9.0f')}{fmt(r['p95_ms'], '9.0f')}{fmt(r['p99_ms'], '9.0f')}"
            f"{fmt(r['probe5s_p95_ms'], '11.0f')}{fmt(r.get('server_mb') or np.nan, '11.0f')}"
            f"{fmt(r['client_mb'] or np.nan, '11.0f')}{fmt(r.get('x_funasr', np.nan), '10.2f')}"
        )


def plot(rows: list[dict], concurrencies: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    funasr = next(r for r in rows if r["system"] == "funasr")
    best = max((r for r in rows if r["system"].startswith("funasr")), key=lambda r: r["audio_s_per_s"])
    for prefix, style in (("triton", "o-"), ("triton-int8", "s-"), ("triton-pad", "x:")):
        series = [next((r for r in rows if r["system"] == f"{prefix} c{c}"), None) for c in concurrencies]
        xs = [c for c, r in zip(concurrencies, series) if r]
        if xs:
            left.plot(xs, [r["audio_s_per_s"] for r in series if r], style, label=f"ours: {prefix}")
            right.plot(xs, [r["p95_ms"] / 1000 for r in series if r], style, label=f"ours: {prefix}")
    for ax, key, scale in ((left, "audio_s_per_s", 1), (right, "p95_ms", 1000)):
        ax.axhline(funasr[key] / scale, color="tab:red", linestyle="--", label="FunASR PyTorch (one at a time)")
        if best is not funasr and not np.isnan(best[key]):
            ax.axhline(
                best[key] / scale, color="tab:red", linestyle=":", label=f"FunASR, best setting ({best['system']})"
            )
        ax.set_xlabel("requests in flight (concurrency)")
        ax.set_xticks(concurrencies)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("audio seconds per second")
    left.set_title("Throughput (higher is better)")
    right.set_ylabel("p95 latency per request (s)")
    right.set_title("Latency (lower is better)")
    fig.suptitle("emotion2vec+ large (random weights), 2-core CPU, fp32 and int8")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def accuracy_int8(fp32_repo: Path, int8_repo: Path, paths: list[Path]) -> dict:
    from e2v_client import audio
    from e2v_export.onnx_runner import OnnxEmotion2vec

    def runner(repo):
        return OnnxEmotion2vec(repo / "encoder" / "1" / "model.onnx", repo / "classifier" / "1" / "model.onnx")

    fp32, int8 = runner(fp32_repo), runner(int8_repo)
    diffs, agree, cosines = [], 0, []
    for path in paths:
        samples = audio.load(path).samples
        a, b = fp32.run(samples), int8.run(samples)
        diffs.append(float(np.abs(a.scores - b.scores).max()))
        agree += int(a.scores.argmax() == b.scores.argmax())
        cosines.append(
            float(np.dot(a.embedding, b.embedding) / np.linalg.norm(a.embedding) / np.linalg.norm(b.embedding))
        )
    return {
        "argmax_agreement": agree / len(paths),
        "max_score_diff": max(diffs),
        "min_embedding_cosine": min(cosines),
        "utterances": len(paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large", choices=["tiny", "base", "large"])
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--quick", action="store_true", help="8 utterances, concurrency 1 and 4")
    parser.add_argument("--out", default=str(ROOT / "bench_results"))
    parser.add_argument("--plot-only", action="store_true", help="redraw bench.png from the out folder's bench.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        options = argparse.Namespace(**json.loads(args.worker_options))
        options.paths = [Path(p) for p in options.paths]
        print(json.dumps(WORKERS[args.worker](options)))
        return
    if args.quick:
        args.utterances, args.concurrency = 8, [1, 4]
    if args.plot_only:
        saved = json.loads((Path(args.out) / "bench.json").read_text())
        plot(saved["rows"], args.concurrency, Path(args.out) / "bench.png")
        return

    from e2v_client import audio
    from e2v_export.random_checkpoint import make_test_checkpoint
    from e2v_server.serve import TritonServer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = CACHE.parent / "checkpoints" / f"{args.size}-random-seed0"
    if not (model_dir / "model.pt").exists():
        make_test_checkpoint(args.size, 0, model_dir)
    lengths = workload_lengths(args.utterances, args.seed)
    paths = write_workload(CACHE / f"workload-{args.utterances}-{args.seed}", lengths, args.seed)
    probe = paths[0].parent / "probe_5s.wav"
    audio_seconds = sum(len(audio.load(p).samples) for p in paths) / 16000
    dim, conv_dim = {"tiny": (64, 32), "base": (768, 512), "large": (1024, 512)}[args.size]
    gflop = sum(model_gflops(int(s * 16000), dim=dim, conv_dim=conv_dim) for s in lengths)
    print(
        f"workload: {len(paths)} utterances, {audio_seconds:.1f} s of audio (1-30 s), {gflop:.0f} GFLOP; "
        f"{args.size} checkpoint; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}",
        flush=True,
    )

    common = {"paths": [str(p) for p in paths], "probe": str(probe)}
    rows, raw = [], {}

    def record(name, result):
        raw[name] = result
        row = summarize(name, result, audio_seconds, gflop, rows[0] if rows else None)
        rows.append(row)
        print(f"  {name}: {row['audio_s_per_s']:.2f} audio s/s, p95 {row['p95_ms']:.0f} ms", flush=True)

    print("FunASR PyTorch ...", flush=True)
    record("funasr", run_worker("funasr", model_dir=str(model_dir), ncpu=0, batch=0, **common))
    record("funasr ncpu=2", run_worker("funasr", model_dir=str(model_dir), ncpu=2, batch=0, **common))
    record("funasr-batch 8", run_worker("funasr", model_dir=str(model_dir), ncpu=0, batch=8, **common))

    # (name, int8, repository options, concurrencies)
    variants = [("triton", False, {}, args.concurrency)]
    if not args.no_int8:
        variants.append(("triton-int8", True, {}, args.concurrency))
    if not args.quick:
        variants.append(("triton-pad", False, {"max_padding_ratio": 1000.0}, [c for c in args.concurrency if c > 1]))
    repos = {}
    for prefix, int8, repo_options, concurrencies in variants:
        tag = prefix.replace("triton", args.size)
        repos[prefix] = export_repository(model_dir, CACHE / f"repo-{tag}", int8, **repo_options)
        suffix = prefix.replace("triton", "")
        if not repo_options:
            print(f"ONNX Runtime alone{suffix} ...", flush=True)
            record(f"onnx{suffix}", run_worker("onnx", repository=str(repos[prefix]), **common))
        server = TritonServer(repos[prefix], log_file=out / f"triton{suffix}.log")
        with server, MemorySampler(server.process.pid) as memory:
            for c in concurrencies:
                print(f"Triton {prefix} concurrency {c} ...", flush=True)
                result = run_worker("triton", url=server.grpc_url, concurrency=c, probe_latency=c == 1, **common)
                result["server_mb"] = memory.peak
                record(f"{prefix} c{c}", result)

    accuracy = accuracy_int8(repos["triton"], repos["triton-int8"], paths) if "triton-int8" in repos else None
    print()
    print_table(rows)
    if accuracy:
        print(
            f"\nint8 vs fp32 on the workload: argmax agreement {accuracy['argmax_agreement'] * 100:.1f}%, "
            f"max score diff {accuracy['max_score_diff']:.4f}, min embedding cosine {accuracy['min_embedding_cosine']:.5f}"
        )
    (out / "bench.json").write_text(
        json.dumps(
            {
                "workload": {"lengths_s": lengths, "audio_seconds": audio_seconds, "gflop": gflop, "size": args.size},
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "rows": rows,
                "int8_accuracy": accuracy,
                "raw": raw,
            },
            indent=2,
        )
    )
    plot(rows, args.concurrency, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")


if __name__ == "__main__":
    main()
