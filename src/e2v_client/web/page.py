"""The Gradio page: its layout, its look, and the HTML of each clip's result (at segment granularity, its timeline).

Two tabs: files and recordings, scored when the button is pressed; and live, the microphone streamed to the server
as it records (app.LiveRecording), its timeline growing segment by segment.

Only this module and cli.py know Gradio, and Gradio is imported inside the functions: the page logic (app.py)
stays testable without a browser, and a missing web extra is reported by e2v-web rather than as an ImportError.
"""

from __future__ import annotations

import html
import os
import traceback
from pathlib import Path

from e2v_client.client import GRANULARITIES
from e2v_client.outputs import SUMMARY_COLUMNS
from e2v_client.web import messages
from e2v_client.web.app import ClipResult, LiveRecording, RunResult, WebApp
from e2v_client.web.timeline import Timeline

TITLE = "emotion2vec+ speech emotion recognition"
LIVE_CHUNK_S = 0.5  # the browser sends the live microphone's audio this often
LIVE_VIEW_S = 0.5  # while recording live, the page looks for new segments this often
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
.e2v-result .e2v-bar, .e2v-result .e2v-frames, .e2v-result .e2v-timeline, .e2v-result .e2v-segment-bar
    {border: none !important;}
.e2v-timeline-caption, .e2v-segment-card {font-size: 15px; padding: 4px 2px;}
"""


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
        f'<div class="e2v-headline"><span class="e2v-emotion">{html.escape(row.emotion or row.status)}</span> '
        f'<span class="e2v-confidence">confidence <b class="e2v-confidence-value">{row.confidence:.6f}</b> '
        f"({row.confidence * 100:.1f} %)</span></div>"
        f"{folder_html(row.folder)}</div>"
    )


def folder_html(folder: str) -> str:
    if not folder:  # a live recording under way
        return '<div class="e2v-folder">Outputs folder: written when the recording stops</div>'
    return f'<div class="e2v-folder">Outputs folder: <code class="e2v-folder-path">{html.escape(folder)}</code></div>'


def summary_table(results: list[ClipResult]) -> list[list]:
    rows = []
    for result in results:
        values = {column: getattr(result.row, column) for column in SUMMARY_COLUMNS}
        values["folder"] = Path(values["folder"]).name if values["folder"] else ""
        rows.append([values[column] for column in SUMMARY_COLUMNS])
    return rows


def run_outputs(app: WebApp, run: RunResult):
    """What the page shows of a run (or of a live recording so far): the header, the message, the clips' results
    (a list of dicts, which the page's gr.render draws), the summary table and the summary CSV."""
    import gradio as gr

    results = [
        dict(
            name=r.name,
            ok=r.ok,
            card=clip_card(r),
            bar=r.bar_png,
            frames=r.frame_png,
            timeline=Timeline.of(r),
            zip=r.zip_path,
        )
        for r in run.results
    ]
    table = summary_table(run.results) if run.summary_path else []
    return (
        app.header_html(),
        run.message,
        results,
        gr.update(value=table, visible=bool(table)),
        gr.update(value=str(run.summary_path) if run.summary_path else None, visible=run.summary_path is not None),
    )


def guarded(work) -> RunResult | None:
    """work()'s RunResult, or a bug said on the page (the traceback goes to the terminal): the page keeps working."""
    try:
        return work()
    except Exception as exc:
        traceback.print_exc()
        return RunResult(
            messages.notice(
                f"Internal error: {type(exc).__name__}: {exc}. The details are in the terminal that runs e2v-web."
            )
        )


def timeline_view(timeline: Timeline) -> None:
    """Inside the page's gr.render: the timeline picture, the segment table and the segment picked in it (the first
    until a row is picked), its headline and bar chart."""
    import gradio as gr

    image = dict(type="filepath", show_label=False, format="png", interactive=False, buttons=["download", "fullscreen"])
    gr.HTML(timeline.caption())
    gr.Image(timeline.png, **image, elem_classes=["e2v-timeline"])
    headline, chart = timeline.picked(0)
    with gr.Row(equal_height=False):
        table = gr.Dataframe(
            value=timeline.rows(),
            headers=timeline.columns(),
            label="Speech segments",
            interactive=False,
            wrap=False,
            max_height=420,
            scale=1,
            elem_classes=["e2v-segments"],
        )
        with gr.Column(scale=1, min_width=300):
            picked = gr.HTML(headline, elem_classes=["e2v-segment"])
            bar = gr.Image(chart, **image, elem_classes=["e2v-segment-bar"])

    def pick(event):  # the row's "#" is the segment's number, whatever the table's sort order
        return timeline.picked(int(event.row_value[0]) - 1)

    # Gradio hands the selection to the parameter annotated gr.SelectData; this module's annotations are strings
    # (from __future__ import annotations) that cannot name gradio, imported in the function: so given as a type.
    pick.__annotations__["event"] = gr.SelectData
    table.select(pick, outputs=[picked, bar])


def theme():
    import gradio as gr

    # System fonts: the default theme's web fonts need the internet.
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def build_page(app: WebApp):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_load():
        app.refresh_info()
        return app.header_html()

    # B008: Gradio injects the progress tracker only into a parameter whose default is gr.Progress().
    def on_run(files, recording, granularity, embedding, progress=gr.Progress()):  # noqa: B008
        return run_outputs(app, guarded(lambda: app.run(files, recording, granularity, embedding, progress)))

    with gr.Blocks(title=TITLE, delete_cache=(3600, 24 * 3600)) as page:
        gr.Markdown(f"# {TITLE}")
        header = gr.HTML(app.header_html(), elem_id="e2v-header")
        with gr.Row():
            with gr.Column(scale=1, min_width=300), gr.Tabs():
                with gr.Tab("Files and recordings", elem_id="e2v-tab-files"):
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
                        info="utterance: one answer per clip; frame: also scores per frame over time; "
                        "segment: an answer per speech segment, on a timeline",
                        elem_id="e2v-granularity",
                    )
                    embedding = gr.Checkbox(
                        label="Extract embedding (embedding.npy)", value=False, elem_id="e2v-embedding"
                    )
                    button = gr.Button("Recognise emotion", variant="primary", elem_id="e2v-run")
                with gr.Tab("Live", elem_id="e2v-tab-live"):
                    live_mic = gr.Audio(
                        sources=["microphone"],
                        type="numpy",
                        streaming=True,
                        label="Live from the microphone",
                        elem_id="e2v-live-mic",
                    )
                    gr.Markdown(
                        "Record: each speech segment's emotion appears on the timeline as the segment ends. Stop: the "
                        "recording is written as an outputs folder at segment granularity.",
                        elem_id="e2v-live-hint",
                    )
                    # per browser session; a page closed while recording gives its recording up
                    live = gr.State(None, delete_callback=lambda live: live and live.abandon())
                    live_timer = gr.Timer(LIVE_VIEW_S, active=False)
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
                                    if item["zip"]:  # not while a live recording is under way
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
                            if item["timeline"]:
                                timeline_view(item["timeline"])

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
        shown = [header, message, results, table, summary_file]
        button.click(on_run, inputs=[files, recording, granularity, embedding], outputs=shown, concurrency_limit=1)
        live_events(app, live_mic, live, live_timer, shown)
    return page


