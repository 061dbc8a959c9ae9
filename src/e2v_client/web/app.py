"""What the page does, without Gradio, so that tests can drive it directly: check and decode the inputs, score
them, write the outputs folders and the summary as e2v-client does, draw and zip, and say what happened.

It uses e2v-client's own library (e2v_client.audio decodes, batch.score_clip scores and writes a folder,
outputs.write_summary writes the summary), so that the page and e2v-client give the same answer for a file.
Bad input or a server that is down ends up as a message on the page, never as an exception.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from e2v_client import audio
from e2v_client.batch import BatchOptions, score_clip
from e2v_client.client import GRANULARITIES, ModelInfo, Prediction, RequestError, ServerError
from e2v_client.outputs import SummaryRow, write_summary
from e2v_client.web import messages
from e2v_client.web.blocking_client import BlockingClient
from e2v_client.web.files import is_inside, new_run_dir, zip_folder
from e2v_client.web.plots import save_plots

MB = 1024 * 1024
MICROPHONE = "microphone recording"


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
            except (audio.AudioError, RequestError) as exc:
                return item, None, None, self.failed(item.name, str(exc))
            except ServerError as exc:
                server_down.append(str(exc))
                return item, None, None, self.failed(item.name, f"{ServerError.__name__}: {exc}")
            except OSError as exc:  # decoding errors are AudioError: this is the outputs folder
                error = f"cannot write the outputs folder in {self.output_dir}: {exc.strerror or exc}"
                return item, None, None, self.failed(item.name, error)
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
            return RunResult(
                messages.notice(
                    f"Cannot reach the emotion2vec server at {self.client.url}: "
                    f"{self.server_error}. Start it (make web, or e2v-serve) and press the "
                    "button again.",
                    "e2v-server-down",
                )
            )
        if progress:
            progress(0.05, desc=f"scoring {len(inputs)} clip(s)")
        started = datetime.now()
        outcomes = self.client.call(self._score_all(inputs, granularity, embedding)) if inputs else []
        run_dir = new_run_dir(self.work_dir)
        results, notes = list(refused), []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):  # a bug, not the user's input: keep the page working
                traceback.print_exception(outcome)
                results.append(self.failed(inputs[index].name, f"internal error: {type(outcome).__name__}: {outcome}"))
                continue
            item, prediction, folder, result = outcome
            if prediction is not None:
                if progress:
                    progress(0.5 + 0.5 * index / len(outcomes), desc=f"plotting {item.name}")
                try:
                    self.illustrate(result, prediction, folder, run_dir, index)
                except Exception as exc:  # the folder is written and scored: say what is missing on the page
                    traceback.print_exc()
                    notes.append(
                        f"{item.name}: scored, but the plots or the zip could not be made ({type(exc).__name__}: {exc})"
                    )
            results.append(result)
        summary = write_summary(self.output_dir, [r.row for r in results], started)  # as e2v-client writes it
        errors = [f"{r.name}: {r.row.error}" for r in results if not r.ok] + notes
        random_weights = self.info is not None and self.info.random_weights
        message = messages.run_message(errors, sum(r.ok for r in results), self.output_dir, random_weights)
        return RunResult(message, results, summary)

    def illustrate(self, result: ClipResult, prediction: Prediction, folder: Path, run_dir: Path, index: int) -> None:
        """The clip's plots and the zip of its outputs folder, in this run's work folder."""
        stem = f"{index:03d}"
        fps = self.info.frames_per_second if self.info else 50.0
        result.plot_stem = run_dir / stem
        plots = save_plots(prediction, result.name, result.granularity, fps, result.plot_stem, result.row.duration)
        result.bar_png, result.frame_png, result.timeline_png = plots
        zip_dir = run_dir / stem
        zip_dir.mkdir()
        result.zip_path = str(zip_folder(folder, self.output_dir, zip_dir))

    def close(self) -> None:
        self.client.close()
