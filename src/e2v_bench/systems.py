"""Which systems one benchmark run measures, in order, each in its own worker process.

Peers (FunASR's PyTorch inference, as its users run it):
funasr               FunASR AutoModel(model=DIR).generate(path), one file at a time, fp32
funasr ncpu=2        the same with torch's threads set to 2 (AutoModel's default ncpu is 4: on a 2-core host with
                     AVX-512 that oversubscription made some GEMMs 100x slower, measured; the rows below use 2)
funasr-batch 8       the same with generate([paths], batch_size=8): FunASR forces batch 1 on CPU and
                     loops one utterance at a time inside, so this shows its own batching
funasr bf16          one file at a time inside torch.autocast("cpu", dtype=torch.bfloat16): FunASR at its best
                     on a CPU with native bf16 (skipped, and said so, where the CPU has none)
Components alone (the exported encoder and classifier, no serving layer, one utterance at a time):
onnx, onnx-int8      ONNX Runtime, fp32 and the int8 encoder
openvino[-bf16]      OpenVINO fp32, and bf16 where the CPU has native bf16
Ours (e2v-client library -> gRPC -> embedded Triton, portable repository, N requests in flight):
triton cN                         ONNX Runtime fp32 encoder
triton-int8 cN                    ONNX Runtime int8 encoder (e2v-export --precision int8)
triton-openvino cN                OpenVINO fp32 encoder (e2v-export --runtime openvino)
triton-openvino-bf16 cN           OpenVINO bf16, where the CPU has native bf16 (else skipped, and said so)
triton-pad cN                     before the length grouping: one padded batch per execute()
                                  (--max-padding-ratio 1000), fp32, concurrencies above 1
triton[-openvino]-2x1 cN          two encoder instances of one thread each (OpenVINO: two streams) against
                                  the default one instance of two threads, fp32, concurrencies above 1
triton-tuned cN                   the repository `e2v-export --tune` writes on this machine (what `make run`
                                  serves): the encoder and layout it measured fastest within their bars
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from e2v_bench.accuracy import encoder_agreement
from e2v_bench.memory import ProcessTreeMemory
from e2v_bench.models import alone_name, encoder_suffix, export_repository, repository_dir, tuned_repository
from e2v_bench.report import FUNASR, Results, Skipped
from e2v_bench.workers import run_worker
from e2v_common import contract
from e2v_common.runtimes import TUNING_FILE

# name -> the funasr worker's options
FUNASR_SYSTEMS = {
    FUNASR: {"ncpu": 0, "batch": 0, "autocast": ""},
    f"{FUNASR} ncpu=2": {"ncpu": 2, "batch": 0, "autocast": ""},
    f"{FUNASR}-batch 8": {"ncpu": 2, "batch": 8, "autocast": ""},
    f"{FUNASR} bf16": {"ncpu": 2, "batch": 0, "autocast": "bf16"},
}
TRITON = "triton"
TUNED = f"{TRITON}-tuned"
REFERENCE = TRITON  # the variant every other encoder choice is compared with (ONNX Runtime fp32)
SERVER_MEMORY_INTERVAL_S = 0.05


@dataclass
class TritonVariant:
    prefix: str  # "triton", "triton-int8", ...: the systems are named "{prefix} c{concurrency}"
    runtime: str  # the encoder's: onnxruntime or openvino
    precision: str  # the encoder's: fp32, bf16 or int8
    concurrencies: list[int]
    repository_options: dict = field(default_factory=dict)  # more e2v_export.repository.RepositoryOptions
    tuned: bool = False  # served from the repository `e2v-export --tune` wrote (its encoder and layout chosen here)

    @property
    def suffix(self) -> str:
        """What follows "triton" in the prefix ("", "-int8", "-openvino", "-pad"): names the repository and log."""
        return self.prefix.removeprefix(TRITON)

    @property
    def alone(self) -> str | None:
        """The system of its encoder and classifier alone ("onnx", "openvino", ...); None for a variant that
        only changes serving options (its models are another variant's)."""
        return None if self.repository_options or self.tuned else alone_name(self.runtime, self.precision)

    def tag(self, size: str) -> str:
        """The cached repository's tag: "large", "large-int8", "large-openvino", "large-pad"."""
        return f"{size}{self.suffix}"

    def systems(self) -> list[str]:
        """Its systems in one line's words: ["openvino-bf16", "triton-openvino-bf16 c1/2/4/8"]."""
        triton = f"{self.prefix} c{'/'.join(str(c) for c in self.concurrencies)}"
        return ([self.alone] if self.alone else []) + [triton]


def unavailable(cpu, runtime: str, precision: str) -> str | None:
    """Why this CPU cannot run the encoder in `runtime` at `precision` as asked (e2v_common.cpu's rule), or None."""
    from e2v_common.cpu import choose_encoder

    try:
        choose_encoder(cpu, runtime, precision)
    except ValueError as exc:
        return str(exc).split(". ")[0]  # what is missing, not the advice to the exporter
    return None


def triton_variants(
    concurrencies: list[int], cpu, int8: bool = True, serving_layouts: bool = True
) -> tuple[list[TritonVariant], list[Skipped]]:
    """ONNX Runtime fp32; int8 if asked; OpenVINO fp32; OpenVINO bf16 where the CPU has native bf16; if asked,
    the serving layouts (without length grouping; two instances of one thread) at the concurrencies above 1.
    The variants, and those skipped (and why)."""
    encoders = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16")]
    if not int8:
        encoders.remove(("onnxruntime", "int8"))
    variants, skipped = [], []
    for runtime, precision in encoders:
        variant = TritonVariant(f"{TRITON}{encoder_suffix(runtime, precision)}", runtime, precision, concurrencies)
        reason = unavailable(cpu, runtime, precision)
        if reason:
            skipped.append(Skipped(variant.systems(), reason))
        else:
            variants.append(variant)
    if serving_layouts:
        above_one = [c for c in concurrencies if c > 1]
        two_by_one = {"encoder_instances": 2, "threads": 1}
        variants += [
            TritonVariant(f"{TRITON}-pad", "onnxruntime", "fp32", above_one, {"max_padding_ratio": 1000.0}),
            TritonVariant(f"{TRITON}-2x1", "onnxruntime", "fp32", above_one, two_by_one),
            TritonVariant(f"{TRITON}-openvino-2x1", "openvino", "fp32", above_one, two_by_one),
        ]
    return [v for v in variants if v.concurrencies], skipped


def tuned_variant(concurrencies: list[int], size: str, model_dir: Path, cache: Path) -> TritonVariant:
    """The tuned repository (`e2v-export --tune` on this machine, exported once per CPU model and code) as a
    variant: its encoder's runtime, precision and layout are the tuner's choice."""
    repository = tuned_repository(model_dir, repository_dir(cache, f"{size}-tuned"))
    choice = json.loads((repository / contract.ENCODER_MODEL / TUNING_FILE).read_text())["choice"]
    layout = {"encoder_instances": choice["encoder_instances"], "threads": choice["threads"]}
    return TritonVariant(TUNED, choice["runtime"], choice["precision"], concurrencies, layout, tuned=True)


def run_funasr(results: Results, model_dir: Path, common: dict, cpu) -> list[Skipped]:
    """FunASR's settings in turn; bf16 autocast only where the CPU has native bf16 (elsewhere torch emulates
    bf16, many times slower than fp32 on the large checkpoint: it is not FunASR's best there)."""
    print("FunASR PyTorch ...", flush=True)
    skipped = []
    for name, options in FUNASR_SYSTEMS.items():
        precision = options["autocast"] or "fp32"
        if precision == "bf16" and not cpu.bf16:
            skipped.append(Skipped([name], "this CPU has no native bf16: torch would emulate it, far below fp32"))
            continue
        results.record(name, precision, run_worker("funasr", model_dir=str(model_dir), **options, **common))
    return skipped


def run_variant(results: Results, variant: TritonVariant, repository: Path, common: dict, log_folder: Path) -> None:
    """The variant's encoder and classifier alone (unless it only changes serving options), then the
    embedded Triton serving it at each concurrency, with the peak memory of the server's process tree."""
    from e2v_server.serve import TritonServer

    encoder = {"runtime": variant.runtime, "precision": variant.precision}
    if variant.alone:
        print(f"{variant.alone} alone ({variant.runtime} {variant.precision}) ...", flush=True)
        result = run_worker("alone", repository=str(repository), **encoder, **common)
        results.record(variant.alone, variant.precision, result)
    server = TritonServer(repository, log_file=log_folder / f"triton{variant.suffix}.log")
    with server, ProcessTreeMemory(server.process.pid, SERVER_MEMORY_INTERVAL_S) as memory:
        for c in variant.concurrencies:
            print(f"Triton {variant.prefix} concurrency {c} ...", flush=True)
            result = run_worker("triton", url=server.grpc_url, concurrency=c, probe_latency=c == 1, **common)
            result["server_mb"] = memory.peak
            results.record(f"{variant.prefix} c{c}", variant.precision, result)


def run_triton(
    results: Results, variants: list[TritonVariant], size: str, model_dir: Path, cache: Path, common: dict, out: Path
) -> dict[str, Path]:
    """Every variant in turn, each on its own cached repository; the repositories by variant prefix."""
    repositories = {}
    for variant in variants:
        out_dir = repository_dir(cache, variant.tag(size))
        if variant.tuned:
            repository = tuned_repository(model_dir, out_dir)
        else:
            repository = export_repository(
                model_dir, out_dir, variant.runtime, variant.precision, **variant.repository_options
            )
        repositories[variant.prefix] = repository
        run_variant(results, variant, repository, common, out)
    return repositories


def accuracy(variants: list[TritonVariant], repositories: dict[str, Path], paths: list[Path]) -> dict[str, dict]:
    """{variant: its encoder's agreement with ONNX Runtime fp32's on the workload} for each other encoder choice."""
    agreements = {}
    for variant in variants:
        if variant.prefix == REFERENCE or not variant.alone or REFERENCE not in repositories:
            continue
        print(f"accuracy: {variant.runtime} {variant.precision} against onnxruntime fp32 ...", flush=True)
        agreement = encoder_agreement(
            repositories[REFERENCE], repositories[variant.prefix], variant.runtime, variant.precision, paths
        )
        candidate = f"{variant.runtime} {variant.precision}"
        agreements[variant.prefix] = {"candidate": candidate, "reference": "onnxruntime fp32", **agreement}
    return agreements
