"""The app in Debian's chromium through Playwright: upload, both predictions and four heatmaps, tabs, distill + cancel.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: no browser download).
Screenshots go to ``<tmp>/screenshots`` (path printed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright import sync_api

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def page(app):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        sync_api.expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly
        page.goto(app["url"])
        yield page
        browser.close()


def test_upload_tabs_distill_cancel(page, app, files, tmp_path_factory):
    shots = Path(os.environ.get("KDCORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    print(f"screenshots in {shots}")
    expect = sync_api.expect
    expect(page.get_by_text("Research use only")).to_be_visible()

    page.locator("#upload input[type=file]").set_input_files(str(files["slice"]))
    classes = re.compile("glioma|meningioma|notumor|pituitary")
    expect(page.locator("#teacher-info")).to_contain_text("predicts")
    expect(page.locator("#student-info")).to_contain_text("predicts")
    expect(page.locator("#teacher-probs")).to_contain_text(classes)
    expect(page.locator("#agreement")).to_contain_text(re.compile("agree"))
    expect(page.locator("#heatmaps img")).to_have_count(4)
    page.screenshot(path=str(shots / "diagnose.png"), full_page=True)

    # a bad upload: a message, not a stack trace, and the page keeps working
    page.locator("#upload button[aria-label='Clear']").click()
    expect(page.locator("#heatmaps img")).to_have_count(0)  # clearing the upload clears the results
    page.locator("#upload input[type=file]").set_input_files(str(files["text"]))
    expect(page.get_by_text("not a readable image").first).to_be_visible()
    page.screenshot(path=str(shots / "bad-upload.png"))

    for tab in ("Rank students", "Benchmark", "Hub"):
        page.get_by_role("tab", name=tab).click()
        page.screenshot(path=str(shots / f"tab-{tab.split()[0].lower()}.png"))

    page.get_by_role("tab", name="Distill").click()
    page.locator("#distill-epochs input").fill("100")
    page.locator("#distill-start").click()
    expect(page.locator("#distill-status")).to_contain_text(re.compile("epoch|Teacher cache|Starting"))
    page.screenshot(path=str(shots / "distill-running.png"), full_page=True)
    page.locator("#distill-cancel").click()
    expect(page.locator("#distill-status")).to_contain_text(re.compile("Cancelled (at epoch|before it started)"))
    expect(page.locator("#distill-cancel")).to_have_text("Cancel")  # re-armed for the next run
    expect(page.locator("#distill-cancel")).to_be_enabled()
    page.screenshot(path=str(shots / "distill-cancelled.png"), full_page=True)
    assert len(list(shots.glob("*.png"))) == 7
