"""``python -m e2v_export.tensorrt build|parity``: build the engines of a repository, or check them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from e2v_export.tensorrt.build import build_repository_engines
from e2v_export.tensorrt.parity import check_parity, meets_targets, parity_line
from e2v_export.tensorrt.profile import ProfileOptions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m e2v_export.tensorrt",
        description="fp16 TensorRT engines for the encoder and classifier, and their parity with ONNX Runtime fp32.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = ProfileOptions()
    build = commands.add_parser("build", help="model.plan for the encoder and classifier of a native repository")
    build.add_argument("--repository", required=True)
    for name in ("min_batch", "opt_batch", "max_batch", "pad_multiple"):
        build.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("min_seconds", "opt_seconds", "max_seconds"):
        build.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    build.add_argument("--workspace-gib", type=float, default=8.0)
    parity = commands.add_parser("parity", help="the engines against ONNX Runtime fp32")
    parity.add_argument("--repository", required=True)
    parity.add_argument("--count", type=int, default=200, help="utterances (200: one disagreement is 99.5 %%)")
    parity.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parity.add_argument("--batch-size", type=int, default=defaults.max_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """0: built, or parity within the targets; 1: parity below them; 2: an error."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            options = ProfileOptions(**{k: getattr(args, k) for k in asdict(ProfileOptions())})
            build_repository_engines(args.repository, options, workspace_gib=args.workspace_gib)
            return 0
        result = check_parity(
            args.repository, count=args.count, max_seconds=args.max_seconds, batch_size=args.batch_size
        )
        print(parity_line(result))
        return 0 if meets_targets(result) else 1
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"e2v_export.tensorrt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
