"""e2v-client: score audio files with an emotion2vec Triton server and write the outputs folders.

e2v-client clip.wav more/ --url 127.0.0.1:8001 --granularity frame --embedding
e2v-client --files-from list.txt --resume
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tqdm import tqdm

from e2v_client.batch import BatchOptions, expand_inputs, run_batch
from e2v_client.client import GRANULARITIES, Emotion2vecClient, RetryPolicy, ServerError

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def add_server_arguments(parser: argparse.ArgumentParser, retries: int) -> None:
    """The options of e2v-client and e2v-web for reaching the server and writing outputs folders."""
    parser.add_argument(
        "--url",
        default="127.0.0.1:8001",
        help="Triton gRPC address, or several separated by commas: requests are spread over "
        "them and move to another when one is down (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: %(default)s)")
    parser.add_argument(
        "--retries",
        type=int,
        default=retries,
        help="retries of a request while the server is down or overloaded (default: %(default)s)",
    )
    parser.add_argument("--output-dir", default="outputs", help="root of the outputs folders (default: %(default)s)")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="e2v-client", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", help="audio files and directories (searched recursively)")
    parser.add_argument("--files-from", metavar="LIST", help="read more inputs from LIST, one per line ('-': stdin)")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="utterance")
    parser.add_argument("--embedding", action="store_true", help="also write embedding.npy")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)")
    parser.add_argument(
        "--resume", action="store_true", help="skip inputs that already have a complete folder with the same settings"
    )
    add_server_arguments(parser, retries=4)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.inputs and not args.files_from:
        parser.error("give audio files or directories, or --files-from LIST")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def read_list(name: str) -> list[str]:
    lines = sys.stdin.read().splitlines() if name == "-" else Path(name).read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


async def main_async(args) -> int:
    inputs = expand_inputs(args.inputs + (read_list(args.files_from) if args.files_from else []))
    if not inputs:
        print("e2v-client: no audio files found in the inputs given", file=sys.stderr)
        return EXIT_ERROR
    options = BatchOptions(Path(args.output_dir), args.granularity, args.embedding, args.concurrency, args.resume)
    client = Emotion2vecClient(args.url, timeout=args.timeout, retry=RetryPolicy(attempts=args.retries + 1))
    try:
        info = await client.connect()
    except ServerError as exc:
        print(f"e2v-client: error: cannot use the server: {exc}. Is it running (e2v-serve)?", file=sys.stderr)
        await client.close()
        return EXIT_ERROR
    if info.random_weights:
        print(
            "e2v-client: warning: the server runs a random-weight test checkpoint; its predictions are meaningless",
            file=sys.stderr,
        )

    progress = tqdm(total=len(inputs), unit="file", disable=args.quiet, dynamic_ncols=True)
    audio_seconds = 0.0

    def on_done(row):
        nonlocal audio_seconds
        if row.status == "failed":
            progress.write(f"e2v-client: failed: {row.source_file}: {row.error}", file=sys.stderr)
        if isinstance(row.duration, float):
            audio_seconds += row.duration
        progress.update()
        elapsed = progress.format_dict["elapsed"] or 1e-9
        progress.set_postfix_str(f"{audio_seconds / elapsed:.1f} audio-s/s", refresh=False)

    try:
        report = await run_batch(client, inputs, options, on_done)
    finally:
        progress.close()
        await client.close()

    scored = sum(r.status == "scored" for r in report.rows)
    skipped = sum(r.status == "skipped" for r in report.rows)
    print(
        f"e2v-client: {scored} scored, {skipped} skipped (already done), {len(report.failed)} failed; "
        f"{report.audio_seconds:.1f} s of audio in {report.wall_seconds:.1f} s; outputs in {options.output_dir}/; "
        f"summary {report.summary_path}"
    )
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("e2v-client: interrupted; finished folders are complete, re-run with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
