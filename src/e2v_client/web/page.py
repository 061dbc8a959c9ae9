"""The Gradio page: its layout, its look, and the HTML of each clip's result (at segment granularity, its timeline).

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
from e2v_client.web.app import ClipResult, RunResult, WebApp
from e2v_client.web.timeline import Timeline

TITLE = "emotion2vec+ speech emotion recognition"
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
        try:
            run = app.run(files, recording, granularity, embedding, progress)
        except Exception as exc:  # a bug: say so on the page (the traceback goes to the terminal), keep working
            traceback.print_exc()
            run = RunResult(
                messages.notice(
                    f"Internal error: {type(exc).__name__}: {exc}. The details are in the terminal that runs e2v-web."
                )
            )
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
                    info="utterance: one answer per clip; frame: also scores per frame over time; "
                    "segment: an answer per speech segment, on a timeline",
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
        button.click(
            on_run,
            inputs=[files, recording, granularity, embedding],
            outputs=[header, message, results, table, summary_file],
            concurrency_limit=1,
        )
    return page
