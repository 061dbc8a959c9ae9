"""The emotion timeline at scale: e2v-client at segment granularity on long recordings, against the utterance
path over the same speech and the detector alone (scripts/timeline_bench.py prints and records them).

The client always runs in a process of its own, as a user runs it, so that its peak memory is its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2v_common.contract import SAMPLE_RATE

# e2v-client's own main, then its peak resident memory (the kernel's high-water mark) written to the file named
# by the first argument
MEASURED_CLIENT = (
    "import sys\nfrom pathlib import Path\nfrom e2v_bench.memory import peak_rss_mb\nfrom e2v_client.cli import main\n"
    "peak_file = Path(sys.argv.pop(1))\ncode = main(sys.argv[1:])\npeak_file.write_text(str(peak_rss_mb()))\n"
    "sys.exit(code)"
)


@dataclass
class ClientRun:
    returncode: int
    wall_s: float
    peak_mb: float  # nan if the client did not finish
    stdout: str
    stderr: str


def run_client(url: str, *args, quiet: bool = True, timeout: float | None = None) -> ClientRun:
    """e2v-client in its own process (its progress bar on this terminal unless quiet)."""
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak_mb"
        command = [sys.executable, "-c", MEASURED_CLIENT, peak_file, "--url", url, *(["--quiet"] if quiet else [])]
        start = time.monotonic()
        done = subprocess.run([*map(str, command), *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if quiet else None, text=True, timeout=timeout)  # fmt: skip
        peak = float(peak_file.read_text()) if peak_file.exists() else float("nan")
    return ClientRun(done.returncode, time.monotonic() - start, peak, done.stdout, done.stderr or "")


def segment_samples(folder: Path) -> list[np.ndarray]:
    """The samples of each segment of an outputs folder, cut from its processed_audio.wav (mono timelines)."""
    import soundfile

    from e2v_client.outputs import AUDIO_FILE, RESULT_FILE

    result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    with soundfile.SoundFile(folder / AUDIO_FILE) as wav:
        cuts = []
        for segment in result["segments"]:
            start, end = round(segment["start"] * SAMPLE_RATE), round(segment["end"] * SAMPLE_RATE)
            wav.seek(start)
            cuts.append(wav.read(end - start, dtype="float32"))
    return cuts


def utterance_path(url: str, cuts: list[np.ndarray], concurrency: int) -> float:
    """Seconds to score these clips as utterances through the ensemble, `concurrency` in flight (the client
    library, as e2v-client sends them)."""
    from e2v_client.client import Emotion2vecClient

    async def score_all() -> float:
        async with Emotion2vecClient(url) as client:
            await client.connect()
            limit = asyncio.Semaphore(concurrency)

            async def one(samples: np.ndarray) -> None:
                async with limit:
                    await client.score(samples)

            start = time.monotonic()
            await asyncio.gather(*(one(cut) for cut in cuts))
            return time.monotonic() - start

    return asyncio.run(score_all())


def detector_speed(repository: Path, samples: np.ndarray) -> float:
    """Audio seconds per second of the segmenter with the repository's Silero VAD file, one thread."""
    from e2v_common import contract, runtimes, segmenter

    session = runtimes.open_model(repository / contract.SEGMENTS_MODEL / "1" / contract.VAD_FILE, "onnxruntime",
                                  "fp32", threads=1)  # fmt: skip
    cutter = segmenter.Segmenter(segmenter.SileroVad(session.run), segmenter.SegmentOptions())
    start = time.monotonic()
    cutter.feed(samples)
    cutter.flush()
    return len(samples) / SAMPLE_RATE / (time.monotonic() - start)


@dataclass
class ResumeCheck:
    files: int
    done_at_kill: int  # outputs folders complete when the client was killed
    resumed_s: float
    folders: int  # after --resume
    duplicated: list[str]
    missing: list[str]
    failed: int  # the resumed run's exit code
    partial_left: int  # half-written folders left behind after --resume (the killed run's are removed)


def kill_and_resume(url: str, inputs: list[Path], out: Path, kill_after: float, concurrency: int) -> ResumeCheck:
    """A batch at segment granularity killed (SIGKILL) after kill_after seconds, then run again with --resume:
    every input must end with exactly one outputs folder."""
    from e2v_client.outputs import FOLDER_PREFIX, PARTIAL_PREFIX, RESULT_FILE

    args = ["--quiet", "--granularity", "segment", "--output-dir", out, "--concurrency", concurrency]
    command = [sys.executable, "-m", "e2v_client.cli", "--url", url, *map(str, args), *map(str, inputs)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first.wait(kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done_at_kill = len(list(out.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}")))
    resumed = run_client(url, *inputs, "--granularity", "segment", "--output-dir", out, "--resume",
                         "--concurrency", concurrency)  # fmt: skip
    sources = [json.loads(p.read_text("utf-8"))["source_file"] for p in out.glob(f"{FOLDER_PREFIX}*/{RESULT_FILE}")]
    wanted = {str(path.resolve()) for path in inputs}
    return ResumeCheck(
        files=len(inputs),
        done_at_kill=done_at_kill,
        resumed_s=resumed.wall_s,
        folders=len(sources),
        duplicated=sorted({s for s in sources if sources.count(s) > 1}),
        missing=sorted(wanted - set(sources)),
        failed=resumed.returncode,
        partial_left=len(list(out.glob(f"{PARTIAL_PREFIX}*"))),
    )
