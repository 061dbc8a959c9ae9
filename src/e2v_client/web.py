"""e2v-web: a local web page for emotion2vec+ on a Triton server, like the emotion2vec+ desktop tool.

    e2v-web --url 127.0.0.1:8001 --host 127.0.0.1 --port 7860 --output-dir outputs --max-upload-mb 50

Upload one or more audio files (or record from the microphone), pick the granularity, tick "extract
embedding" and press the button: each clip gets its emotion and confidence, a bar chart of the scores,
for frame granularity a plot of the per-frame scores over time, and an outputs folder written exactly as
e2v-client writes it (with a zip download of it). Several clips also get a summary table, written as
summary_YYYYMMDD_HHMMSS.csv in the output root as e2v-client does.

The page uses the same library as e2v-client: e2v_client.audio decodes (files with audio.load, microphone
samples with audio.from_samples), Emotion2vecClient scores (it windows long audio itself) and
e2v_client.outputs writes the folders and the summary. Labels, frame rate and maximum duration come from
the server's model metadata.

Safety: the page binds 127.0.0.1 unless --host says otherwise; uploads are bounded by --max-upload-mb;
it reads only files inside Gradio's upload area, and zips only outputs folders inside the output root.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import html
import io
import ipaddress
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from e2v_client import audio
from e2v_client.batch import BatchOptions, score_clip
from e2v_client.client import (
    GRANULARITIES,
    Emotion2vecClient,
    ModelInfo,
    Prediction,
    RequestError,
    RetryPolicy,
    ServerError,
)
from e2v_client.outputs import FOLDER_PREFIX, SUMMARY_COLUMNS, SummaryRow, write_summary

TITLE = "emotion2vec+ speech emotion recognition"
MB = 1024 * 1024
# Colours per label, the same in the bar chart, the frame plot and its dominant-label band.
LABEL_COLOURS = {
    "angry": "#d62728",
    "disgusted": "#bcbd22",
    "fearful": "#9467bd",
    "happy": "#ff7f0e",
    "neutral": "#7f7f7f",
    "other": "#8c564b",
    "sad": "#1f77b4",
    "surprised": "#17becf",
    "unknown": "#e377c2",
}
FALLBACK_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
MICROPHONE = "microphone recording"
KEEP_RUNS = 20  # plot and zip folders of the most recent runs kept in the work folder


# --- plots (matplotlib, Agg; Figure objects, no pyplot state) ----------------------------------------------
def label_colours(labels: list[str]) -> list[str]:
    return [LABEL_COLOURS.get(label, FALLBACK_COLOURS[i % len(FALLBACK_COLOURS)]) for i, label in enumerate(labels)]


def plot_scores(labels: list[str], scores: np.ndarray, title: str):
    """A horizontal bar chart of the utterance scores, labels in model order, the top one highlighted."""
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=float)
    top = int(np.argmax(scores))
    colours = label_colours(labels)
    fig = Figure(figsize=(5.6, 3.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    bars = ax.barh(y, scores, color=colours, height=0.7)
    for i, bar in enumerate(bars):
        bar.set_alpha(1.0 if i == top else 0.45)
    ax.set_yticks(y, labels, fontsize=11)
    ax.get_yticklabels()[top].set_fontweight("bold")
    ax.invert_yaxis()
    right = min(1.0, max(0.25, scores.max() * 1.3))
    ax.set_xlim(0, right)
    for i, value in enumerate(scores):
        ax.text(
            value + right * 0.01,
            i,
            f"{value * 100:.1f} %",
            va="center",
            fontsize=10,
            fontweight="bold" if i == top else "normal",
        )
    ax.set_xlabel("score", fontsize=11)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=12, loc="left")
    return fig


def plot_frames(labels: list[str], frame_scores: np.ndarray, frames_per_second: float, title: str):
    """Per-frame scores over time (one line per label) and a band under them coloured by each frame's top label."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    frame_scores = np.asarray(frame_scores, dtype=float)
    count = len(frame_scores)
    end = count / frames_per_second
    t = (np.arange(count) + 0.5) / frames_per_second  # frame i covers [i, i + 1) / fps
    colours = label_colours(labels)
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[8, 1])
    ax = fig.add_subplot(grid[0])
    band = fig.add_subplot(grid[1], sharex=ax)
    for i, label in enumerate(labels):
        ax.plot(t, frame_scores[:, i], color=colours[i], linewidth=1.4, label=label)
    ax.set_xlim(0, end)
    ax.set_ylim(0, min(1.0, max(0.25, frame_scores.max() * 1.1)))
    ax.set_ylabel("score", fontsize=11)
    ax.tick_params(labelbottom=False, labelsize=10)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=12, loc="left")
    dominant = frame_scores.argmax(axis=1)
    band.imshow(
        dominant[None, :],
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(labels) - 0.5,
        extent=(0, end, 0, 1),
    )
    band.set_yticks([0.5], ["top label"], fontsize=10)
    band.tick_params(axis="x", labelsize=10)
    band.set_xlabel(f"time (s)  ·  {count} frames at {frames_per_second:g} frames/s", fontsize=11)
    handles = [Patch(color=colours[i], label=label) for i, label in enumerate(labels)]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=11,
        title="label",
        title_fontsize=11,
    )
    return fig


