"""What this CPU runs natively, read from /proc/cpuinfo: which precisions are fast, and the machine's peak.

A precision the CPU has no instructions for is not faster, it is emulated or silently run as fp32:
bf16 needs AVX512_BF16 or AMX-BF16 dot products, and int8 is four times fp32 only with VNNI
(AVX512_VNNI, AVX-VNNI or AMX-INT8); plain AVX2 multiplies 8-bit pairs into 16 bits, about twice fp32.

Peak arithmetic, the nominal figure a benchmark's GFLOP/s are judged against: cores x FLOP per cycle
x clock. A core with FMA does 32 fp32 FLOP per cycle (two 256-bit FMA pipes, or AMD's AVX-512 on
256-bit units); an Intel core with AVX-512 does 64 (two 512-bit FMA units); AMX tiles do far more
in bf16 and int8 (flops_per_cycle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from e2v_common.runtimes import BF16_FLAGS, VNNI_FLAGS, read_cpuinfo

# the flags a benchmark prints above its table
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    cores: int  # cores this process may use
    ghz: float  # the clock /proc/cpuinfo reports (0 if unknown)
    flags: frozenset[str]

    @classmethod
    def this_machine(cls, cpuinfo: str | None = None) -> CpuInfo:
        fields = read_cpuinfo(cpuinfo)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(
            model=fields.get("model name", "unknown"),
            vendor=fields.get("vendor_id", "unknown"),
            cores=cores,
            ghz=float(fields.get("cpu MHz", 0) or 0) / 1000,
            flags=frozenset(fields.get("flags", "").split()),
        )

    @property
    def bf16(self) -> bool:
        """Native bf16 dot products: OpenVINO's bf16 inference precision is real, not fp32."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        return any(flag in self.flags for flag in VNNI_FLAGS)

    @property
    def kind(self) -> str:
        """The kind of host, as the benchmarks label their figures."""
        if "amx_bf16" in self.flags:
            return "AVX-512 with AMX (bf16 and int8 tiles)"
        if self.bf16 and self.vnni:
            return "AVX-512 with avx512_bf16 and VNNI"
        if "avx512f" in self.flags:
            return "AVX-512" + (" with VNNI" if self.vnni else "")
        if "avx2" in self.flags and "fma" in self.flags:
            return "AVX2+FMA only" + (" with AVX-VNNI" if self.vnni else "")
        return "no AVX2"

    @property
    def fp32_flops_per_cycle(self) -> int:
        if "avx512f" in self.flags and self.vendor == "GenuineIntel":
            return 64
        if "fma" in self.flags:
            return 32
        return 8  # SSE: four-wide multiply and add

    def flops_per_cycle(self, precision: str = "fp32") -> int:
        """Nominal arithmetic of one core per cycle at `precision` (int8: operations). AMX's tile unit does
        1,024 bf16 FLOP or 2,048 int8 operations a cycle; AVX512_BF16 doubles fp32, VNNI quadruples it, and
        AVX2's int8 (16-bit sums) doubles it."""
        fp32 = self.fp32_flops_per_cycle
        if precision == "bf16":
            return 1024 if "amx_bf16" in self.flags else 2 * fp32 if self.bf16 else fp32
        if precision == "int8":
            return 2048 if "amx_int8" in self.flags else 4 * fp32 if self.vnni else 2 * fp32
        return fp32

    def peak_gflops(self, precision: str = "fp32") -> float:
        """Nominal peak of all cores at `precision` (fp32, bf16 or int8), in GFLOP/s (int8: GOP/s)."""
        return self.cores * self.flops_per_cycle(precision) * self.ghz

    def describe(self) -> str:
        present = [flag for flag in REPORTED_FLAGS if flag in self.flags]
        return (
            f"{self.model} ({self.vendor}; {self.kind}), {self.cores} cores at {self.ghz:.2f} GHz; "
            f"flags: {' '.join(present)}; "
            f"peak fp32 {self.peak_gflops('fp32'):.0f}, bf16 {self.peak_gflops('bf16'):.0f}, "
            f"int8 {self.peak_gflops('int8'):.0f} GFLOP/s"
        )


def choose_encoder(
    cpu: CpuInfo, runtime: str = "auto", precision: str = "auto", served_here: bool = True
) -> tuple[str, str]:
    """The encoder's (runtime, precision) for this CPU; "auto" picks the fastest whose accuracy bar holds.

    served_here: False for a repository served elsewhere (the native flavour, GPU instances): auto is then
    fp32 in ONNX Runtime, and an explicit bf16 is not checked against this CPU.
    bf16 in OpenVINO where the CPU has native bf16 (per-frame cosine >= 0.9999 against fp32); else fp32
    in ONNX Runtime, at exact parity with FunASR. int8 is never a default: on random weights it misses
    its bar (argmax agreement >= 98 %). bf16 is refused where the CPU would silently run it as fp32.
    """
    if precision == "auto":
        precision = "bf16" if served_here and cpu.bf16 and runtime in ("auto", "openvino") else "fp32"
    if runtime == "auto":
        runtime = "openvino" if precision == "bf16" else "onnxruntime"
    if precision == "bf16" and served_here and not cpu.bf16:
        raise ValueError(
            f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)}): OpenVINO would run bf16 as fp32. "
            "Use --precision fp32 (or int8), or export on a machine of the serving type."
        )
    return runtime, precision
