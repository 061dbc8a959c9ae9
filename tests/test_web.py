"""e2v-web in a real headless browser (Debian's chromium, driven by Playwright) against a real Triton server.

The page runs as `python -m e2v_client.web` in a subprocess, as a user starts it. Playwright's own browser
downloads are never used: the tests launch /usr/bin/chromium (apt-get install chromium) and skip, saying
so, only when it is not installed.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from audio_files import bad_files, good_files
from e2v_client import audio
from e2v_client.client import Emotion2vecClient
from e2v_client.outputs import AUDIO_FILE, EMBEDDING_FILE, FOLDER_PREFIX, RESULT_FILE
from e2v_common.synthetic_speech import speech_like
from e2v_server.serve import free_port
from test_client import check_folder_against_spec
from test_client import run_client as run_e2v_client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY_DIM = 64
TIMEOUT_MS = 60_000


@dataclass
class WebPage:
    url: str
    output_dir: Path
    log: Path


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: the browser tests need Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def web(tiny_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    port = free_port()
    log = root / "e2v-web.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "e2v_client.web",
                "--url",
                tiny_server.grpc_url,
                "--port",
                str(port),
                "--output-dir",
                str(root / "outputs"),
                "--max-upload-mb",
                "5",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_TEMP_DIR": str(root / "uploads")},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"e2v-web exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"e2v-web did not answer within 60 s:\n{log.read_text()}"
            time.sleep(0.2)
        yield WebPage(url, root / "outputs", log)
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("web_inputs")
    return good_files(root / "good"), bad_files(root / "bad")


def open_page(browser, web: WebPage, **context):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}, **context).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(web.url)
    page.wait_for_selector("#e2v-model")  # the model's identity, read from the server
    return page


def upload(page, *paths: Path) -> None:
    files = page.locator("#e2v-files")
    clear = files.get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()
    files.locator("input[type=file]").set_input_files([str(p) for p in paths])
    for path in paths:
        files.get_by_text(path.stem).first.wait_for()


def press(page, granularity: str = "utterance", embedding: bool = False) -> None:
    page.locator("#e2v-granularity").get_by_label(granularity, exact=True).check()
    box = page.locator("#e2v-embedding").get_by_role("checkbox")
    box.check() if embedding else box.uncheck()
    page.click("#e2v-run")


CARDS_JS = """cards => cards.map(card => {
    const text = sel => { const e = card.querySelector(sel); return e ? e.innerText.trim() : null; };
    return {text: card.innerText, name: text('.e2v-name'), ok: card.classList.contains('e2v-scored'),
            emotion: text('.e2v-emotion'), confidence: text('.e2v-confidence-value'), folder: text('.e2v-folder-path')};
})"""


def wait_for_cards(page, names: list[str], seen: set[str] = frozenset()) -> dict[str, dict]:
    """The cards of this run, by clip name: {'text', 'ok', 'emotion', 'confidence', 'folder'}.

    All cards are read in one JavaScript call, so a page that re-renders meanwhile cannot mix two states."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        cards = {}
        for entry in page.eval_on_selector_all(".e2v-card", CARDS_JS):
            name = (entry.pop("name") or "").split(" · ")[0].strip()
            if not entry["ok"]:
                entry = {"text": entry["text"], "ok": False}
            cards[name] = entry
        fresh = all(n in cards and cards[n].get("folder") not in seen for n in names)
        if fresh and set(cards) == set(names):
            return cards
        time.sleep(0.2)
    raise AssertionError(f"no result for {names} on the page; it shows:\n{page.locator('body').inner_text()}")


def summary(root: Path) -> list[dict]:
    with open(sorted(root.glob("summary_*.csv"))[-1], newline="") as f:
        return list(csv.DictReader(f))


def check_card_against_folder(card: dict, output_dir: Path, granularity: str, embedding: bool) -> dict:
    assert card["ok"], card["text"]
    folder = Path(card["folder"])
    assert folder.parent == output_dir.resolve() and folder.name.startswith(FOLDER_PREFIX)
    _, result = check_folder_against_spec(folder, granularity, embedding, TINY_DIM)
    assert card["emotion"] == result["emotion"]
    assert float(card["confidence"]) == result["confidence"]
    assert re.search(r"\(\d+\.\d %\)", card["text"])  # and as a percentage
    return result