def save_png(fig, path):
    fig.savefig(path, format="png")
    return path


# --- the page's logic (no Gradio here, so that it can be tested on its own) -----------------------------------
def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when path, with every symlink resolved, is root or lies under it."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):
        return False


def zip_folder(folder: Path, output_root: Path, zip_dir: Path) -> Path:
    """A zip of one outputs folder (its files under the folder's name); refuses anything outside the output root."""
    folder = Path(folder)
    if (
        folder.is_symlink()
        or not folder.is_dir()
        or not folder.name.startswith(FOLDER_PREFIX)
        or not is_inside(folder, output_root)
        or folder.resolve() == Path(output_root).resolve()
    ):
        raise ValueError(f"{folder} is not an outputs folder inside {output_root}")
    target = zip_dir / f"{folder.name}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(folder.iterdir()):
            if item.is_file() and not item.is_symlink():
                archive.write(item, f"{folder.name}/{item.name}")
    return target


class Scorer:
    """One Emotion2vecClient, on an asyncio event loop of its own (a daemon thread), for the page's worker threads."""

    def __init__(self, url: str, timeout: float = 120.0, retries: int = 2):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="e2v-web-grpc", daemon=True).start()
        self.client: Emotion2vecClient = self.call(self._make())

    async def _make(self) -> Emotion2vecClient:
        return Emotion2vecClient(self.url, timeout=self.timeout, retry=RetryPolicy(attempts=self.retries + 1))

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def connect(self) -> ModelInfo:
        """The model's identity (the client's channels reconnect quickly after a server restart)."""
        return self.call(self.client.connect())

    def close(self) -> None:
        try:
            self.call(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)


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
    bar_png: str | None = None
    frame_png: str | None = None
    zip_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.row.status == "scored"


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
    ):
        self.output_dir = Path(output_dir).resolve()
        self.upload_root = Path(upload_root)
        self.work_dir = Path(work_dir)
        self.max_upload_bytes = int(max_upload_mb * MB)
        self.max_upload_mb = max_upload_mb
        self.concurrency = concurrency
        self.scorer = Scorer(url, timeout=timeout, retries=retries)
        self.info: ModelInfo | None = None
        self.server_error: str | None = None

    # the header: model identity from the server, or why the server cannot be used
    def refresh_info(self) -> ModelInfo | None:
        try:
            self.info = self.scorer.connect()
            self.server_error = None
        except ServerError as exc:
            self.info, self.server_error = None, str(exc)
        return self.info

    def header_html(self) -> str:
        if self.info is None:
            return (
                f'<div class="e2v-box e2v-error" id="e2v-server-error"><b>The emotion2vec server cannot be used</b> '
                f"at <code>{html.escape(self.scorer.url)}</code>: {html.escape(self.server_error or 'not connected')}."
                "<br>Start it (<code>make web</code> starts both, or <code>e2v-serve</code>) and press the "
                "button again.</div>"
            )
        info = self.info
        text = (
            f'<div class="e2v-box e2v-info" id="e2v-model">Model <b>{html.escape(info.name)}</b> at '
            f"<code>{html.escape(self.scorer.url)}</code> · {len(info.labels)} labels: "
            f"{html.escape(', '.join(info.labels))} · {info.frames_per_second:g} frames/s · clips longer than "
            f"{info.max_seconds:g} s are scored in windows of at most {info.max_seconds:g} s · uploads up to "
            f"{self.max_upload_mb:g} MB · outputs in <code>{html.escape(str(self.output_dir))}</code></div>"
        )
        if info.random_weights:
            text += (
                '<div class="e2v-box e2v-warning" id="e2v-random-weights"><b>Warning:</b> the server runs a '
                "random-weight test checkpoint: its predictions are meaningless.</div>"
            )
        return text

    # inputs
    def collect_inputs(self, files, recording) -> tuple[list[Input], list[ClipResult]]:
        inputs, refused = [], []
        for given in files or []:
            path = Path(given if isinstance(given, (str, os.PathLike)) else getattr(given, "name", str(given)))
            name = path.name
            if not is_inside(path, self.upload_root) or not path.is_file():
                refused.append(self.failed(name, "not an uploaded file: the page reads only its own uploads"))
            elif path.stat().st_size > self.max_upload_bytes:
                refused.append(
                    self.failed(
                        name, f"the file is {path.stat().st_size / MB:.1f} MB; the limit is {self.max_upload_mb:g} MB"
                    )
                )
            else:
                inputs.append(Input(name, path=path))
        if recording is not None:
            rate, samples = recording
            samples = np.asarray(samples)
            if samples.nbytes > self.max_upload_bytes:
                refused.append(
                    self.failed(
                        MICROPHONE,
                        f"the recording is {samples.nbytes / MB:.1f} MB; the limit is {self.max_upload_mb:g} MB",
                    )
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
        rate, samples = item.recording
        if samples.dtype.kind == "i":  # Gradio gives 16-bit (or 32-bit) signed integer PCM
            samples = samples.astype(np.float64) / (np.iinfo(samples.dtype).max + 1)
        elif samples.dtype.kind == "u":  # 8-bit PCM is unsigned, centred on 128
            half = (np.iinfo(samples.dtype).max + 1) / 2
            samples = (samples.astype(np.float64) - half) / half
        return audio.from_samples(samples, rate)

    # scoring: decode, score and write one folder per input, as batch.score_file does for e2v-client
    async def _score_one(
        self, item: Input, granularity: str, embedding: bool, limit: asyncio.Semaphore, server_down: list[str]
    ):
        client = self.scorer.client
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
                scores, folder, row = await score_clip(client, clip, options, item.name)
            except (audio.AudioError, RequestError) as exc:
                return item, None, None, self.failed(item.name, str(exc))
            except ServerError as exc:
                server_down.append(str(exc))
                return item, None, None, self.failed(item.name, f"{ServerError.__name__}: {exc}")
            except OSError as exc:  # decoding errors are AudioError: this is the outputs folder
                return (
                    item,
                    None,
                    None,
                    self.failed(
                        item.name, f"cannot write the outputs folder in {self.output_dir}: {exc.strerror or exc}"
                    ),
                )
        return item, scores, folder, ClipResult(row, item.name, granularity, scores.windows)

    async def _score_all(self, inputs, granularity, embedding):
        limit, server_down = asyncio.Semaphore(self.concurrency), []
        return await asyncio.gather(
            *(self._score_one(i, granularity, embedding, limit, server_down) for i in inputs), return_exceptions=True
        )

    def run(self, files, recording, granularity: str, embedding: bool, progress=None) -> RunResult:
        """Score what was uploaded or recorded. Never raises for bad input or a server that is down."""
        if granularity not in GRANULARITIES:
            return RunResult(self.notice(f"Granularity must be one of {', '.join(GRANULARITIES)}."))
        inputs, refused = self.collect_inputs(files, recording)
        if not inputs and not refused:
            return RunResult(
                self.notice(
                    f"No audio to score: upload audio files (up to {self.max_upload_mb:g} MB each) "
                    "or record from the microphone, then press the button."
                )
            )
        if inputs and self.refresh_info() is None:
            return RunResult(
                self.notice(
                    f"Cannot reach the emotion2vec server at {self.scorer.url}: "
                    f"{self.server_error}. Start it (make web, or e2v-serve) and press the "
                    "button again.",
                    "e2v-server-down",
                )
            )
        if progress:
            progress(0.05, desc=f"scoring {len(inputs)} clip(s)")
        started = datetime.now()
        outcomes = self.scorer.call(self._score_all(inputs, granularity, embedding)) if inputs else []
        run_dir = self.new_run_dir()
        results, notes = list(refused), []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):  # a bug, not the user's input: keep the page working
                traceback.print_exception(outcome)
                results.append(self.failed(inputs[index].name, f"internal error: {type(outcome).__name__}: {outcome}"))
                continue
            item, scores, folder, result = outcome
            if scores is not None:
                if progress:
                    progress(0.5 + 0.5 * index / len(outcomes), desc=f"plotting {item.name}")
                try:
                    self.illustrate(result, scores, folder, run_dir, index)
                except Exception as exc:  # the folder is written and scored: say what is missing on the page
                    traceback.print_exc()
                    notes.append(
                        f"{item.name}: scored, but the plots or the zip could not be made ({type(exc).__name__}: {exc})"
                    )
            results.append(result)
        summary = self.write_summary([r.row for r in results], started)
        errors = [f"{r.name}: {r.row.error}" for r in results if not r.ok] + notes
        return RunResult(self.message(errors, scored=sum(r.ok for r in results)), results, summary)

    def illustrate(self, result: ClipResult, scores: Prediction, folder: Path, run_dir: Path, index: int) -> None:
        stem = f"{index:03d}"
        fps = self.info.frames_per_second if self.info else 50.0
        kind = "utterance scores" if result.granularity == "utterance" else "utterance scores (whole clip)"
        result.bar_png = str(
            save_png(
                plot_scores(scores.labels, scores.scores, f"{result.name}: {kind}"), run_dir / f"{stem}_scores.png"
            )
        )
        if scores.frame_scores is not None and len(scores.frame_scores):
            result.frame_png = str(
                save_png(
                    plot_frames(scores.labels, scores.frame_scores, fps, f"{result.name}: scores per frame"),
                    run_dir / f"{stem}_frames.png",
                )
            )
        zip_dir = run_dir / stem
        zip_dir.mkdir()
        result.zip_path = str(zip_folder(folder, self.output_dir, zip_dir))

    def write_summary(self, rows: list[SummaryRow], started: datetime) -> Path:
        """summary_YYYYMMDD_HHMMSS[_N].csv as e2v-client writes it."""
        return write_summary(self.output_dir, rows, started)

    def new_run_dir(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        runs = sorted((p for p in self.work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in runs[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)
        run_dir = self.work_dir / f"run_{uuid.uuid4().hex[:12]}"
        run_dir.mkdir()
        return run_dir

    def message(self, errors: list[str], scored: int = 0) -> str:
        parts = []
        if scored:
            parts.append(
                f'<div class="e2v-box e2v-ok" id="e2v-done">{scored} clip(s) scored; outputs in '
                f"<code>{html.escape(str(self.output_dir))}</code>.</div>"
            )
        if errors:
            items = "".join(f"<li>{html.escape(e)}</li>" for e in errors)
            parts.append(f'<div class="e2v-box e2v-error" id="e2v-errors"><b>Not scored:</b><ul>{items}</ul></div>')
        if self.info is not None and self.info.random_weights and scored:
            parts.append(
                '<div class="e2v-box e2v-warning">Random-weight test checkpoint: these predictions are '
                "meaningless.</div>"
            )
        return "".join(parts)

    @staticmethod
    def notice(text: str, elem_id: str = "e2v-notice") -> str:
        return f'<div class="e2v-box e2v-error" id="{elem_id}">{html.escape(text)}</div>'

    def close(self) -> None:
        self.scorer.close()


def clip_card(result: ClipResult) -> str:
    """The headline of one clip: emotion and confidence, or why it was not scored."""
    name = html.escape(result.name)
    if not result.ok:
        return (
            f'<div class="e2v-card e2v-failed"><div class="e2v-name">{name}</div>'
            f'<div class="e2v-error-text">Not scored: {html.escape(result.row.error)}</div></div>'
        )
    row = result.row
    windows = f" · scored in {result.windows} windows" if result.windows > 1 else ""
    return (
        f'<div class="e2v-card e2v-scored"><div class="e2v-name">{name} · {row.duration:.2f} s · '
        f"{html.escape(result.granularity)} granularity{windows}</div>"
        f'<div class="e2v-headline"><span class="e2v-emotion">{html.escape(row.emotion)}</span> '
        f'<span class="e2v-confidence">confidence <b class="e2v-confidence-value">{row.confidence:.6f}</b> '
        f"({row.confidence * 100:.1f} %)</span></div>"
        f'<div class="e2v-folder">Outputs folder: <code class="e2v-folder-path">{html.escape(row.folder)}</code>'
        f"</div></div>"
    )


def summary_table(results: list[ClipResult]) -> list[list]:
    rows = []
    for result in results:
        values = {column: getattr(result.row, column) for column in SUMMARY_COLUMNS}
        values["folder"] = Path(values["folder"]).name if values["folder"] else ""
        rows.append([values[column] for column in SUMMARY_COLUMNS])
    return rows


# --- the Gradio page ----------------------------------------------------------------------------------------
CSS = """
.e2v-box {border-radius: 8px; padding: 10px 14px; margin: 4px 0; font-size: 15px; line-height: 1.5;}
.e2v-info {background: #f3f6fb; border: 1px solid #d5deeb;}
.e2v-ok {background: #eef8f0; border: 1px solid #b9dfc2;}
.e2v-warning {background: #fff6e0; border: 1px solid #f0c36d; color: #6b4b00;}
.e2v-error {background: #fdecec; border: 1px solid #f1a9a9; color: #8a1c1c;}
.e2v-error ul {margin: 4px 0 0 18px;}
.e2v-card {padding: 8px 4px;}
.e2v-name {font-size: 15px; color: #555;}
.e2v-headline {margin: 4px 0;}
.e2v-emotion {font-size: 30px; font-weight: 700; margin-right: 12px;}
.e2v-confidence {font-size: 18px;}
.e2v-folder {font-size: 14px; word-break: break-all;}
.e2v-failed .e2v-error-text {color: #8a1c1c; font-size: 16px;}
.e2v-result {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px;}
.e2v-result .e2v-bar, .e2v-result .e2v-frames {border: none !important;}
"""


def build_page(app: WebApp):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_load():
        app.refresh_info()
        return app.header_html()

    def on_run(files, recording, granularity, embedding, progress=gr.Progress()):
        try:
            run = app.run(files, recording, granularity, embedding, progress)
        except Exception as exc:  # a bug: say so on the page (the traceback goes to the terminal), keep working
            traceback.print_exc()
            run = RunResult(
                app.notice(
                    f"Internal error: {type(exc).__name__}: {exc}. The details are in the terminal that runs e2v-web."
                )
            )
        results = [
            dict(name=r.name, ok=r.ok, card=clip_card(r), bar=r.bar_png, frames=r.frame_png, zip=r.zip_path)
            for r in run.results
        ]
        table = summary_table(run.results) if run.results else []
        return (
            app.header_html(),
            run.message,
            results,
            gr.update(value=table, visible=bool(table)),
            gr.update(value=str(run.summary_path) if run.summary_path else None, visible=run.summary_path is not None),
        )

    with gr.Blocks(title=TITLE, delete_cache=(3600, 24 * 3600)) as page:
        gr.Markdown(f"# {TITLE}")
        header = gr.HTML(app.header_html(), elem_id="e2v-header")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(
                    label="Audio files", file_count="multiple", type="filepath", elem_id="e2v-files", height=160
                )
                gr.Markdown(
                    f"wav, flac, ogg, mp3, m4a, aac, opus, webm, ... up to {app.max_upload_mb:g} MB each",
                    elem_id="e2v-files-hint",
                )
                recording = gr.Audio(
                    sources=["microphone"], type="numpy", label="Or record from the microphone", elem_id="e2v-mic"
                )
                granularity = gr.Radio(
                    list(GRANULARITIES),
                    value="utterance",
                    label="Granularity",
                    info="utterance: one answer per clip; frame: also scores per frame over time",
                    elem_id="e2v-granularity",
                )
                embedding = gr.Checkbox(label="Extract embedding (embedding.npy)", value=False, elem_id="e2v-embedding")
                button = gr.Button("Recognise emotion", variant="primary", elem_id="e2v-run")
            with gr.Column(scale=3):
                message = gr.HTML("", elem_id="e2v-message")
                results = gr.State([])

                @gr.render(inputs=results)
                def show(items):
                    for item in items:
                        with gr.Column(elem_classes=["e2v-result"]):
                            if not item["ok"]:
                                gr.HTML(item["card"], elem_classes=["e2v-result-card"])
                                continue
                            with gr.Row(equal_height=False):
                                with gr.Column(scale=2, min_width=260):
                                    gr.HTML(item["card"], elem_classes=["e2v-result-card"])
                                    gr.File(
                                        item["zip"],
                                        label="Download the outputs folder (zip)",
                                        interactive=False,
                                        elem_classes=["e2v-zip"],
                                    )
                                gr.Image(
                                    item["bar"],
                                    type="filepath",
                                    show_label=False,
                                    scale=3,
                                    format="png",
                                    interactive=False,
                                    buttons=["download", "fullscreen"],
                                    elem_classes=["e2v-bar"],
                                )
                            if item["frames"]:
                                gr.Image(
                                    item["frames"],
                                    type="filepath",
                                    show_label=False,
                                    format="png",
                                    interactive=False,
                                    buttons=["download", "fullscreen"],
                                    elem_classes=["e2v-frames"],
                                )

                table = gr.Dataframe(
                    headers=list(SUMMARY_COLUMNS),
                    label="Summary",
                    visible=False,
                    wrap=False,
                    interactive=False,
                    elem_id="e2v-summary",
                )
                summary_file = gr.File(label="Summary CSV", visible=False, interactive=False, elem_id="e2v-summary-csv")

        page.load(on_load, outputs=header)
        button.click(
            on_run,
            inputs=[files, recording, granularity, embedding],
            outputs=[header, message, results, table, summary_file],
            concurrency_limit=1,
        )
    return page


def theme():
    import gradio as gr

    # System fonts: the default theme's web fonts need the internet.
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="e2v-web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address the page binds (default: %(default)s, loopback)")
    parser.add_argument("--port", type=int, default=7860, help="port of the page (default: %(default)s)")
    parser.add_argument("--output-dir", default="outputs", help="root of the outputs folders (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload in MB (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: %(default)s)")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="retries of a request while the server is down or overloaded (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    return args


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import matplotlib  # noqa: F401
        from gradio.utils import get_upload_folder
    except ImportError as exc:
        print(f"e2v-web: error: {exc}: install the web extra (pip install 'emotion2vec-triton[web]')", file=sys.stderr)
        return 2

    work_dir = Path(tempfile.mkdtemp(prefix="e2v-web-"))
    atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    app = WebApp(
        args.url, args.output_dir, get_upload_folder(), work_dir, args.max_upload_mb, args.timeout, args.retries
    )
    app.refresh_info()
    if app.info is None:
        print(
            f"e2v-web: warning: cannot use the server at {args.url} yet ({app.server_error}); the page says so "
            "and tries again on each request",
            file=sys.stderr,
        )
    elif app.info.random_weights:
        print(
            "e2v-web: warning: the server runs a random-weight test checkpoint; its predictions are meaningless",
            file=sys.stderr,
        )
    if not _is_loopback(args.host):
        print(
            f"e2v-web: warning: binding {args.host}: the page has no login, anyone who can reach it can upload "
            "audio and download outputs",
            file=sys.stderr,
        )
    page = build_page(app)
    save_png(plot_scores(["warm-up"], np.ones(1), "warm-up"), io.BytesIO())  # matplotlib's start-up, not on first use

    def on_sigterm(signum, frame):  # stop as on Ctrl-C: close the page, remove the work folder
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=int(args.max_upload_mb * MB),
            allowed_paths=[],
            show_error=False,
            ssr_mode=False,
            inbrowser=False,
            share=False,
            quiet=True,
            theme=theme(),
            css=CSS,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        print(f"e2v-web: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        app.close()
        return 2
    print(
        f"e2v-web: http://{args.host}:{args.port}/ (server {args.url}, outputs in {app.output_dir}); Ctrl-C stops",
        flush=True,
    )
    try:
        page.block_thread()  # until Ctrl-C or SIGTERM
    finally:
        page.close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
