"""The page's texts as HTML: the header (the model, or why the server cannot be used), a run's outcome and notices.

Every value that comes from a file name, a server or an exception is escaped here. The element ids are what
the browser tests look for.
"""

from __future__ import annotations

import html
from pathlib import Path

from e2v_client.client import ModelInfo


def server_error_html(url: str, error: str | None) -> str:
    return (
        f'<div class="e2v-box e2v-error" id="e2v-server-error"><b>The emotion2vec server cannot be used</b> '
        f"at <code>{html.escape(url)}</code>: {html.escape(error or 'not connected')}."
        "<br>Start it (<code>make web</code> starts both, or <code>e2v-serve</code>) and press the "
        "button again.</div>"
    )


def model_html(info: ModelInfo, url: str, max_upload_mb: float, output_dir: Path) -> str:
    text = (
        f'<div class="e2v-box e2v-info" id="e2v-model">Model <b>{html.escape(info.description)}</b> at '
        f"<code>{html.escape(url)}</code> · {len(info.labels)} labels: "
        f"{html.escape(', '.join(info.labels))} · {info.frames_per_second:g} frames/s · clips longer than "
        f"{info.max_seconds:g} s are scored in windows of at most {info.max_seconds:g} s · uploads up to "
        f"{max_upload_mb:g} MB · outputs in <code>{html.escape(str(output_dir))}</code></div>"
    )
    if info.random_weights:
        text += (
            '<div class="e2v-box e2v-warning" id="e2v-random-weights"><b>Warning:</b> the server runs a '
            "random-weight test checkpoint: its predictions are meaningless.</div>"
        )
    return text


def run_message(errors: list[str], scored: int, output_dir: Path, random_weights: bool) -> str:
    """How many clips were scored and where their folders are, what was not scored and why."""
    parts = []
    if scored:
        parts.append(
            f'<div class="e2v-box e2v-ok" id="e2v-done">{scored} clip(s) scored; outputs in '
            f"<code>{html.escape(str(output_dir))}</code>.</div>"
        )
    if errors:
        items = "".join(f"<li>{html.escape(e)}</li>" for e in errors)
        parts.append(f'<div class="e2v-box e2v-error" id="e2v-errors"><b>Not scored:</b><ul>{items}</ul></div>')
    if random_weights and scored:
        parts.append(
            '<div class="e2v-box e2v-warning">Random-weight test checkpoint: these predictions are meaningless.</div>'
        )
    return "".join(parts)


def live_html(segments: int = 0, seconds: float = 0.0) -> str:
    """A live recording under way: its speech segments so far."""
    so_far = f"{segments} speech segment(s) in {seconds:.1f} s so far; " if segments else ""
    return (
        f'<div class="e2v-box e2v-info" id="e2v-live-status">Recording live: {so_far}each speech segment appears on '
        "the timeline as it ends. Stop the recording to write its outputs folder.</div>"
    )


NO_LIVE_AUDIO = "No audio came from the microphone: let the page use it, record, then stop."


def notice(text: str, elem_id: str = "e2v-notice") -> str:
    return f'<div class="e2v-box e2v-error" id="{elem_id}">{html.escape(text)}</div>'