def test_upload_two_clips_at_frame_granularity(browser, web, clips, tiny_server):
    good, _ = clips
    files = [good["wav16k"], good["m4a"]]
    page = open_page(browser, web, accept_downloads=True)
    assert "random-weight" in page.locator("#e2v-random-weights").inner_text()
    upload(page, *files)
    press(page, "frame", embedding=True)
    cards = wait_for_cards(page, [f.name for f in files])

    for path in files:
        result = check_card_against_folder(cards[path.name], web.output_dir, "frame", True)
        assert result["source_file"] == path.name and result["frames_per_second"] == 50.0

    # the same decoding and scoring as e2v-client: the server's answer for audio.load(file), exactly
    async def direct():
        async with Emotion2vecClient(tiny_server.grpc_url) as client:
            return await client.score(audio.load(good["wav16k"]).samples, "utterance")

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        prediction = thread.submit(asyncio.run, direct()).result()
    result = json.loads((Path(cards[good["wav16k"].name]["folder"]) / RESULT_FILE).read_text())
    assert result["utterance_scores"] == {
        k: round(float(v), 6) for k, v in zip(prediction.labels, prediction.scores, strict=True)
    }

    # a bar chart per clip and, at frame granularity, the plot over time
    assert page.locator(".e2v-bar img").count() == 2 and page.locator(".e2v-frames img").count() == 2
    assert page.locator(".e2v-timeline").count() == 0  # the timeline is segment granularity's
    for image in page.locator(".e2v-bar img, .e2v-frames img").all():
        assert image.evaluate("img => img.complete && img.naturalWidth > 300")
    # the summary table and its CSV
    table = page.locator("#e2v-summary").inner_text()
    assert all(f.name in table for f in files) and table.count("scored") == 2
    rows = summary(web.output_dir)
    assert {r["source_file"] for r in rows} == {f.name for f in files} and {r["status"] for r in rows} == {"scored"}
    # the zip download of an outputs folder
    folder = Path(cards[good["m4a"].name]["folder"])
    card_group = page.locator(".e2v-result").filter(has_text=good["m4a"].name)
    with page.expect_download() as download:
        card_group.locator(".e2v-zip a").first.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        assert sorted(archive.namelist()) == sorted(
            f"{folder.name}/{n}" for n in (AUDIO_FILE, EMBEDDING_FILE, RESULT_FILE)
        )
        assert json.loads(archive.read(f"{folder.name}/{RESULT_FILE}")) == json.loads(
            (folder / RESULT_FILE).read_text()
        )


def test_a_text_file_named_wav_is_an_error_and_the_next_clip_still_scores(browser, web, clips):
    good, bad = clips
    page = open_page(browser, web)
    before = set(web.output_dir.glob(f"{FOLDER_PREFIX}*")) if web.output_dir.exists() else set()
    upload(page, bad["text_as_wav"])
    press(page)
    cards = wait_for_cards(page, [bad["text_as_wav"].name])
    assert not cards["notes.wav"]["ok"] and "cannot decode notes.wav as audio" in cards["notes.wav"]["text"]
    assert "cannot decode notes.wav" in page.locator("#e2v-errors").inner_text()
    assert "Traceback" not in page.locator("body").inner_text()
    assert set(web.output_dir.glob(f"{FOLDER_PREFIX}*")) == before  # no folder for it
    assert summary(web.output_dir)[0]["status"] == "failed"

    upload(page, good["wav16k"])
    press(page)
    cards = wait_for_cards(page, [good["wav16k"].name], seen={str(p) for p in before})
    check_card_against_folder(cards[good["wav16k"].name], web.output_dir, "utterance", False)
    assert page.locator("#e2v-errors").count() == 0


def test_an_upload_over_the_size_limit_is_refused_with_a_message(browser, web, tmp_path):
    big = tmp_path / "long_meeting.wav"  # 6.1 MB, over the page's --max-upload-mb 5
    sf.write(big, np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 200).astype(np.float32), 16000, subtype="PCM_16")
    page = open_page(browser, web)
    page.locator("#e2v-files input[type=file]").set_input_files([str(big)])
    page.get_by_text(re.compile("exceed the maximum allowed size")).first.wait_for()
    assert "long_meeting.wav" in page.locator("body").inner_text()
    press(page)
    page.wait_for_selector("#e2v-notice")
    assert "No audio to score" in page.locator("#e2v-notice").inner_text()
    assert "up to 5 MB" in page.locator("#e2v-notice").inner_text()


