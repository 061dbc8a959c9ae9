"""The benchmarks behind docs/performance.md, used by scripts/bench.py and scripts/load_test.py.

flops        the model's analytic cost (GFLOP per utterance, per workload)
workload     seeded speech-like utterances of 1 to 30 s, written as WAV files under the bench cache
models       the random-weight checkpoint and the model repositories the benchmarks serve (one per encoder
             runtime and precision), cached; their models run outside Triton
workers      FunASR (fp32, autocast bf16), the exported models alone (ONNX Runtime, OpenVINO) and Triton,
             each timed on the workload in a process of its own
systems      which systems one benchmark run measures, in what order, and which this CPU cannot run
memory       peak memory of this process, and a process tree's memory sampled over time, and its plot
accuracy     an encoder choice (int8, OpenVINO, bf16) against ONNX Runtime fp32 on the workload
             (through e2v_export.compare)
report       summary rows (precision, GFLOP/s and % of the CPU's peak), the table, the plot and bench.json
perf_analyzer  Triton's perf_analyzer over gRPC: its input file, its runs and its CSV

Importing this package imports nothing: a worker process measures its own memory.
"""
