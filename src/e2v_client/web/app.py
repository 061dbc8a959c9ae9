"""What the page does, without Gradio, so that tests can drive it directly: check and decode the inputs, score
them, write the outputs folders and the summary as e2v-client does, draw and zip, and say what happened.

It uses e2v-client's own library (e2v_client.audio decodes, batch.score_clip scores and writes a folder,
batch.write_reports writes the summary and segments CSVs; a live recording goes through batch.score_recording on
a live stream, as `e2v-client --stream` does), so that the page and e2v-client give the same answer for a file.
Bad input or a server that is down ends up as a message on the page, never as an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from e2v_client import audio
from e2v_client.batch import BatchOptions, BatchReport, LiveOptions, score_clip, score_recording, write_reports
from e2v_client.client import GRANULARITIES, ModelInfo, Prediction, RequestError, Segment, ServerError
from e2v_client.outputs import SummaryRow
from e2v_client.web import messages
from e2v_client.web.blocking_client import BlockingClient
from e2v_client.web.files import is_inside, new_run_dir, zip_folder
from e2v_client.web.plots import save_plots

MB = 1024 * 1024
MICROPHONE = "microphone recording"
LIVE = "live recording"  # the name the page and result.json give a recording streamed from the microphone
LIVE_IDLE_S = 60.0  # a live recording that gets no audio for this long was abandoned (its page closed): dropped


@dataclass
class Input:
    name: str  # what the page shows and result.json records as source_file
    path: Path | None = None  # an uploaded file, or
    recording: tuple[int, np.ndarray] | None = None  # (rate, samples) from the microphone


@dataclass
class ClipResult:
    row: SummaryRow
    name: str
    granularity: str = ""
    windows: int = 1
    prediction: Prediction | None = None  # the server's answer (None when not scored)
    bar_png: str | None = None
    frame_png: str | None = None
    timeline_png: str | None = None  # segment granularity, when there is speech
    plot_stem: Path | None = None  # where the clip's plots are: the picked segment's chart goes beside them
    zip_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.row.status != "failed"  # scored, or no speech at segment granularity


@dataclass
class RunResult:
    message: str  # HTML
    results: list[ClipResult] = field(default_factory=list)
    summary_path: Path | None = None


class WebApp:
    """What the page does, independent of Gradio: read the model info, score inputs, write and zip folders."""

    def __init__(
        self,
        url: str,
        output_dir: str | Path,
        upload_root: str | Path,
        work_dir: str | Path,
        max_upload_mb: float = 50.0,
        timeout: float = 120.0,
        retries: int = 2,
        concurrency: int = 4,
        *,
        ssl: bool = False,
        root_cert: str | Path | None = None,
        token: str | None = None,
    ):
        self.output_dir = Path(output_dir).resolve()
        self.upload_root = Path(upload_root)
        self.work_dir = Path(work_dir)
        self.max_upload_bytes = int(max_upload_mb * MB)
        self.max_upload_mb = max_upload_mb
        self.concurrency = concurrency
        self.client = BlockingClient(url, timeout=timeout, retries=retries, ssl=ssl, root_cert=root_cert, token=token)
        self.info: ModelInfo | None = None
        self.server_error: str | None = None

    # the header: model identity from the server, or why the server cannot be used
    def refresh_info(self) -> ModelInfo | None:
        try:
            self.info = self.client.connect()
            self.server_error = None
        except ServerError as exc:
            self.info, self.server_error = None, str(exc)
        return self.info

    def header_html(self) -> str:
        if self.info is None:
            return messages.server_error_html(self.client.url, self.server_error)
        return messages.model_html(self.info, self.client.url, self.max_upload_mb, self.output_dir)

    def unreachable_html(self) -> str:
        return messages.notice(
            f"Cannot reach the emotion2vec server at {self.client.url}: {self.server_error}. Start it (make web, "
            "or e2v-serve) and try again.",
            "e2v-server-down",
        )

    def error_text(self, exc: BaseException) -> str:
        """What the page says of a clip that could not be scored (a bug's traceback goes to the terminal)."""
        if isinstance(exc, ServerError):
            return f"{ServerError.__name__}: {exc}"
        if isinstance(exc, OSError):  # decoding errors are AudioError: this is the outputs folder
            return f"cannot write the outputs folder in {self.output_dir}: {exc.strerror or exc}"
        if isinstance(exc, (audio.AudioError, RequestError)):
            return str(exc)
        traceback.print_exception(exc)  # a bug, not the user's input: keep the page working
        return f"internal error: {type(exc).__name__}: {exc}"

    # inputs: only Gradio's own uploads, and nothing over the size limit
    def collect_inputs(self, files, recording) -> tuple[list[Input], list[ClipResult]]:
        inputs, refused = [], []
        for given in files or []:
            path = Path(given if isinstance(given, (str, os.PathLike)) else getattr(given, "name", str(given)))
            name = path.name
            if not is_inside(path, self.upload_root) or not path.is_file():
                refused.append(self.failed(name, "not an uploaded file: the page reads only its own uploads"))
            elif path.stat().st_size > self.max_upload_bytes:
                size = path.stat().st_size / MB
                refused.append(self.failed(name, f"the file is {size:.1f} MB; the limit is {self.max_upload_mb:g} MB"))
            else:
                inputs.append(Input(name, path=path))
        if recording is not None:
            rate, samples = recording
            samples = np.asarray(samples)
            if samples.nbytes > self.max_upload_bytes:
                size = samples.nbytes / MB
                refused.append(
                    self.failed(MICROPHONE, f"the recording is {size:.1f} MB; the limit is {self.max_upload_mb:g} MB")
                )
            else:
                inputs.append(Input(MICROPHONE, recording=(int(rate), samples)))
        return inputs, refused

    @staticmethod
    def failed(name: str, error: str) -> ClipResult:
        return ClipResult(SummaryRow(source_file=name, status="failed", error=error), name)

    @staticmethod
    def decode(item: Input) -> audio.Clip:
        if item.path is not None:
            return audio.load(item.path)
        rate, samples = item.recording  # Gradio gives integer PCM: scaled as libsndfile scales it
        return audio.from_samples(audio.pcm_to_float(samples), rate)

    # scoring: decode, score and write one folder per input, as batch.score_file does for e2v-client
    async def _score_one(
        self, item: Input, granularity: str, embedding: bool, limit: asyncio.Semaphore, server_down: list[str]
    ):
        async with limit:
            if server_down:
                return (
                    item,
                    None,
                    None,
                    self.failed(item.name, f"not sent: the server is unavailable ({server_down[0]})"),
                )
            try:
                clip = await asyncio.to_thread(self.decode, item)
                options = BatchOptions(self.output_dir, granularity, embedding)
                prediction, folder, row = await score_clip(self.client.async_client, clip, options, item.name)
            except (audio.AudioError, RequestError, ServerError, OSError) as exc:
                if isinstance(exc, ServerError):
                    server_down.append(str(exc))
                return item, None, None, self.failed(item.name, self.error_text(exc))
        return item, prediction, folder, ClipResult(row, item.name, granularity, prediction.windows, prediction)

    async def _score_all(self, inputs, granularity, embedding):
        limit, server_down = asyncio.Semaphore(self.concurrency), []
        return await asyncio.gather(
            *(self._score_one(i, granularity, embedding, limit, server_down) for i in inputs), return_exceptions=True
        )

    def run(self, files, recording, granularity: str, embedding: bool, progress=None) -> RunResult:
        """Score what was uploaded or recorded. Never raises for bad input or a server that is down."""
        if granularity not in GRANULARITIES:
            return RunResult(messages.notice(f"Granularity must be one of {', '.join(GRANULARITIES)}."))
        inputs, refused = self.collect_inputs(files, recording)
        if not inputs and not refused:
            return RunResult(
                messages.notice(
                    f"No audio to score: upload audio files (up to {self.max_upload_mb:g} MB each) "
                    "or record from the microphone, then press the button."
                )
            )
        if inputs and self.refresh_info() is None:
            return RunResult(self.unreachable_html())
        if progress:
            progress(0.05, desc=f"scoring {len(inputs)} clip(s)")
        started = datetime.now()
        outcomes = self.client.call(self._score_all(inputs, granularity, embedding)) if inputs else []
        run_dir = new_run_dir(self.work_dir)
        results, notes = list(refused), []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                results.append(self.failed(inputs[index].name, self.error_text(outcome)))
                continue
            item, prediction, folder, result = outcome
            if prediction is not None:
                if progress:
                    progress(0.5 + 0.5 * index / len(outcomes), desc=f"plotting {item.name}")
                if note := self.illustrate(result, prediction, folder, run_dir, f"{index:03d}"):
                    notes.append(note)
            results.append(result)
        return self.report(results, notes, granularity, started)

    def report(self, results: list[ClipResult], notes: list[str], granularity: str, started: datetime) -> RunResult:
        """The run's summary CSV (and at segment granularity its segments CSV), written as e2v-client writes them,
        and what the page says of the run."""
        report = BatchReport([r.row for r in results])
        write_reports(report, BatchOptions(self.output_dir, granularity), started)
        errors = [f"{r.name}: {r.row.error}" for r in results if not r.ok] + notes
        random_weights = self.info is not None and self.info.random_weights
        message = messages.run_message(errors, sum(r.ok for r in results), self.output_dir, random_weights)
        return RunResult(message, results, report.summary_path)

    def illustrate(
        self, result: ClipResult, prediction: Prediction, folder: Path | None, run_dir: Path, stem: str
    ) -> str | None:
        """The clip's plots and the zip of its outputs folder (none while a live recording has no folder yet) in
        this run's work folder, as run_dir/stem*; a note for the page when they cannot be made."""
        try:
            fps = self.info.frames_per_second if self.info else 50.0
            result.plot_stem = run_dir / stem
            plots = save_plots(prediction, result.name, result.granularity, fps, result.plot_stem, result.row.duration)
            result.bar_png, result.frame_png, result.timeline_png = plots
            if folder is not None:
                zip_dir = run_dir / stem
                zip_dir.mkdir()
                result.zip_path = str(zip_folder(folder, self.output_dir, zip_dir))
        except Exception as exc:  # the folder is written and scored: say what is missing on the page
            traceback.print_exc()
            return f"{result.name}: scored, but the plots or the zip could not be made ({type(exc).__name__}: {exc})"
        return None

    def close(self) -> None:
        self.client.close()


class LiveRecording:
    """One browser session's live recording. The microphone's chunks go, as they come, to `e2v-client --stream`'s
    own code (batch.score_recording on a live stream, reading them through audio.Pushed) on the client's loop; the
    speech segments are shown as they arrive, and when the recording stops its outputs folder is written as
    e2v-client writes it at segment granularity, with the run's summary and segments CSVs.

    Gradio calls it from its worker threads: push() with each chunk, which returns at once (Gradio keeps only the
    newest chunk while a handler runs: a slow one would lose audio), view() on the page's timer, stop() when the
    recording stops, abandon() when the page is closed while recording."""

    def __init__(self, app: WebApp, idle_seconds: float = LIVE_IDLE_S):
        self.app = app
        self.started = datetime.now()
        self.audio = audio.Pushed(LIVE, idle_seconds)
        self.segments: list[Segment] = []  # as they arrive, appended on the client's loop
        live = LiveOptions(on_segment=lambda _, segment: self.segments.append(segment))
        self.options = BatchOptions(app.output_dir, "segment", live=live)
        self.lock = threading.Lock()  # view() and stop() one at a time
        self.shown = 0  # segments in the last view
        self.failure: str | None = None  # HTML: why the recording is not scored, once that is known
        self.failure_shown = False
        self.final: RunResult | None = None  # what stop() gave (or an empty one, once abandoned)
        self.future: Future | None = None  # score_recording's (prediction, folder, row), once it is under way
        self.run_dir: Path | None = None  # its plots and zip
        if app.refresh_info() is None:
            self.failure = app.unreachable_html()
        else:
            self.run_dir = new_run_dir(app.work_dir)
            self.future = app.client.submit(score_recording(app.client.async_client, self.audio, self.options, LIVE))

    @property
    def stopped(self) -> bool:
        return self.final is not None

    @cached_property
    def error(self) -> str:
        """Why score_recording failed (once it has)."""
        return self.app.error_text(self.future.exception())

    def push(self, chunk: tuple[int, np.ndarray] | None) -> None:
        """The next chunk, (rate, integer PCM samples) as Gradio gives it; ignored once the recording has stopped or
        failed."""
        if chunk is not None and self.future is not None and not self.future.done() and not self.stopped:
            rate, samples = chunk
            self.audio.push(samples, rate)

    def view(self) -> RunResult | None:
        """What the page shows while recording, when it has changed since the last view: the speech segments so far
        (the timeline, its table, the scores they weigh to), or why the recording is not scored; else None."""
        with self.lock:
            if self.stopped:
                return None
            if self.failure is None and self.future.done():  # the stream failed part-way
                self.failure = messages.notice(
                    f"The live recording is not scored: {self.error}. Stop it, and record again.", "e2v-live-failed"
                )
            if self.failure is not None:
                shown, self.failure_shown = self.failure_shown, True
                return None if shown else RunResult(self.failure)
            segments = list(self.segments)
            if len(segments) == self.shown:
                return None
            self.shown = len(segments)
            # segment_prediction keeps in each segment the scores of the labels shown: copies are given, so that the
            # segments stay whole for the recording's own prediction at the end
            prediction = self.app.client.async_client.segment_prediction([dataclasses.replace(s) for s in segments])
            seconds = self.audio.seconds
            row = SummaryRow(
                LIVE, emotion=prediction.emotion, confidence=round(prediction.confidence, 6), duration=round(seconds, 3)
            )
            result = ClipResult(row, LIVE, "segment", prediction=prediction)
            note = self.app.illustrate(result, prediction, None, self.run_dir, f"{len(segments):04d}")
            message = messages.live_html(len(segments), seconds) + (messages.notice(note) if note else "")
            return RunResult(message, [result])

    def stop(self) -> RunResult:
        """The recording stopped: its last samples go, and once its last segments are in, its outputs folder is
        written with the run's summary and segments CSVs. What the page shows then."""
        with self.lock:
            if self.final is not None:
                return self.final
            if self.future is None:  # the server could not be reached: nothing was sent
                self.final = RunResult(self.failure)
                return self.final
            self.audio.end()
            try:
                prediction, folder, row = self.future.result()
            except Exception:
                self.final = self.app.report([self.app.failed(LIVE, self.error)], [], "segment", self.started)
                return self.final
            result = ClipResult(row, LIVE, "segment", prediction=prediction)
            note = self.app.illustrate(result, prediction, folder, self.run_dir, "final")
            self.final = self.app.report([result], [note] if note else [], "segment", self.started)
            return self.final

    def abandon(self) -> None:
        """The page was closed while recording: the stream is given up and nothing is written."""
        if not self.stopped:
            self.final = RunResult("")
            self.audio.abort("the page was closed while recording")
