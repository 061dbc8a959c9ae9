"""The timeline of a clip scored at segment granularity, as the page shows it, without Gradio: a caption, the table of
its speech segments, and the segment the user picks in that table (its headline and its scores' bar chart).

The numbers are the client's Prediction's, rounded as result.json rounds them; the timeline picture is drawn with
the clip's other plots (plots.save_plots), a picked segment's bar chart (plots.plot_scores) when it is picked. The
picked segment's scores are also in its headline's data-scores attribute (JSON, label: score), which the browser
tests read.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2v_client.client import Prediction
from e2v_client.web.app import ClipResult
from e2v_client.web.plots import plot_scores, save_png

COLUMNS = ["#", "start (s)", "end (s)", "emotion", "confidence"]


@dataclass
class Timeline:
    """What the page keeps of a clip with speech segments: its answer, its length, its pictures' place."""

    name: str
    prediction: Prediction  # at segment granularity, with its segments
    seconds: float
    png: str  # the timeline picture
    plot_stem: Path  # a picked segment's bar chart is written beside the clip's other plots

    @classmethod
    def of(cls, result: ClipResult) -> Timeline | None:
        """The clip's timeline; None unless it was scored at segment granularity, had speech and was drawn."""
        if result.timeline_png is None or result.prediction is None or result.plot_stem is None:
            return None
        return cls(result.name, result.prediction, float(result.row.duration), result.timeline_png, result.plot_stem)

    @property
    def has_channels(self) -> bool:
        return any(segment.channel is not None for segment in self.prediction.segments)

    def caption(self) -> str:
        """How many speech segments, how much speech, and how to see a segment's scores."""
        count = len(self.prediction.segments)
        speech = sum(segment.seconds for segment in self.prediction.segments)
        return (
            f'<div class="e2v-timeline-caption" data-segments="{count}">{count} speech segment(s), {speech:.1f} s '
            f"of speech in {self.seconds:.1f} s · pick a row of the table to see that segment's scores</div>"
        )

    def columns(self) -> list[str]:
        return COLUMNS + (["channel"] if self.has_channels else [])

    def rows(self) -> list[list]:
        """The segment table: number, start, end, emotion, confidence (and channel when the segments carry one)."""
        return [
            [
                number,
                round(segment.start, 3),
                round(segment.end, 3),
                self.prediction.label_of(segment.scores),
                round(float(np.max(segment.scores)), 6),
            ]
            + ([segment.channel] if self.has_channels else [])
            for number, segment in enumerate(self.prediction.segments, 1)
        ]

    def picked(self, index: int) -> tuple[str, str]:
        """Segment `index` (0-based): its headline (HTML) and its scores' bar chart (plot_stem_segment_N.png)."""
        segment = self.prediction.segments[index]
        number, count = index + 1, len(self.prediction.segments)
        emotion = self.prediction.label_of(segment.scores)
        confidence = float(np.max(segment.scores))
        scores = {label: round(float(v), 6) for label, v in zip(self.prediction.labels, segment.scores, strict=True)}
        span = f"{segment.start:.2f}-{segment.end:.2f} s"
        headline = (
            f'<div class="e2v-segment-card" data-index="{index}" data-start="{segment.start:.3f}" '
            f'data-end="{segment.end:.3f}" data-scores="{html.escape(json.dumps(scores))}">'
            f"Segment <b>{number}</b> of {count} · {span} · <b>{html.escape(emotion)}</b> "
            f"({confidence * 100:.1f} %)</div>"
        )
        chart = plot_scores(self.prediction.labels, segment.scores, f"{self.name}: segment {number} of {count}, {span}")
        self.plot_stem.parent.mkdir(parents=True, exist_ok=True)  # the run's folder may have made room for newer ones
        png = save_png(chart, self.plot_stem.with_name(f"{self.plot_stem.name}_segment_{number}.png"))
        return headline, str(png)
