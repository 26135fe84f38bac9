"""The Gradio demo, started with `tiny-audio demo` and driven in headless Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tiny_audio.demo import transcribe_for_demo
from tiny_audio.testing import free_port, tone, wait_until_up

pytest.importorskip("gradio", reason="the demo needs the demo extra")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives the browser (dev extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
SCREENSHOTS = Path(os.environ["TINY_AUDIO_SCREENSHOTS"]) if os.environ.get("TINY_AUDIO_SCREENSHOTS") else None


def test_demo_function_reports_errors_instead_of_raising(make_model, tmp_path):
    model = make_model()
    assert transcribe_for_demo(model, None)[1].startswith("Upload a file")
    (tmp_path / "bad.wav").write_text("not audio")
    assert "Could not read the audio" in transcribe_for_demo(model, str(tmp_path / "bad.wav"))[1]
    sf.write(tmp_path / "a.wav", tone(2.5), 16000)
    text, timing, rows = transcribe_for_demo(model, str(tmp_path / "a.wav"), max_new_tokens=4, chunk_length_s=1.5)
    assert "2.5 s of audio" in timing and "RTFx" in timing and len(rows) == 2 and rows[-1][1] == 2.5


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium)")
def test_demo_page_in_headless_chromium(make_model, tmp_path):
    model = make_model()
    model.config.generation_defaults = {**model.config.generation_defaults, "max_new_tokens": 4}
    model.save_pretrained(tmp_path / "m")
    sf.write(tmp_path / "clip.wav", tone(1.5), 16000)
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiny_audio", "demo", "--model", str(tmp_path / "m"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, proc, timeout_s=120)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url, timeout=60_000)
            page.locator("#audio input[type=file]").set_input_files(str(tmp_path / "clip.wav"))
            page.locator("#transcribe").click()
            page.locator("#timing").get_by_text("s of audio in").wait_for(timeout=120_000)
            timing = page.locator("#timing").inner_text()
            transcript = page.locator("#transcript textarea").input_value()
            shot = (SCREENSHOTS or tmp_path) / "demo.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert "1.5 s of audio" in timing and "RTFx" in timing
        from tiny_audio import ASRModel

        assert (
            transcript == transcribe_for_demo(ASRModel.from_pretrained(tmp_path / "m"), str(tmp_path / "clip.wav"))[0]
        )
        assert shot.stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=30)
