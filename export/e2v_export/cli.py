"""e2v-export: emotion2vec+ checkpoint -> ONNX models in a Triton model repository.

    e2v-export --model iic/emotion2vec_plus_large --out model_repository
    e2v-export --model /path/to/emotion2vec_plus_large --out model_repository
    e2v-export make-test-checkpoint --size tiny|base|large --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from e2v_export.checkpoint import CheckpointError

DEFAULT_MODEL = "iic/emotion2vec_plus_large"


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2v-export",
        description="Export an emotion2vec+ checkpoint (FunASR model directory or hub id) to ONNX "
        "and write a Triton model repository. Subcommand: make-test-checkpoint.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model directory with config.yaml, model.pt, tokens.txt, or a hub id "
        f"(default: {DEFAULT_MODEL}; needs access to the hub)",
    )
    parser.add_argument("--hub", choices=["ms", "hf"], default="ms", help="hub for a hub id: ModelScope or Hugging Face")
    parser.add_argument("--out", default="model_repository", help="model repository to write (default: %(default)s)")
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
    from e2v_export.repository import write_repository

    try:
        checkpoint = load_checkpoint(args.model, hub=args.hub)
        repository = write_repository(checkpoint, args.out)
    except (CheckpointError, NotImplementedError) as exc:
        print(f"e2v-export: error: {exc}", file=sys.stderr)
        return 2
    print(f"model repository ready: {repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
