"""The app in a real browser: headless Chromium driven by Playwright loads the page, runs a reconstruction, waits
for the video and the surface plot, and saves a screenshot.

``.ci/run`` installs Debian's Chromium (/usr/bin/chromium) and Playwright's Python package, so in CI (``CI`` set)
a missing browser is a failure; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

import app
from brainviz.workbench import Workbench

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("MINDREEL_CHROMIUM", "/usr/bin/chromium")
# Chromium on a machine without network: no background connections, no sandbox as root, no GPU
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (.ci/run installs it)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium; MINDREEL_CHROMIUM overrides the path)"
    return None


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    reason = _browser_or_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test in CI: {reason}")
        pytest.skip(reason)
    workbench = Workbench.from_bundle(tiny_bundle, workdir=tmp_path_factory.mktemp("browser-work"))
    demo = app.build_demo(workbench)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        allowed_paths=[str(workbench.workdir)],
    )
    yield demo.local_url
    demo.close()


def test_page_reconstructs_and_shows_video_and_map_in_chromium(served, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(served, timeout=60_000)
            page.get_by_text("Simulated subject.").wait_for(timeout=60_000)
            page.get_by_role("button", name="Reconstruct").click()
            video = page.locator("video").first
            video.wait_for(state="attached", timeout=60_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('video')].some(v => (v.currentSrc || v.src || '').includes('.mp4'))",
                timeout=60_000,
            )
            page.get_by_text("| ssim |", exact=False).or_(page.locator("table").first).first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Show map").click()
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.get_by_text("convergence", exact=False).or_(
                page.get_by_text("(saliency), test clip 0")
            ).first.wait_for(timeout=60_000)
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            if os.environ.get("MINDREEL_SCREENSHOT"):
                shutil.copy(tmp_path / "failed.png", os.environ["MINDREEL_SCREENSHOT"])
            raise
        finally:
            browser.close()
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    keep = os.environ.get("MINDREEL_SCREENSHOT")  # e.g. to look at the page after a CI run
    if keep:
        shutil.copy(shot, keep)
