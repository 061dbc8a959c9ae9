#!/usr/bin/env python
"""Server start-up, single-request latency and achieved batch sizes on a random-weight checkpoint.

.venv/bin/python scripts/serve_report.py --size base
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from e2v_common import contract
from e2v_common.synthetic_speech import speech_like
from e2v_export.checkpoint import load_checkpoint
from e2v_export.random_checkpoint import SIZES, make_test_checkpoint
from e2v_export.repository import write_repository
from e2v_server.serve import TritonServer


def infer(client, audio):
    tensor = grpcclient.InferInput(contract.ENSEMBLE_INPUT, [1, len(audio)], "FP32")
    tensor.set_data_from_numpy(audio[None, :])
    start = time.perf_counter()
    client.infer(contract.ENSEMBLE_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput(contract.SCORES)])
    return time.perf_counter() - start


def batch_sizes(client):
    sizes = {}
    for model in (contract.PREPROCESS_MODEL, contract.ENCODER_MODEL, contract.CLASSIFIER_MODEL):
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        sizes[model] = (int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base", choices=SIZES)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_test_checkpoint(args.size, 0, Path(tmp) / "checkpoint")
        repository = write_repository(load_checkpoint(model_dir), Path(tmp) / "repo")
        server = TritonServer(repository, log_file=Path(tmp) / "triton.log")
        with server:
            print(
                f"{args.size}: server start-up until {contract.ENSEMBLE_MODEL} READY (models loaded, warm-up run): "
                f"{server.startup_seconds:.2f} s"
            )
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                audio = speech_like(5.0, seed=1)
                infer(client, audio)
                latencies = np.array([infer(client, audio) for _ in range(args.repeats)]) * 1000
                print(
                    f"{args.size}: 5 s utterance, concurrency 1, {args.repeats} requests: "
                    f"p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms, "
                    f"min {latencies.min():.0f} ms"
                )
                before = batch_sizes(client)
                workload = [speech_like(s, seed=i) for i, s in enumerate([0.6, 9.0, 3.1, 6.0, 1.7, 7.3, 4.5, 2.4] * 4)]
                start = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda a: infer(client, a), workload))
                wall = time.perf_counter() - start
                after = batch_sizes(client)
                audio_seconds = sum(len(a) for a in workload) / contract.SAMPLE_RATE
                print(
                    f"{args.size}: 32 requests of 0.6-9 s at concurrency 8: {wall:.1f} s wall, "
                    f"{audio_seconds / wall:.1f} audio s/s"
                )
                for model in before:
                    n, e = after[model][0] - before[model][0], after[model][1] - before[model][1]
                    print(f"    {model:<11} {n} requests in {e} executions: average batch {n / max(e, 1):.2f}")


if __name__ == "__main__":
    main()
