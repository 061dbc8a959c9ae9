"""Which systems one benchmark run measures, in order, each in its own worker process.

funasr            FunASR AutoModel(model=DIR).generate(path), one file at a time, as its users call it
funasr ncpu=2     the same with torch's threads set to 2
funasr-batch 8    the same with generate([paths], batch_size=8): FunASR forces batch 1 on CPU and
                  loops one utterance at a time inside, so this shows its own batching
onnx              our ONNX models alone in ONNX Runtime, one utterance at a time (no serving layer)
triton cN         e2v-client library -> gRPC -> embedded Triton (portable repository), N requests in flight
...-int8          the same with the int8 encoder (e2v-export --int8)
triton-pad cN     before the length grouping: one padded batch per execute() (--max-padding-ratio 1000)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import export_repository, repository_dir
from e2v_bench.report import FUNASR, Results
from e2v_bench.workers import run_worker

# name -> the funasr worker's options
FUNASR_SYSTEMS = {
    FUNASR: {"ncpu": 0, "batch": 0},
    f"{FUNASR} ncpu=2": {"ncpu": 2, "batch": 0},
    f"{FUNASR}-batch 8": {"ncpu": 0, "batch": 8},
}
TRITON = "triton"
SERVER_MEMORY_INTERVAL_S = 0.05


@dataclass
class TritonVariant:
    prefix: str  # "triton", "triton-int8", "triton-pad": the systems are named "{prefix} c{concurrency}"
    int8: bool
    concurrencies: list[int]
    repository_options: dict = field(default_factory=dict)  # e2v_export.repository.RepositoryOptions

    @property
    def suffix(self) -> str:
        """What follows "triton" in the prefix ("", "-int8", "-pad"): names the ONNX system and the server log."""
        return self.prefix.removeprefix(TRITON)

    def tag(self, size: str) -> str:
        """The cached repository's tag: "large", "large-int8", "large-pad"."""
        return f"{size}{self.suffix}"


def triton_variants(concurrencies: list[int], int8: bool, padded: bool) -> list[TritonVariant]:
    """fp32; int8 if asked; without length grouping if asked (at the concurrencies above 1 only)."""
    variants = [TritonVariant(TRITON, False, concurrencies)]
    if int8:
        variants.append(TritonVariant(f"{TRITON}-int8", True, concurrencies))
    if padded:
        variants.append(
            TritonVariant(f"{TRITON}-pad", False, [c for c in concurrencies if c > 1], {"max_padding_ratio": 1000.0})
        )
    return [v for v in variants if v.concurrencies]


def run_funasr(results: Results, model_dir: Path, common: dict) -> None:
    print("FunASR PyTorch ...", flush=True)
    for name, options in FUNASR_SYSTEMS.items():
        results.record(name, run_worker("funasr", model_dir=str(model_dir), **options, **common))


def run_variant(results: Results, variant: TritonVariant, repository: Path, common: dict, log_folder: Path) -> None:
    """ONNX Runtime alone on the variant's repository (unless it only changes serving options), then the
    embedded Triton serving it at each concurrency, with the peak memory of the server's process tree."""
    from e2v_server.serve import TritonServer

    if not variant.repository_options:
        print(f"ONNX Runtime alone{variant.suffix} ...", flush=True)
        results.record(f"onnx{variant.suffix}", run_worker("onnx", repository=str(repository), **common))
    server = TritonServer(repository, log_file=log_folder / f"triton{variant.suffix}.log")
    with server, ProcessTreeMemory(server.process.pid, SERVER_MEMORY_INTERVAL_S) as memory:
        for c in variant.concurrencies:
            print(f"Triton {variant.prefix} concurrency {c} ...", flush=True)
            result = run_worker("triton", url=server.grpc_url, concurrency=c, probe_latency=c == 1, **common)
            result["server_mb"] = memory.peak
            results.record(f"{variant.prefix} c{c}", result)


def run_triton(
    results: Results, variants: list[TritonVariant], size: str, model_dir: Path, cache: Path, common: dict, out: Path
) -> dict[str, Path]:
    """Every variant in turn, each on its own cached repository; the repositories by variant prefix."""
    repositories = {}
    for variant in variants:
        repository = export_repository(
            model_dir, repository_dir(cache, variant.tag(size)), variant.int8, **variant.repository_options
        )
        repositories[variant.prefix] = repository
        run_variant(results, variant, repository, common, out)
    return repositories
