"""Score many files: concurrent requests, one outputs folder each, a summary CSV, nothing lost.

Each input is decoded, scored and written on its own: a failure (bad audio, a
server that stays down after the retries) becomes an error row and the batch
goes on. With resume=True, inputs that already have a complete folder with the
same settings are skipped, so an interrupted job can be finished without
redoing or duplicating anything. A server that refuses this client (bearer
token) or a TLS failure stops the batch at once (AccessError): every file
would fail the same way, and --resume finishes the job once it is fixed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from e2v_client import audio
from e2v_client.client import AccessError, Emotion2vecClient, Prediction, RequestError, ServerError
from e2v_client.outputs import NO_SPEECH, SummaryRow, completed_sources, write_folder, write_segments, write_summary


@dataclass
class BatchOptions:
    output_dir: Path = Path("outputs")
    granularity: str = "utterance"
    embedding: bool = False
    concurrency: int = 8  # requests in flight
    resume: bool = False
    channels: str = "mix"  # mix: channels averaged to mono; separate (segment granularity): a timeline each


@dataclass
class BatchReport:
    rows: list[SummaryRow] = field(default_factory=list)
    summary_path: Path | None = None
    segments_path: Path | None = None  # segment granularity: every file's segments
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[SummaryRow]:
        return [r for r in self.rows if r.status == "failed"]


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given, and the audio files found (recursively) in the directories given, without duplicates."""
    found, seen = [], set()
    for given in paths:
        path = Path(given)
        candidates = (
            sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in audio.AUDIO_EXTENSIONS)
            if path.is_dir()
            else [path]
        )
        for candidate in candidates:
            key = str(candidate.resolve())
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


async def score_clip(
    client: Emotion2vecClient, clip: audio.Clip, options: BatchOptions, source: str
) -> tuple[Prediction, Path, SummaryRow]:
    """Score one decoded clip and write its outputs folder (e2v-client and e2v-web both come here)."""
    if options.granularity != "segment":  # a silent recording has no speech segments, and that is an answer
        audio.check_not_silent(clip)
    if options.channels == "separate" and clip.channels:
        prediction = await client.score_channels(clip.channels)
    else:
        prediction = await client.score(clip.samples, options.granularity)
    info = client.info
    folder = await asyncio.to_thread(
        write_folder,
        options.output_dir,
        clip,
        prediction,
        options.granularity,
        options.embedding,
        source,
        info.description,
        info.random_weights,
        info.frames_per_second,
        options.channels,
    )
    row = SummaryRow(
        source_file=source,
        folder=str(folder),
        emotion=prediction.emotion or "",
        confidence=round(prediction.confidence, 6),
        timestamp=datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        duration=round(clip.seconds, 3),
        status="scored" if prediction.has_speech else NO_SPEECH,
    )
    return prediction, folder, row


async def score_file(client: Emotion2vecClient, path: Path, options: BatchOptions) -> SummaryRow:
    source = str(path.resolve())
    try:
        clip = await asyncio.to_thread(audio.load, path, options.channels == "separate")
        return (await score_clip(client, clip, options, source))[2]
    except (audio.AudioError, RequestError) as exc:
        return SummaryRow(source_file=source, status="failed", error=str(exc))
    except AccessError:
        raise  # the batch stops: every file would fail the same way
    except ServerError as exc:
        return SummaryRow(source_file=source, status="failed", error=f"{ServerError.__name__}: {exc}")


async def run_batch(
    client: Emotion2vecClient,
    inputs: list[Path],
    options: BatchOptions,
    on_done: Callable[[SummaryRow], None] | None = None,
) -> BatchReport:
    """Score the inputs; raises AccessError (after the requests in flight) if the server refuses this client."""
    started = datetime.now()
    start = time.monotonic()
    done = completed_sources(options.output_dir, options.granularity, options.embedding, options.channels)
    done = done if options.resume else {}
    report = BatchReport()
    rows: list[SummaryRow | None] = [None] * len(inputs)
    limit = asyncio.Semaphore(options.concurrency)
    server_down: list[str] = []  # once the server stays down after the retries, stop sending
    refused: list[AccessError] = []  # once the server refuses this client, stop: no rows, no summary

    async def one(index: int, path: Path) -> None:
        source = str(path.resolve())
        if source in done:
            row = SummaryRow(source_file=source, folder=str(done[source]), status="skipped")
        else:
            async with limit:
                if refused:
                    return
                if server_down:
                    row = SummaryRow(
                        source_file=source,
                        status="failed",
                        error=f"not sent: the server is unavailable ({server_down[0]}); re-run with --resume",
                    )
                else:
                    try:
                        row = await score_file(client, path, options)
                    except AccessError as exc:
                        refused.append(exc)
                        return
                    if row.status == "failed" and row.error.startswith(ServerError.__name__):
                        server_down.append(row.error)
        rows[index] = row
        if isinstance(row.duration, float):
            report.audio_seconds += row.duration
        if on_done:
            on_done(row)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(inputs)))
    if refused:
        raise refused[0]
    report.rows = rows
    report.wall_seconds = time.monotonic() - start
    write_reports(report, options, started)
    return report


def write_reports(report: BatchReport, options: BatchOptions, started: datetime) -> None:
    """The run's summary CSV and, at segment granularity, its segments CSV, beside the outputs folders."""
    report.summary_path = write_summary(options.output_dir, report.rows, started)
    if options.granularity == "segment":
        report.segments_path = write_segments(options.output_dir, report.rows, started)