def test_microphone_recording_scores(playwright, web, tmp_path):
    # Chromium's fake capture device plays a wav file as the microphone.
    capture = tmp_path / "voice.wav"
    sf.write(capture, speech_like(3.0, 21, 48000), 48000, subtype="PCM_16")
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS
        + [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={capture}",
        ],
    )
    try:
        page = open_page(browser, web, permissions=["microphone"])
        mic = page.locator("#e2v-mic")
        mic.get_by_role("button", name="Record").click()
        mic.get_by_role("button", name="Stop").wait_for()
        time.sleep(1.5)
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok):  # the recording is sent
            mic.get_by_role("button", name="Stop").click()
        time.sleep(0.3)
        press(page)
        cards = wait_for_cards(page, ["microphone recording"])
        result = check_card_against_folder(cards["microphone recording"], web.output_dir, "utterance", False)
        assert result["source_file"] == "microphone recording" and 0.5 < result["duration"] < 10
    finally:
        browser.close()


def fake_microphone(playwright, capture: Path):
    """Chromium whose microphone plays `capture` (a wav file, looped) without asking."""
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS + args + [f"--use-file-for-fake-audio-capture={capture}"],
    )


def test_live_recording_grows_its_timeline_while_recording_and_writes_the_segment_folder(playwright, web, tmp_path):
    from e2v_client.web.app import LIVE

    # The fake microphone loops 4 x (1 s of silence, 2 s of speech-like sound): wherever the loop is when the
    # recording starts, a speech segment ends every 3 s
    capture = tmp_path / "bursts.wav"
    silence = np.zeros(48000, np.float32)
    sf.write(capture, np.concatenate([np.concatenate([silence, speech_like(2.0, 31 + i, 48000)]) for i in range(4)]),
             48000, subtype="PCM_16")  # fmt: skip
    browser = fake_microphone(playwright, capture)
    try:
        page = open_page(browser, web, permissions=["microphone"])
        page.get_by_role("tab", name="Live").click()
        mic = page.locator("#e2v-live-mic")
        mic.get_by_role("button", name="Record").click()
        stop = mic.get_by_role("button", name="Stop")
        stop.wait_for()
        started = time.monotonic()
        page.wait_for_selector("#e2v-live-status")
        rows = page.locator(".e2v-segments [role=grid] [role=row][data-index]")
        rows.first.wait_for(timeout=20_000)
        print(f"first segment on the page {time.monotonic() - started:.1f} s after the recording started")
        assert stop.is_visible() and page.locator(".e2v-folder-path").count() == 0  # still recording
        time.sleep(1.0)
        stop.click()
        cards = wait_for_cards(page, [LIVE], seen={None})  # the card with its folder, not the one while recording
        result = check_card_against_folder(cards[LIVE], web.output_dir, "segment", False)
        segments = len(result["segments"])
        assert result["source_file"] == LIVE and segments >= 1
        assert page.locator(".e2v-timeline-caption").get_attribute("data-segments") == str(segments)
        rows = page.locator(".e2v-segments [role=grid]").evaluate(SEGMENT_ROWS_JS)
        assert [[int(r[0]), float(r[1]), float(r[2]), r[3], float(r[4])] for r in rows] == [
            [n, s["start"], s["end"], s["emotion"], s["confidence"]] for n, s in enumerate(result["segments"], 1)
        ]
    finally:
        browser.close()


def test_page_logic_refuses_bad_inputs_and_reports_a_server_that_is_down(tiny_server, clips, tmp_path):
    from e2v_client.web.app import WebApp
    from e2v_client.web.files import zip_folder

    good, bad = clips
    uploads, out = tmp_path / "uploads", tmp_path / "outputs"
    uploads.mkdir()
    for path in [good["wav16k"], bad["empty"], bad["silence"]]:
        shutil.copy(path, uploads / path.name)
    big = uploads / "big.wav"
    sf.write(big, np.tile(speech_like(3.0, 9), 12), 16000, subtype="PCM_16")  # 1.1 MB
    app = WebApp(tiny_server.grpc_url, out, uploads, tmp_path / "work", max_upload_mb=1, retries=0)
    try:
        run = app.run(
            [str(uploads / n) for n in ("speech_16k.wav", "empty.wav", "silence.wav", "big.wav")]
            + [str(good["flac22k"])],
            None,
            "utterance",
            False,
        )
        rows = {r.name: r.row for r in run.results}
        assert rows["speech_16k.wav"].status == "scored"
        assert "empty" in rows["empty.wav"].error and "silent" in rows["silence.wav"].error
        assert "the limit is 1 MB" in rows["big.wav"].error
        assert "not an uploaded file" in rows[good["flac22k"].name].error  # outside the upload area: never read
        assert len(list(out.glob(f"{FOLDER_PREFIX}*"))) == 1 and run.summary_path.exists()
        with pytest.raises(ValueError):
            zip_folder(tmp_path / "work", out, tmp_path)  # zips only outputs folders inside the output root
        nothing = app.run([], None, "frame", False)
        assert "No audio to score" in nothing.message and not nothing.results
    finally:
        app.close()

    down = WebApp(f"127.0.0.1:{free_port()}", out, uploads, tmp_path / "work", retries=0)
    try:
        run = down.run([str(uploads / "speech_16k.wav")], None, "utterance", False)
        assert "Cannot reach the emotion2vec server" in run.message and not run.results
        assert "cannot be used" in down.header_html()
    finally:
        down.close()


