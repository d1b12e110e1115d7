"""``harx serve`` in a real browser: headless Chromium from the system (Debian's ``chromium``),
driven by Playwright. The page lists the runs, a confusion cell lists its videos, one plays with
its label timeline following playback, and an uploaded real clip gets its label. Skipped, with
the reason, where Chromium or Playwright is absent (``.ci/run`` installs both)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from test_serve import served  # noqa: F401  (the fixture: a colour dataset, its cache and a run)

CHROMIUM = next((p for p in ("chromium", "chromium-browser", "google-chrome") if shutil.which(p)), None)
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt install chromium)"),
              pytest.mark.skipif(__import__("importlib").util.find_spec("playwright") is None,
                                 reason="Playwright is not installed (pip install -e '.[dev]')")]


@pytest.fixture(scope="module")
def server(served):  # noqa: F811
    import uvicorn

    from harx.temporal.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app([served["runs"]], device="cpu")
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def playwright():
    """One Playwright driver for the module (its sync API allows one per thread)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def page(playwright):
    browser = playwright.chromium.launch(executable_path=shutil.which(CHROMIUM), args=["--no-sandbox"])
    yield browser.new_page(viewport={"width": 1100, "height": 1000})
    browser.close()


def test_runs_then_a_mistake_with_its_timeline(server, page):
    page.goto(server)
    page.wait_for_selector("#runs-table tbody tr")
    assert "vote" in page.locator("#runs-table tbody tr").first.text_content()
    page.locator("#runs-table tbody tr").first.click()
    page.wait_for_selector("#confusion td.cell")
    assert "test accuracy" in page.locator("#run-metrics").text_content()
    page.locator("#confusion td.cell", has_text="1").first.click()      # a cell with a video in it
    page.wait_for_selector("#mistakes-list a")
    page.locator("#mistakes-list a").first.click()
    page.wait_for_function("document.getElementById('player-note').textContent.startsWith('video:')", timeout=120_000)
    page.wait_for_function("document.getElementById('player-video').readyState >= 2", timeout=60_000)
    page.evaluate("document.getElementById('player-video').currentTime = 1.0")
    page.wait_for_function("document.getElementById('player-timeline').dataset.label", timeout=10_000)
    assert page.locator("#player-timeline").get_attribute("data-label") in ("red", "green", "blue")


def test_an_uploaded_clip_gets_its_label(server, page, served, tmp_path, realdata_or_colour):  # noqa: F811
    page.goto(server + "#classify")
    page.wait_for_selector("#classify-run option", state="attached")
    page.set_input_files("#classify-file", str(realdata_or_colour(tmp_path)))
    page.wait_for_function("!document.getElementById('classify-result').hidden "
                           "|| document.getElementById('classify-status').textContent.startsWith('error')",
                           timeout=180_000)
    assert page.locator("#classify-status").text_content() == ""
    assert page.locator("#classify-label").text_content() in ("red", "green", "blue")
    assert page.locator("#classify-annotated").get_attribute("href").startswith("/api/annotated/")
    page.wait_for_function("document.getElementById('classify-video').readyState >= 2", timeout=60_000)


def test_a_non_video_upload_says_so_in_the_page(server, page, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 50)
    page.goto(server + "#classify")
    page.wait_for_selector("#classify-run option", state="attached")
    page.set_input_files("#classify-file", str(bad))
    page.wait_for_function("document.getElementById('classify-status').textContent.startsWith('error')", timeout=60_000)
    assert "cannot be decoded" in page.locator("#classify-status").text_content()


def to_y4m(src: Path, out: Path, max_frames: int = 150) -> Path:
    """``src`` as a YUV4MPEG2 file: what Chromium's fake camera plays (in a loop)."""
    import av

    from harx.extract.stream import FrameStream

    with FrameStream(src) as frames, av.open(str(out), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=int(round(float(frames.rate))) or 25)
        stream.width, stream.height, stream.pix_fmt = frames.width, frames.height, "yuv420p"
        for i, rgb in enumerate(frames):
            if i >= max_frames:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def test_live_from_a_fake_camera_playing_a_real_clip(server, playwright, tmp_path, realdata_or_colour):
    """Chromium's fake camera plays a clip; labels appear over the live picture, with the rate and
    the latency from frame to label."""
    camera = to_y4m(realdata_or_colour(tmp_path), tmp_path / "camera.y4m")
    browser = playwright.chromium.launch(executable_path=shutil.which(CHROMIUM), args=[
        "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}"])
    try:
        page = browser.new_page()
        page.goto(server + "#live")
        page.wait_for_selector("#live-run option", state="attached")
        page.click("#live-start")
        try:
            page.wait_for_function("document.getElementById('live-stats').dataset.rate > 0", timeout=60_000)
        except Exception:
            pytest.fail(f"no live label; the page says: {page.locator('#live-stats').text_content()!r}")
        page.wait_for_timeout(3000)
        label = page.locator("#live-overlay").get_attribute("data-label")
        rate = float(page.locator("#live-stats").get_attribute("data-rate"))
        latency = float(page.locator("#live-stats").get_attribute("data-latency"))
        page.click("#live-stop")
    finally:
        browser.close()
    assert label in ("red", "green", "blue") and rate > 0 and 0 < latency < 10_000


@pytest.fixture
def realdata_or_colour():
    """A real KTH clip from ../shared/realdata where it is present, else a colour clip of our own."""
    from conftest import realdata_root
    from test_predict import write_colour_video

    def pick(tmp_path: Path) -> Path:
        clips = sorted((realdata_root() / "kth_walk_run" / "walking").glob("*.avi"))
        return clips[0] if clips else write_colour_video(tmp_path / "clip.mp4", [("blue", 30)], seed=4)
    return pick
