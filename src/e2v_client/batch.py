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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile

from e2v_client import audio, outputs
from e2v_client.client import (
    AccessError,
    Emotion2vecClient,
    Prediction,
    RequestError,
    Segment,
    ServerError,
    by_channel,
)
from e2v_client.live import LiveStream
from e2v_client.outputs import NO_SPEECH, SummaryRow, completed_sources, write_segments, write_summary
from e2v_common.contract import SAMPLE_RATE

OnAudio = Callable[[float], None]  # told the seconds of audio just scored, for a progress bar in audio time


@dataclass
class BatchOptions:
    output_dir: Path = Path("outputs")
    granularity: str = "utterance"
    embedding: bool = False
    concurrency: int = 8  # requests in flight
    resume: bool = False
    channels: str = "mix"  # mix: channels averaged to mono; separate (segment granularity): a timeline each
    live: LiveOptions | None = None  # segment granularity through the live stream model (e2v-client --stream)


@dataclass
class LiveOptions:
    """Each recording goes to the server's stream model as it is read (live.LiveStream), its segments coming
    back as they close; the outputs folder is that of segment granularity."""

    realtime: bool = False  # a file is read at the pace it plays (a pipe comes at its own pace)
    on_segment: Callable[[str, Segment], None] | None = None  # told (source, segment) as each arrives


STDIN = "-"  # as an input of a live stream: raw 16 kHz 16-bit mono PCM from standard input
LIVE_BLOCK_S = 0.1  # --realtime reads a file this much at a time


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
    """Score one decoded clip and write its outputs folder (e2v-web comes here)."""
    if options.granularity != "segment":  # a silent recording has no speech segments, and that is an answer
        audio.check_not_silent(clip)
    if options.channels == "separate" and clip.channels:
        prediction = await client.score_channels(clip.channels)
    else:
        prediction = await client.score(clip.samples, options.granularity)
    with outputs.new_folder(options.output_dir) as staging:
        await asyncio.to_thread(audio.write_wav, staging / outputs.AUDIO_FILE, clip)
        folder, row = await _finish(client, staging, prediction, clip.seconds, clip.broken, options, source)
    return prediction, folder, row


async def open_recording(path: Path, options: BatchOptions) -> audio.Source:
    """What score_recording reads for a file: its decoder (each channel kept apart with --channels separate), or
    with a live stream and path STDIN, raw PCM from standard input."""
    if options.live is not None and str(path) == STDIN:
        return audio.RawPcm(sys.stdin.buffer)
    return await asyncio.to_thread(audio.Decoder, path, path.name, options.channels == "separate")


async def score_recording(
    client: Emotion2vecClient,
    decoder: audio.Source,
    options: BatchOptions,
    source: str,
    on_audio: OnAudio | None = None,
) -> tuple[Prediction, Path, SummaryRow]:
    """Segment granularity on a recording of any length, in bounded memory: the decoder (open_recording's, or
    e2v-web's live microphone: audio.Pushed) gives it block by block, each block written to processed_audio.wav
    and fed to the timelines (one for the mix, or one per channel), so that no more than a request's worth of
    audio is held. With options.live, the timeline is a live stream."""
    live, timelines = options.live, []

    def new_timeline():
        if live is None:
            return client.timeline()
        return LiveStream(client, on_segment=live.on_segment and (lambda segment: live.on_segment(source, segment)))

    try:
        with decoder, outputs.new_folder(options.output_dir) as staging:
            wav = soundfile.SoundFile(staging / outputs.AUDIO_FILE, "w", SAMPLE_RATE, 1, "PCM_16", format="WAV")
            blocks = _paced(decoder.blocks()) if live and live.realtime else decoder.blocks()
            with wav:
                while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                    columns = block[:, 1:] if block.shape[1] > 1 else block  # each channel, or the mono mix
                    timelines = timelines or [new_timeline() for _ in range(columns.shape[1])]
                    await asyncio.to_thread(wav.write, block[:, 0])
                    for timeline, column in zip(timelines, columns.T, strict=True):
                        await timeline.feed(column)
                    if on_audio:
                        on_audio(len(block) / SAMPLE_RATE)
            audio.check_length(decoder.samples)
            for timeline in timelines:
                await timeline.feed(np.zeros(0, np.float32), last=True)
            per_channel = [timeline.segments for timeline in timelines]
            segments = by_channel(per_channel) if len(per_channel) > 1 else per_channel[0]
            prediction = client.segment_prediction(segments)
            folder, row = await _finish(client, staging, prediction, decoder.seconds, decoder.broken, options, source)
            return prediction, folder, row
    finally:
        for timeline in timelines:
            if isinstance(timeline, LiveStream):
                timeline.close()  # a recording that failed part-way: its stream is given up, not left waiting


def _paced(blocks):
    """The blocks cut into LIVE_BLOCK_S pieces, each given when its audio would have been heard."""
    started, heard = time.monotonic(), 0
    step = round(LIVE_BLOCK_S * SAMPLE_RATE)
    for block in blocks:
        for first in range(0, len(block), step):
            piece = block[first : first + step]
            heard += len(piece)
            time.sleep(max(0.0, started + heard / SAMPLE_RATE - time.monotonic()))
            yield piece


async def _finish(
    client: Emotion2vecClient,
    staging: Path,
    prediction: Prediction,
    seconds: float,
    broken: str | None,
    options: BatchOptions,
    source: str,
) -> tuple[Path, SummaryRow]:
    """Publish the outputs folder beside its processed_audio.wav; its summary row."""
    info = client.info
    folder = await asyncio.to_thread(
        outputs.finish_folder,
        staging,
        prediction,
        options.granularity,
        options.embedding,
        seconds,
        source,
        info.description,
        info.random_weights,
        info.frames_per_second,
        options.channels,
        broken,
    )
    row = SummaryRow(
        source_file=source,
        folder=str(folder),
        emotion=prediction.emotion or "",
        confidence=round(prediction.confidence, 6),
        timestamp=datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        duration=round(seconds, 3),
        status="scored" if prediction.has_speech else NO_SPEECH,
        error=f"incomplete: {broken}" if broken else "",
    )
    return folder, row


async def score_file(
    client: Emotion2vecClient, path: Path, options: BatchOptions, on_audio: OnAudio | None = None
) -> SummaryRow:
    source = "stdin" if str(path) == STDIN else str(path.resolve())
    try:
        if options.granularity == "segment":
            decoder = await open_recording(path, options)
            return (await score_recording(client, decoder, options, source, on_audio))[2]
        clip = await asyncio.to_thread(audio.load, path, False, audio.WHOLE_RECORDING_LIMIT_S)
        row = (await score_clip(client, clip, options, source))[2]
        if on_audio:
            on_audio(clip.seconds)
        return row
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
    on_audio: OnAudio | None = None,
) -> BatchReport:
    """Score the inputs; raises AccessError (after the requests in flight) if the server refuses this client."""
    started = datetime.now()
    start = time.monotonic()
    outputs.remove_abandoned(options.output_dir)
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
                        row = await score_file(client, path, options, on_audio)
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
