"""e2v-client: score audio files with an emotion2vec Triton server and write the outputs folders.

e2v-client clip.wav more/ --url 127.0.0.1:8001 --granularity frame --embedding
e2v-client call.mp3 --granularity segment     # an emotion per speech segment, with timestamps
e2v-client call.wav --stream --realtime       # live: a JSON line per segment as it closes
arecord -q -f S16_LE -r 16000 -c 1 | e2v-client - --stream    # live from the microphone
e2v-client --files-from list.txt --resume
e2v-client clip.wav --url gateway.example:8443 --root-cert gateway.crt --token-file token   # e2v-serve --public
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from e2v_client import audio
from e2v_client.batch import STDIN, BatchOptions, LiveOptions, expand_inputs, run_batch
from e2v_client.client import (
    GRANULARITIES,
    AccessError,
    AdaptiveConcurrency,
    ConfigError,
    Emotion2vecClient,
    RetryPolicy,
    ServerError,
    check_root_cert,
    read_token_file,
)
from e2v_client.outputs import NO_SPEECH, segment_json
from e2v_common import contract

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2

PROBED_INPUTS = 1000  # the progress bar's total: the headers of up to this many files are read up front


def add_server_arguments(parser: argparse.ArgumentParser, retries: int | None) -> None:
    """The options of e2v-client and e2v-web for reaching the server and writing outputs folders (retries: the
    default cap on a request's retries; None: none, only e2v-client's --retry-for budget)."""
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
        help="retries of a request while the server is down or overloaded, at most"
        + (" (default: %(default)s)" if retries is not None else " (default: no count, only --retry-for)"),
    )
    parser.add_argument("--output-dir", default="outputs", help="root of the outputs folders (default: %(default)s)")
    secure = parser.add_argument_group("through the gateway (e2v-serve --public)")
    secure.add_argument("--ssl", action="store_true", help="TLS, trusting the system's certificate authorities")
    secure.add_argument(
        "--root-cert",
        metavar="FILE",
        help="TLS, trusting this PEM certificate (the gateway's own, or its CA); implies --ssl",
    )
    secure.add_argument(
        "--token-file",
        metavar="FILE",
        help="send the bearer token on this file's first line with every request (it is never printed or written)",
    )


def client_options(args) -> dict:
    """Emotion2vecClient's TLS and token options from the parsed arguments; ConfigError names a file that cannot
    be used. The token is read here, not kept on `args`, so that printing the arguments never shows it."""
    root_cert = check_root_cert(args.root_cert) if args.root_cert else None
    token = read_token_file(args.token_file) if args.token_file else None
    return {"ssl": args.ssl or root_cert is not None, "root_cert": root_cert, "token": token}


def plaintext_token_warning(options: dict, prog: str) -> str | None:
    """A warning when the token would travel without TLS, readable by anyone on the way."""
    if options["token"] is not None and not options["ssl"]:
        return f"{prog}: warning: --token-file without --ssl or --root-cert: the token travels unencrypted"
    return None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="e2v-client", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", help="audio files and directories (searched recursively)")
    parser.add_argument("--files-from", metavar="LIST", help="read more inputs from LIST, one per line ('-': stdin)")
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="utterance",
        help="utterance: one answer per file; frame: also 50 answers a second; segment: an answer per speech "
        "segment, cut by the server's voice-activity detector, with timestamps (default: %(default)s)",
    )
    parser.add_argument(
        "--channels",
        choices=("mix", "separate"),
        default="mix",
        help="mix: average a multichannel file to mono; separate (with --granularity segment): a timeline per "
        "channel, each segment with its channel, as a call centre's agent and customer (default: %(default)s)",
    )
    parser.add_argument("--embedding", action="store_true", help="also write embedding.npy")
    live = parser.add_argument_group("live streams")
    live.add_argument(
        "--stream",
        action="store_true",
        help="send each input to the server's live stream model as it is read and print a JSON line per speech "
        "segment as it closes; the outputs folder is that of --granularity segment. Input '-': raw 16 kHz "
        "16-bit mono PCM from stdin (arecord, ffmpeg or sox)",
    )
    live.add_argument("--realtime", action="store_true", help="with --stream: read a file at the pace it plays")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="most requests in flight; fewer while the server refuses requests, more again as answers come "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--priority",
        choices=contract.PRIORITIES,
        default="bulk",
        help="bulk: served after interactive requests (the page, single calls); interactive: ahead of bulk jobs, "
        "for a few files someone waits for (default: %(default)s)",
    )
    parser.add_argument(
        "--retry-for",
        type=float,
        default=RetryPolicy.retry_for,
        metavar="SECONDS",
        help="how long a request the server refuses (overloaded, restarting, down) is retried before it fails "
        "(default: %(default)g: an overload is ridden out, a server gone for longer is not)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="skip inputs that already have a complete folder with the same settings"
    )
    add_server_arguments(parser, retries=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.inputs and not args.files_from:
        parser.error("give audio files or directories, or --files-from LIST")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.retry_for < 0 or (args.retries is not None and args.retries < 0):
        parser.error("--retry-for and --retries must be 0 or more")
    if args.channels == "separate" and args.granularity != "segment":
        parser.error("--channels separate gives each channel its own timeline: use it with --granularity segment")
    if args.realtime and not args.stream:
        parser.error("--realtime paces a --stream")
    if args.stream and (args.granularity == "frame" or args.channels == "separate"):
        parser.error("--stream gives segments of the mixed channels: not with --granularity frame, --channels separate")
    if args.stream:
        args.granularity = "segment"
    return args


def read_list(name: str) -> list[str]:
    lines = sys.stdin.read().splitlines() if name == "-" else Path(name).read_text("utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


async def connected_client(args) -> Emotion2vecClient | None:
    """A client that has read the model's identity from the server; None (said on stderr) if it cannot be used."""
    try:
        security = client_options(args)
    except ConfigError as exc:
        print(f"e2v-client: error: {exc}", file=sys.stderr)
        return None
    if warning := plaintext_token_warning(security, "e2v-client"):
        print(warning, file=sys.stderr)
    retry = RetryPolicy(retry_for=args.retry_for, attempts=None if args.retries is None else args.retries + 1)
    client = Emotion2vecClient(
        args.url,
        timeout=args.timeout,
        retry=retry,
        max_in_flight=args.concurrency,
        priority=args.priority,
        **security,
    )
    try:
        await client.connect()
        return client
    except ServerError as exc:  # AccessError (token, TLS) says what to fix; anything else: is it running?
        hint = "" if isinstance(exc, AccessError) else ". Is it running (e2v-serve)?"
        print(f"e2v-client: error: cannot use the server: {exc}{hint}", file=sys.stderr)
        await client.close()
        return None


