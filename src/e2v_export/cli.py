"""e2v-export: emotion2vec+ checkpoint -> ONNX models in a Triton model repository.

e2v-export --model iic/emotion2vec_plus_large --out model_repository
e2v-export --model /path/to/emotion2vec_plus_large --out model_repository
e2v-export make-test-checkpoint --size tiny|base|large --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from e2v_common.cpu import CpuInfo, choose_encoder
from e2v_common.runtimes import PRECISIONS, RUNTIMES
from e2v_export.checkpoint import HUB_MODEL, CheckpointError
from e2v_export.evaluate import evaluate
from e2v_export.repository import FLAVOURS, QUANTIZATIONS, RepositoryOptions, write_repository
from e2v_export.tune import export_tuned

# e2v-export's numeric serving options: each sets the RepositoryOptions field of the same name
NUMERIC_SERVING_OPTIONS = [
    ("--max-batch-size", "largest batch of each model's dynamic batcher"),
    ("--queue-delay-us", "dynamic batcher: longest wait to fill a batch, in microseconds"),
    (
        "--max-queue-size",
        "encoder: requests waiting beyond this many are refused at once with UNAVAILABLE (the client backs off "
        "and retries); 0: no bound",
    ),
    ("--preprocess-instances", "instances of the preprocess model"),
    ("--encoder-instances", "instances of the encoder"),
    ("--threads", "ONNX Runtime intra-op threads per encoder instance (0: one per core)"),
    ("--max-seconds", "longest audio a request may carry; longer requests are refused"),
    ("--pad-multiple", "preprocess pads each batch to a multiple of this many samples"),
    (
        "--max-padding-ratio",
        "portable encoder: run rows in groups whose longest is at most this times the shortest "
        "(padding is wasted compute on a CPU)",
    ),
    (
        "--max-run-seconds",
        "portable encoder: the most audio (rows x longest row) one runtime call takes, a longer batch is run "
        "in parts; bounds the working memory of a batch of long requests",
    ),
    ("--max-streams", "live streams the server takes at once; more are refused with UNAVAILABLE (retryable)"),
    ("--stream-idle-seconds", "a live stream that sends nothing for this long is dropped"),
    ("--max-chunk-seconds", "the longest chunk of audio one request of a live stream may hold"),
    (
        "--max-backlog-seconds",
        "a live stream with more audio than this waiting to be scored (sent faster than real time) is refused "
        "with UNAVAILABLE and goes on from its last state",
    ),
    ("--ack-seconds", "a live stream gets a state to go on from (after a restart) at least this often, in audio"),
    (
        "--max-stream-seconds",
        "the most audio one live stream takes; then it is refused with UNAVAILABLE and the client goes on in a "
        "new stream from its last state (the gateway's per-stream size limit follows)",
    ),
]


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2v-export",
        description="Export an emotion2vec+ checkpoint (FunASR model directory or hub id) to ONNX "
        "and write a Triton model repository. Subcommand: make-test-checkpoint.",
    )
    parser.add_argument(
        "--model",
        default=HUB_MODEL,
        help="model directory with config.yaml, model.pt, tokens.txt, or a hub id "
        f"(default: {HUB_MODEL}; needs access to the hub)",
    )
    parser.add_argument(
        "--hub", choices=["ms", "hf"], default="ms", help="hub for a hub id: ModelScope or Hugging Face"
    )
    parser.add_argument("--out", default="model_repository", help="model repository to write (default: %(default)s)")
    serving = parser.add_argument_group("serving options (written into the repository's config.pbtxt files)")
    defaults = RepositoryOptions()
    serving.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default=defaults.flavour,
        help="portable: Python-backend models running ONNX Runtime (any Triton, including the "
        "pip-installed one); native: Triton's onnxruntime backend with TensorRT fp16 (NVIDIA's container)",
    )
    serving.add_argument(
        "--instance-kind",
        choices=["cpu", "gpu"],
        help="encoder/classifier instances (default: cpu for portable, gpu for native)",
    )
    for flag, help_text in NUMERIC_SERVING_OPTIONS:  # type and default from RepositoryOptions
        default = getattr(defaults, _field(flag))
        serving.add_argument(flag, type=type(default), default=default, help=f"{help_text} (default: %(default)s)")
    serving.add_argument(
        "--max-queue-wait",
        type=float,
        metavar="SECONDS",
        help="an admitted request waits at most this long in the queue of each step (preprocess, encoder, "
        "classifier), then is refused with UNAVAILABLE (retryable); "
        "0: no bound (default: the time this machine takes to score one full batch of --max-seconds requests, "
        "measured at export, within 10-120 s)",
    )
    serving.add_argument(
        "--no-bulk-lane",
        dest="bulk_lane",
        action="store_false",
        help="portable flavour: leave out the bulk lane, the second encoder at the lowest CPU priority that "
        "bulk jobs (e2v-client's batches) use so that interactive requests do not wait for them; saves one "
        "copy of the encoder's memory",
    )
    serving.add_argument(
        "--runtime",
        choices=("auto", *RUNTIMES),
        default="auto",
        help="the encoder's runtime in the portable flavour (auto: openvino for bf16, else onnxruntime)",
    )
    serving.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="the encoder's precision. auto: the fastest whose accuracy bar holds on this CPU (bf16 where it "
        "has native bf16, else fp32); fp32: exact parity with FunASR; int8: dynamic quantization of the weight "
        "matrices (onnxruntime; its accuracy cost is measured by --evaluate and scripts/bench.py)",
    )
    serving.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default=RepositoryOptions().quantization,
        help="int8 only: dynamic (ONNX Runtime) or static, calibrated on audio (ONNX Runtime QDQ; OpenVINO through "
        "NNCF, with --runtime openvino) (default: %(default)s)",
    )
    serving.add_argument(
        "--tune",
        action="store_true",
        help="measure every runtime and precision this CPU runs (speed on a short workload, accuracy against fp32 on "
        "--evaluate's audio or a built-in set) and serve the fastest that holds its accuracy bar, in the fastest "
        "instances x threads layout; writes encoder/tuning.json. int8 is chosen only with --evaluate on a real "
        "checkpoint. Takes about a minute on the large model without --evaluate, a few with it",
    )
    serving.add_argument(
        "--evaluate",
        metavar="AUDIO",
        nargs="+",
        help="before writing the repository, print the accuracy cost of the chosen precision against fp32 "
        "on these audio files or folders (your own audio); with --tune, the audio every candidate is judged on",
    )
    serving.add_argument(
        "--tensorrt",
        action="store_true",
        help="native flavour: build fp16 TensorRT engines (model.plan) of the encoder and classifier "
        "on this machine's GPU and serve them as tensorrt_plan models; needs the tensorrt package of "
        "the serving Triton (10.5 for 24.10) and the serving GPU type (untested on hardware)",
    )
    serving.add_argument("--model-name", default="", help="name reported to clients (default: the model folder's name)")
    return parser


def _test_checkpoint_parser() -> argparse.ArgumentParser:
    from e2v_export.random_checkpoint import SIZES

    parser = argparse.ArgumentParser(
        prog="e2v-export make-test-checkpoint",
        description="Write a random-weight checkpoint of the real emotion2vec+ architecture in FunASR's "
        "directory format (its predictions are meaningless; for tests and benchmarks).",
    )
    parser.add_argument("--size", choices=SIZES, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    return parser


def check_tunable(args: argparse.Namespace, options: RepositoryOptions) -> None:
    """--tune chooses the runtime and precision itself, and measures this machine's CPU."""
    if args.runtime != "auto" or args.precision != "auto":
        raise ValueError("--tune chooses the runtime and precision: leave out --runtime and --precision")
    if options.instance_kind != "cpu" or options.tensorrt:
        raise ValueError("--tune measures this CPU: use it with CPU instances (GPU engines are timed by TensorRT)")
    options.check()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # FunASR logs every weight it maps at INFO on the root logger: show only our own INFO lines.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("e2v_export").setLevel(logging.INFO)
    if argv[:1] == ["make-test-checkpoint"]:
        from e2v_export.random_checkpoint import make_test_checkpoint

        args = _test_checkpoint_parser().parse_args(argv[1:])
        out = make_test_checkpoint(args.size, args.seed, args.out)
        print(f"wrote a random-weight {args.size} checkpoint to {out}")
        return 0

    args = _export_parser().parse_args(argv)
    from e2v_export.checkpoint import load_checkpoint

    options = RepositoryOptions(
        flavour=args.flavour,
        instance_kind=args.instance_kind or ("gpu" if args.flavour == "native" else "cpu"),
        model_name=args.model_name,
        tensorrt=args.tensorrt,
        quantization=args.quantization,
        max_queue_wait=args.max_queue_wait,
        bulk_lane=args.bulk_lane,
        **{_field(flag): getattr(args, _field(flag)) for flag, _ in NUMERIC_SERVING_OPTIONS},
    )
    try:
        cpu = CpuInfo.this_machine()
        print(f"e2v-export: {cpu.describe()}")
        if args.tune:
            check_tunable(args, options)
            repository = export_tuned(load_checkpoint(args.model, hub=args.hub), args.out, options, args.evaluate, cpu)
        else:
            served_here = options.flavour == "portable" and options.instance_kind == "cpu"
            options.runtime, options.precision = choose_encoder(cpu, args.runtime, args.precision, served_here)
            options.check()
            print(f"e2v-export: the encoder will run in {options.runtime} at {options.precision}")
            checkpoint = load_checkpoint(args.model, hub=args.hub)
            if args.evaluate:
                print(evaluate(checkpoint, options, args.evaluate))
            repository = write_repository(checkpoint, args.out, options)
    except (CheckpointError, NotImplementedError, ValueError, RuntimeError) as exc:
        print(f"e2v-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"model repository ready: {repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
