"""The benchmark package's bookkeeping, without running a benchmark: which systems a CPU runs and which it
skips (and why), repository tags, rows with their precision and share of the CPU's peak, and the plots."""

from __future__ import annotations

import dataclasses
import json

import pytest

from e2v_bench import memory, report, systems
from e2v_bench.models import alone_name, encoder_suffix
from e2v_common.cpu import CpuInfo

EPYC = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2500.0\nflags\t\t: fpu sse2 avx avx2 fma"
# two cores whatever this machine has: peaks of 160 GFLOP/s fp32
AVX2 = dataclasses.replace(CpuInfo.this_machine(EPYC + "\n"), cores=2)
BF16 = dataclasses.replace(CpuInfo.this_machine(EPYC + " avx512f avx512_bf16 avx512_vnni\n"), cores=2)


def test_repository_tags_and_names_follow_the_encoder():
    assert [encoder_suffix(*e) for e in [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32")]] == [
        "",
        "-int8",
        "-openvino",
    ]
    assert encoder_suffix("openvino", "bf16") == "-openvino-bf16"
    assert [alone_name("onnxruntime", "int8"), alone_name("openvino", "bf16")] == ["onnx-int8", "openvino-bf16"]


def test_bf16_variants_are_skipped_with_the_reason_where_the_cpu_has_no_bf16():
    variants, skipped = systems.triton_variants([1, 2], AVX2)
    assert [v.prefix for v in variants] == [
        "triton", "triton-int8", "triton-openvino", "triton-pad", "triton-2x1", "triton-openvino-2x1"
    ]  # fmt: skip
    assert [v.alone for v in variants] == ["onnx", "onnx-int8", "openvino", None, None, None]
    pad, two_by_one, openvino_two_by_one = variants[3:]
    assert pad.concurrencies == [2] and pad.tag("large") == "large-pad"
    assert two_by_one.repository_options == {"encoder_instances": 2, "threads": 1}
    assert (openvino_two_by_one.runtime, openvino_two_by_one.tag("large")) == ("openvino", "large-openvino-2x1")
    assert len(skipped) == 1 and skipped[0].systems == ["openvino-bf16", "triton-openvino-bf16 c1/2"]
    assert "no native bf16" in skipped[0].reason

    variants, skipped = systems.triton_variants([1], BF16, int8=False, serving_layouts=False)
    assert [(v.prefix, v.runtime, v.precision) for v in variants] == [
        ("triton", "onnxruntime", "fp32"),
        ("triton-openvino", "openvino", "fp32"),
        ("triton-openvino-bf16", "openvino", "bf16"),
    ]
    assert skipped == []


def fake_result(wall: float) -> dict:
    return {"wall": wall, "latencies": [wall / 2, wall / 2], "probe": [0.1], "client_mb": 100.0}


def test_rows_carry_precision_and_share_of_the_peak_at_that_precision(capsys):
    results = report.Results(audio_seconds=10.0, gflop=100.0, cpu=AVX2)  # peak: fp32 160, int8 320 GFLOP/s
    results.record("funasr", "fp32", fake_result(2.0))
    results.record("onnx-int8", "int8", fake_result(1.0))
    fp32, int8 = results.rows
    assert fp32["gflop_per_s"] == pytest.approx(50) and fp32["peak_pct"] == pytest.approx(100 * 50 / 160)
    assert int8["peak_pct"] == pytest.approx(100 * 100 / 320) and int8["x_funasr"] == pytest.approx(2)
    report.print_table(results.rows)
    assert "% peak" in capsys.readouterr().out
    record = report.cpu_record(BF16)
    assert record["flags"] == ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"] and record["bf16"]
    assert record["peak_gflops"]["bf16"] == 2 * record["peak_gflops"]["fp32"]
    json.dumps(record)


def test_plots_are_written(tmp_path):
    results = report.Results(audio_seconds=10.0, gflop=100.0, cpu=AVX2)
    results.record("funasr", "fp32", fake_result(4.0))
    results.record("funasr bf16", "bf16", fake_result(8.0))
    for name, wall in (("triton c1", 2.0), ("triton c2", 1.5), ("triton-openvino c1", 1.0)):
        results.record(name, "fp32", fake_result(wall))
    assert {k: sorted(v) for k, v in report.triton_series(results.rows).items()} == {
        "triton": [1, 2],
        "triton-openvino": [1],
    }
    report.plot(results.rows, tmp_path / "bench.png", "tiny", AVX2.cores, AVX2.model)
    memory.plot_memory([(0.0, 100.0), (5.0, 150.0), (10.0, 140.0)], tmp_path / "memory.png", "server")
    soak = [(t * 5.0, 100.0 + t % 3) for t in range(120)]
    memory.plot_memory(soak, tmp_path / "soak.png", "server", memory.flatness(soak, warmup_s=60), measure="PSS")
    assert all((tmp_path / name).stat().st_size > 0 for name in ("bench.png", "memory.png", "soak.png"))


def test_flatness_tells_work_in_flight_from_a_creep():
    """Memory that swings with the work in flight but keeps its level passes; a creep of 2 MB/min fails."""
    swinging = [(t * 5.0, 1000.0 + (300.0 if t % 4 == 0 else 0.0)) for t in range(12 * 30)]  # 30 min, every 5 s
    flat = memory.flatness(swinging, warmup_s=300)
    assert len(flat["window_means_mb"]) == 25
    assert flat["means_deviation"] < 0.01 and flat["floors_deviation"] == 0 and flat["peaks_deviation"] == 0
    assert flat["min_mb"] == 1000 and flat["max_mb"] == 1300 and abs(flat["slope_mb_per_min"]) < 0.5
    creeping = [(t, mb + 2.0 * t / 60) for t, mb in swinging]
    flat = memory.flatness(creeping, warmup_s=300)
    assert flat["floors_deviation"] > 0.02 and flat["slope_mb_per_min"] == pytest.approx(2.0, abs=0.3)