def live_events(app: WebApp, mic, live, timer, shown: list) -> None:
    """The live tab's events. The chunks only feed the stream: Gradio keeps only the newest chunk while their handler
    runs, so it must be quick. The timer, running while recording, shows the segments as they arrive; stopping
    writes the outputs folder. A live recording per browser session (the `live` State), several side by side."""
    import gradio as gr

    def on_start():
        return gr.Timer(active=True), *run_outputs(app, RunResult(messages.live_html()))

    def on_chunk(chunk, recording: LiveRecording | None):
        try:
            if recording is None or recording.stopped:  # made with the first chunk of each recording
                recording = LiveRecording(app)
            recording.push(chunk)
        except Exception:  # a bug: the stream must go on (the timer's view says if the recording fails)
            traceback.print_exc()
        return recording

    def on_tick(recording: LiveRecording | None):
        view = guarded(recording.view) if recording is not None else None
        return run_outputs(app, view) if view is not None else (gr.skip(),) * len(shown)

    def on_stop(recording: LiveRecording | None):
        run = guarded(recording.stop) if recording is not None else RunResult(messages.notice(messages.NO_LIVE_AUDIO))
        return None, gr.Timer(active=False), *run_outputs(app, run)

    mic.start_recording(on_start, outputs=[timer, *shown], show_progress="hidden")
    mic.stream(
        on_chunk,
        inputs=[mic, live],
        outputs=live,
        stream_every=LIVE_CHUNK_S,
        concurrency_limit=None,
        show_progress="hidden",
    )
    timer.tick(on_tick, inputs=live, outputs=shown, concurrency_limit=None, show_progress="hidden")
    mic.stop_recording(on_stop, inputs=live, outputs=[live, timer, *shown], concurrency_limit=None)