def test_page_logic_scores_segments_and_says_when_there_is_no_speech(tiny_server, clips, tmp_path):
    """The page at segment granularity: a clip's speech segments scored (its bar chart the duration-weighted
    scores); a silent clip is 'no speech', not an error."""
    from e2v_client.web.app import WebApp
    from e2v_client.web.page import clip_card

    good, bad = clips
    uploads, out = tmp_path / "uploads", tmp_path / "outputs"
    uploads.mkdir()
    for path in [Path(__file__).resolve().parents[1] / "examples" / "good_news.ogg", bad["silence"]]:
        shutil.copy(path, uploads / path.name)
    app = WebApp(tiny_server.grpc_url, out, uploads, tmp_path / "work", retries=0)
    try:
        run = app.run([str(uploads / "good_news.ogg"), str(uploads / bad["silence"].name)], None, "segment", False)
    finally:
        app.close()
    speech, silence = run.results
    assert speech.ok and speech.row.status == "scored" and Path(speech.bar_png).exists()
    result = json.loads((Path(speech.row.folder) / RESULT_FILE).read_text("utf-8"))
    assert result["granularity"] == "segment" and len(result["segments"]) >= 1
    assert silence.ok and silence.row.status == "no speech" and "no speech" in clip_card(silence)
    assert Path(speech.timeline_png).exists() and silence.timeline_png is None  # no timeline without speech


