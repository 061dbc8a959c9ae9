"""The page's pictures: a bar chart of a clip's scores, at frame granularity its scores over time, and at segment
granularity the timeline of its speech segments.

matplotlib Figure objects with the Agg canvas, never pyplot: pyplot keeps global state that the page's worker
threads would share. matplotlib is imported inside the functions so that the rest of the page imports
without it (e2v-web's main says which extra to install when it is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from e2v_client.client import Prediction, Segment

# Colours per label, the same in the bar chart, the frame plot and its dominant-label band, and the timeline.
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
    legend_beside(ax, colours, labels, range(len(labels)), "label", 11)
    return fig


def plot_timeline(labels: list[str], segments: list[Segment], seconds: float, title: str):
    """The speech segments over the recording's time: a bar per segment in its emotion's colour, filled as opaque as
    the segment is confident, its emotion and confidence written on it where there is room; a lane per channel
    when the segments carry one."""
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    colours = label_colours(labels)
    lanes = sorted({segment.channel for segment in segments}, key=lambda channel: -1 if channel is None else channel)
    end = max([seconds, *(segment.end for segment in segments)])
    fig = Figure(figsize=(10, 1.9 + 0.45 * len(lanes)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for segment in segments:
        top = int(np.argmax(segment.scores))
        confidence = float(segment.scores[top])
        lane = lanes.index(segment.channel)
        ax.barh(
            lane,
            segment.seconds,
            left=segment.start,
            height=0.7,
            color=to_rgba(colours[top], 0.1 + 0.9 * confidence),
            edgecolor=colours[top],
            linewidth=1.2,
        )
        if segment.seconds > 0.0075 * end * len(labels[top]):  # about the width of the emotion's name at 9 points
            text = f"{labels[top]}\n{confidence * 100:.0f} %"
            ax.text(segment.start + segment.seconds / 2, lane, text, ha="center", va="center", fontsize=9)
    ax.set_xlim(0, end)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_yticks(range(len(lanes)), ["speech" if lane is None else f"channel {lane}" for lane in lanes], fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("time (s)  ·  colour: emotion, opacity: confidence", fontsize=11)
    ax.set_title(title, fontsize=12, loc="left")
    shown = sorted({int(np.argmax(segment.scores)) for segment in segments})
    legend_beside(ax, colours, labels, shown, "emotion", 10)
    return fig


def legend_beside(ax, colours: list[str], labels: list[str], shown, title: str, fontsize: int) -> None:
    """A legend of these labels' colours to the right of the plot."""
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[i], label=labels[i]) for i in shown]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=fontsize,
              title=title, title_fontsize=fontsize)  # fmt: skip


def save_png(fig, path):
    fig.savefig(path, format="png")
    return path


class PlotFiles(NamedTuple):
    scores: str  # the bar chart
    frames: str | None  # frame granularity: the scores over time
    timeline: str | None  # segment granularity, when there is speech: the segments over time


def save_plots(
    prediction: Prediction, name: str, granularity: str, frames_per_second: float, stem: Path, seconds: float = 0.0
) -> PlotFiles:
    """The bar chart (stem_scores.png); when there are frame scores, the frame plot (stem_frames.png); when there are
    speech segments, the timeline of the recording's `seconds` (stem_timeline.png)."""
    kinds = {"utterance": "utterance scores", "segment": "speech segments' scores, weighted by duration"}
    kind = kinds.get(granularity, "utterance scores (whole clip)")
    bar = plot_scores(prediction.labels, prediction.scores, f"{name}: {kind}")
    bar_png = str(save_png(bar, stem.with_name(f"{stem.name}_scores.png")))
    frame_png = timeline_png = None
    if prediction.frame_scores is not None and len(prediction.frame_scores):
        frames = plot_frames(prediction.labels, prediction.frame_scores, frames_per_second, f"{name}: scores per frame")
        frame_png = str(save_png(frames, stem.with_name(f"{stem.name}_frames.png")))
    if prediction.segments:
        title = f"{name}: {len(prediction.segments)} speech segments"
        timeline = plot_timeline(prediction.labels, prediction.segments, seconds, title)
        timeline_png = str(save_png(timeline, stem.with_name(f"{stem.name}_timeline.png")))
    return PlotFiles(bar_png, frame_png, timeline_png)