def print_segment(info, source: str, segment) -> None:
    """One JSON line on stdout for a segment of a live stream, as result.json lists it, with its file."""
    shown = dataclasses.replace(segment, scores=segment.scores[info.kept])
    line = {"file": source} | segment_json(shown, [info.labels[i] for i in info.kept])
    print(json.dumps(line), flush=True)


def header_durations(inputs: list[Path]) -> dict[str, float]:
    """{file: the seconds its header declares}, for the progress bar's total (for at most PROBED_INPUTS files)."""
    if len(inputs) > PROBED_INPUTS:
        return {}
    return {str(path.resolve()): audio.declared_seconds(path) for path in inputs}


class Progress(tqdm):
    """The batch's bar, in audio seconds (block by block at segment granularity, so an hour-long file moves it
    too), with the files done, the requests in flight and whether the server is refusing requests beside it,
    and a line for each failure or warning."""

    def __init__(self, durations: dict[str, float], files: int, quiet: bool, concurrency: AdaptiveConcurrency):
        total = sum(durations.values()) or None
        super().__init__(total=total, unit=" audio-s", unit_scale=True, disable=quiet, dynamic_ncols=True)
        self.durations, self.files, self.files_done = durations, files, 0
        self.concurrency = concurrency

    def show_load(self) -> None:
        load = f"{self.files_done}/{self.files} files, {self.concurrency.in_flight} in flight"
        if self.concurrency.busy:
            load += f", server busy: at most {int(self.concurrency.limit)}"
        self.set_postfix_str(load, refresh=True)

    async def keep_showing_load(self) -> None:
        while True:  # refreshed while nothing finishes too, as in an overload
            self.show_load()
            await asyncio.sleep(1.0)

    def add_audio(self, seconds: float) -> None:
        if self.total is not None and self.n + seconds > self.total:  # a header that understated its length
            self.total = self.n + seconds
        self.update(seconds)

    def file_done(self, row) -> None:
        if row.status == "failed":
            self.write(f"e2v-client: failed: {row.source_file}: {row.error}", file=sys.stderr)
        elif row.error:
            self.write(f"e2v-client: warning: {row.source_file}: {row.error}", file=sys.stderr)
        if row.status in ("skipped", "failed") and self.total:  # audio that the bar will not count
            self.total -= self.durations.get(row.source_file, 0.0)
        self.files_done += 1
        self.show_load()


async def main_async(args) -> int:
    given = args.inputs + (read_list(args.files_from) if args.files_from else [])
    inputs = [Path(STDIN)] if args.stream and given == [STDIN] else expand_inputs(given)
    if not inputs:
        print("e2v-client: no audio files found in the inputs given", file=sys.stderr)
        return EXIT_ERROR
    options = BatchOptions(
        Path(args.output_dir), args.granularity, args.embedding, args.concurrency, args.resume, args.channels
    )
    client = await connected_client(args)
    if client is None:
        return EXIT_ERROR
    info = client.info
    if args.stream:
        options.live = LiveOptions(args.realtime, lambda source, segment: print_segment(info, source, segment))
    if info.random_weights:
        print(
            "e2v-client: warning: the server runs a random-weight test checkpoint; its predictions are meaningless",
            file=sys.stderr,
        )

    durations = await asyncio.to_thread(header_durations, inputs)
    progress = Progress(durations, len(inputs), args.quiet, client.concurrency)
    showing = asyncio.create_task(progress.keep_showing_load())

    try:
        report = await run_batch(client, inputs, options, progress.file_done, progress.add_audio)
    except AccessError as exc:
        progress.close()  # before the message, so that the bar does not overwrite it
        print(
            f"e2v-client: error: stopped: {exc}. The folders written so far are complete: "
            "re-run with --resume once this is fixed",
            file=sys.stderr,
        )
        return EXIT_ERROR
    finally:
        showing.cancel()
        progress.close()
        await client.close()

    scored = sum(r.status in ("scored", NO_SPEECH) for r in report.rows)
    skipped = sum(r.status == "skipped" for r in report.rows)
    silent = sum(r.status == NO_SPEECH for r in report.rows)
    print(
        f"e2v-client: {scored} scored" + (f" ({silent} without speech)" if silent else "") + f", {skipped} skipped "
        f"(already done), {len(report.failed)} failed; {report.audio_seconds:.1f} s of audio in "
        f"{report.wall_seconds:.1f} s; outputs in {options.output_dir}/; summary {report.summary_path}"
        + (f"; segments {report.segments_path}" if report.segments_path else "")
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
