"""e2v-web: a local web page for emotion2vec+ on a Triton server, like the emotion2vec+ desktop tool.

Upload one or more audio files (or record from the microphone), pick the granularity, tick "extract
embedding" and press the button: each clip gets its emotion and confidence, a bar chart of the scores,
for frame granularity a plot of the per-frame scores over time, for segment granularity the timeline of its
speech segments with their table and the scores of the segment picked in it, and an outputs folder written
exactly as e2v-client writes it (with a zip download of it). Several clips also get a summary table, written as
summary_YYYYMMDD_HHMMSS.csv in the output root as e2v-client does. The Live tab streams the microphone to the
server as it records (as e2v-client --stream does): the timeline grows segment by segment, and when the recording
stops it gets its outputs folder at segment granularity.

The page uses e2v-client's library, so the two give the same answer; labels, frame rate and maximum
duration come from the server's model metadata. Modules: cli (flags, start-up), page (Gradio layout, HTML),
app (the page's logic, no Gradio; a live recording's too), messages (the page's texts), blocking_client (the
asyncio client for Gradio's threads), files (what the page may read, zip and keep), plots (matplotlib figures),
timeline (the segment table and the picked segment).
"""

from e2v_client.web.cli import main

__all__ = ["main"]