@pytest.fixture(scope="module")
def call_recording(tmp_path_factory) -> Path:
    """The three example clips (espeak-ng speech) between silences of 1-2 s: a recording with speech and pauses."""
    examples = sorted(p for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.*") if p.suffix != ".md")
    speech = [audio.load(p).samples for p in examples]
    silences = [np.zeros(int(seconds * 16000), np.float32) for seconds in (1.0, 1.5, 2.0, 1.0)]
    parts = [silences[0], speech[0], silences[1], speech[1], silences[2], speech[2], silences[3]]
    path = tmp_path_factory.mktemp("web_timeline") / "call.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


SEGMENT_ROWS_JS = """grid => [...grid.querySelectorAll('[role=row][data-index]')].map(
    row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))"""  # Gradio 6's table


def test_segment_granularity_shows_a_timeline_its_table_and_the_scores_of_the_segment_picked(
    browser, web, clips, tiny_server, call_recording
):
    _, bad = clips
    page = open_page(browser, web)
    upload(page, call_recording, bad["silence"])
    press(page, "segment")
    cards = wait_for_cards(page, [call_recording.name, bad["silence"].name])

    # the client library's answer for the same file: the reference for everything the page shows
    async def direct():
        async with Emotion2vecClient(tiny_server.grpc_url) as client:
            return await client.score(audio.load(call_recording).samples, "segment")

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        prediction = thread.submit(asyncio.run, direct()).result()
    segments = prediction.segments
    assert len(segments) >= 3  # at least one a clip

    folder = Path(cards[call_recording.name]["folder"])
    result = json.loads((folder / RESULT_FILE).read_text("utf-8"))
    assert result["granularity"] == "segment" and len(result["segments"]) == len(segments)
    assert cards[bad["silence"].name]["emotion"] == "no speech"  # as before: a status, no timeline

    # one timeline, the recording's, with its segments
    assert page.locator(".e2v-timeline img").count() == 1 and page.locator(".e2v-segments").count() == 1
    assert page.locator(".e2v-timeline img").evaluate("img => img.complete && img.naturalWidth > 300")
    assert page.locator(".e2v-timeline-caption").get_attribute("data-segments") == str(len(segments))
    group = page.locator(".e2v-result").filter(has_text=call_recording.name)
    assert group.locator(".e2v-timeline img").count() == 1

    # the table: a row per segment, as the client library found them
    table = page.locator(".e2v-segments [role=grid]")
    table.locator("[role=gridcell]").first.wait_for()
    rows = table.evaluate(SEGMENT_ROWS_JS)
    assert len(rows) == len(segments), rows
    for number, (row, segment) in enumerate(zip(rows, segments, strict=True), 1):
        assert int(row[0]) == number
        assert float(row[1]) == pytest.approx(segment.start, abs=1e-3)
        assert float(row[2]) == pytest.approx(segment.end, abs=1e-3)
        assert row[3] == prediction.label_of(segment.scores)
        assert float(row[4]) == pytest.approx(float(np.max(segment.scores)), abs=1e-6)

    def shown_segment(index: int) -> dict[str, float]:
        card = page.locator(f'.e2v-segment-card[data-index="{index}"]')
        card.wait_for()
        return json.loads(card.get_attribute("data-scores"))

    def expected(index: int) -> dict[str, float]:
        return dict(zip(prediction.labels, segments[index].scores.tolist(), strict=True))

    # the first segment until one is picked; then the one picked, its scores and its bar chart
    assert shown_segment(0) == pytest.approx(expected(0), abs=1e-6)
    first_chart = page.locator(".e2v-segment-bar img").get_attribute("src")
    last = len(segments) - 1
    assert expected(last) != pytest.approx(expected(0), abs=1e-6)  # so that the pick changes what is shown
    table.locator(f'[role=gridcell][data-row="{last}"][data-col="3"]').click()
    assert shown_segment(last) == pytest.approx(expected(last), abs=1e-6)
    assert f"Segment {last + 1} of {len(segments)}" in page.locator(".e2v-segment-card").inner_text()
    chart = page.locator(".e2v-segment-bar img")
    page.wait_for_function(
        "([img, before]) => img.getAttribute('src') !== before && img.complete && img.naturalWidth > 300",
        arg=[chart.element_handle(), first_chart],
    )


def test_page_logic_streams_a_live_recording_as_e2v_client_scores_it_at_segment_granularity(
    tiny_server, call_recording, tmp_path
):
    """The live tab's logic fed as the browser feeds it (0.5 s chunks of 48 kHz 16-bit PCM): segments are shown while
    it records, and when it stops, its folder, summary and segments CSVs are those of `e2v-client --granularity
    segment` on the same audio: the same samples, the same segments."""
    from e2v_client.web.app import LIVE, LiveRecording, WebApp
    from e2v_client.web.timeline import Timeline

    path = tmp_path / "call_48k.wav"
    sf.write(path, soxr.resample(audio.load(call_recording).samples, 16000, 48000), 48000, subtype="PCM_16")
    pcm, rate = sf.read(path, dtype="int16")
    out = tmp_path / "outputs"
    app = WebApp(tiny_server.grpc_url, out, tmp_path / "uploads", tmp_path / "work", retries=0)
    try:
        live = LiveRecording(app)
        for first in range(0, len(pcm), rate // 2):
            live.push((rate, pcm[first : first + rate // 2]))
        deadline = time.monotonic() + 30
        while (view := live.view()) is None and time.monotonic() < deadline:  # before stop(): still recording
            time.sleep(0.1)
        assert view is not None, "no segment was shown while recording"
        (shown,) = view.results
        assert shown.row.folder == "" and Path(shown.timeline_png).exists() and "Recording live" in view.message
        final = live.stop()
        assert live.stop() is final  # once
    finally:
        app.close()

    (result,) = final.results
    print(
        f"{len(shown.prediction.segments)} segment(s) shown while recording, {len(result.prediction.segments)} in all"
    )
    assert result.ok and result.name == LIVE and Path(result.zip_path).exists(), final.message
    folder = Path(result.row.folder)
    samples, written = check_folder_against_spec(folder, "segment", False, TINY_DIM)
    assert written["source_file"] == LIVE
    assert Timeline.of(result).caption().count(f'data-segments="{len(written["segments"])}"') == 1
    # the segments shown while recording are the first of the final ones
    for early, segment in zip(shown.prediction.segments, written["segments"], strict=False):
        assert (round(early.start, 3), round(early.end, 3)) == (segment["start"], segment["end"])

    # e2v-client --granularity segment on the same file: the same samples, the same segments
    offline = run_e2v_client(tiny_server.grpc_url, path, "--granularity", "segment", "--output-dir", tmp_path / "cli")
    assert offline.returncode == 0, offline.stderr
    (cli_folder,) = (tmp_path / "cli").glob(f"{FOLDER_PREFIX}*")
    cli_samples, cli_written = check_folder_against_spec(cli_folder, "segment", False, TINY_DIM)
    assert np.array_equal(samples, cli_samples)
    assert len(written["segments"]) == len(cli_written["segments"]) >= 3
    for got, want in zip(written["segments"], cli_written["segments"], strict=True):
        assert abs(got["start"] - want["start"]) <= 0.1 and abs(got["end"] - want["end"]) <= 0.1
    with open(final.summary_path, newline="") as f:
        assert [(r["source_file"], r["status"], r["folder"]) for r in csv.DictReader(f)] == [
            (LIVE, "scored", str(folder))
        ]
    (segments_csv,) = out.glob("segments_*.csv")
    with open(segments_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["start"]), float(r["end"])) for r in rows] == [(s["start"], s["end"]) for s in written["segments"]]


def test_page_logic_says_why_a_live_recording_is_not_scored_and_drops_an_abandoned_one(tiny_server, tmp_path):
    from e2v_client.web.app import LIVE, LiveRecording, WebApp

    chunk = (48000, np.round(speech_like(0.5, 3, 48000) * 32767).astype(np.int16))
    down = WebApp(f"127.0.0.1:{free_port()}", tmp_path / "down", tmp_path / "uploads", tmp_path / "work", retries=0)
    try:
        live = LiveRecording(down)
        live.push(chunk)
        view = live.view()
        assert "Cannot reach the emotion2vec server" in view.message and not view.results
        assert live.view() is None  # said once
        assert "Cannot reach the emotion2vec server" in live.stop().message
    finally:
        down.close()
    assert not (tmp_path / "down").exists()

    app = WebApp(tiny_server.grpc_url, tmp_path / "failed", tmp_path / "uploads", tmp_path / "work", retries=0)
    try:
        # a recording whose scoring fails part-way (here its rate changes) says so while recording, and at the end
        live = LiveRecording(app)
        live.push(chunk)
        live.push((44100, chunk[1]))
        deadline = time.monotonic() + 30
        while (view := live.view()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "The live recording is not scored: the sample rate changed part-way" in view.message
        final = live.stop()
        assert [(r.name, r.row.status) for r in final.results] == [(LIVE, "failed")]
        assert "sample rate changed" in final.message and final.summary_path.exists()
        assert not list((tmp_path / "failed").glob(f"{FOLDER_PREFIX}*"))

        live = LiveRecording(app)
        for _ in range(4):
            live.push(chunk)
        live.abandon()  # the page was closed while recording
        with pytest.raises(audio.AudioError, match="closed"):
            live.future.result(timeout=30)
    finally:
        app.close()
    # the failed recording's summary and segments CSVs, and nothing of the abandoned one: no folder, no staging
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "failed").iterdir()) == ["segments", "summary"]


def test_the_timeline_draws_each_segment_in_its_emotions_colour_as_opaque_as_it_is_confident():
    from matplotlib.colors import to_hex

    from e2v_client.client import Segment
    from e2v_client.web.plots import label_colours, plot_timeline

    labels = ["angry", "happy", "neutral", "sad"]
    scores = [[0.1, 0.7, 0.1, 0.1], [0.05, 0.05, 0.1, 0.8], [0.4, 0.3, 0.2, 0.1]]
    spans = [(0.5, 2.0), (3.0, 3.4), (5.25, 9.0)]
    segments = [Segment(a, b, np.array(s), np.zeros(4)) for (a, b), s in zip(spans, scores, strict=True)]
    figure = plot_timeline(labels, segments, 10.0, "call.wav")
    bars = figure.axes[0].patches
    assert np.allclose([(bar.get_x(), bar.get_x() + bar.get_width()) for bar in bars], spans)
    tops = [label_colours(labels)[int(np.argmax(s))] for s in scores]
    assert [to_hex(bar.get_edgecolor()) for bar in bars] == tops
    assert [to_hex(bar.get_facecolor()) for bar in bars] == tops
    assert [bar.get_facecolor()[3] for bar in bars] == pytest.approx([0.1 + 0.9 * max(s) for s in scores])
    assert figure.axes[0].get_xlim() == (0.0, 10.0)
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["angry", "happy", "sad"]
