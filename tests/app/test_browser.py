"""The app in Debian's chromium through Playwright: upload, both predictions and four heatmaps, tabs, distill + cancel,
Rank and Distill on the default (demo) data, a reload during a run.

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

    # not an MRI slice: the predictions stay, marked, under the out-of-distribution warning with its reason
    page.locator("#upload button[aria-label='Clear']").click()
    page.locator("#upload input[type=file]").set_input_files(str(files["noise"]))
    expect(page.locator("#agreement")).to_contain_text("does not look like a brain MRI slice")
    expect(page.locator("#agreement")).to_contain_text("> threshold")
    expect(page.locator("#teacher-info")).to_contain_text("untrustworthy")
    expect(page.locator("#teacher-probs")).to_contain_text(classes)
    page.screenshot(path=str(shots / "not-mri.png"), full_page=True)

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
    expect(page.locator("#distill-cancel")).to_have_text("Cancel")
    expect(page.locator("#distill-cancel")).to_be_disabled()  # nothing runs: nothing to cancel
    page.screenshot(path=str(shots / "distill-cancelled.png"), full_page=True)
    assert len(list(shots.glob("*.png"))) == 8


def test_rank_and_distill_on_the_default_data(page, app):
    """A first visit: Rank and Distill work with their defaults (the bundled demo set), the candidate and the data
    reach Distill, and the finished student goes to Diagnose."""
    expect = sync_api.expect
    page.goto(app["url"])
    page.get_by_role("tab", name="Rank students").click()
    expect(page.locator("#rank-data textarea, #rank-data input").first).to_have_value("demo")
    page.locator("#rank-names textarea, #rank-names input").first.fill("test_resnet")
    page.locator("#rank-batch input").fill("8")
    page.locator("#rank-run").click()
    expect(page.locator("#rank-table")).to_contain_text("test_resnet")
    page.get_by_role("button", name="Distill this candidate").click()
    expect(page.get_by_role("tab", name="Distill")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#distill-data textarea, #distill-data input").first).to_have_value("demo")
    expect(page.locator("#distill-data-note")).to_contain_text("demo set")
    expect(page.locator("#distill-cancel")).to_be_disabled()
    page.locator("#distill-epochs input").fill("1")
    page.locator("#distill-images input").fill("16")
    page.locator("#distill-start").click()
    expect(page.locator("#distill-status")).to_contain_text("Done in", timeout=180_000)
    expect(page.locator("#distill-status")).to_contain_text("A short run")
    page.locator("#distill-to-diagnose").click()
    expect(page.get_by_role("tab", name="Diagnose")).to_have_attribute("aria-selected", "true")


def test_a_reload_during_a_run_reattaches_to_it(page, app):
    expect = sync_api.expect
    page.goto(app["url"])
    page.get_by_role("tab", name="Distill").click()
    page.locator("#distill-epochs input").fill("100")
    page.locator("#distill-start").click()
    expect(page.locator("#distill-status")).to_contain_text(re.compile("epoch|Teacher cache|loading"))
    page.reload()  # the run goes on in the server; the new page lists it and follows it
    page.get_by_role("tab", name="Distill").click()
    expect(page.locator("#distill-status")).to_contain_text(re.compile(r"epoch \d+/100"))
    expect(page.locator("#distill-cancel")).to_be_enabled()
    page.locator("#distill-cancel").click()
    expect(page.locator("#distill-status")).to_contain_text("Cancelled at epoch")
    expect(page.locator("#distill-cancel")).to_be_disabled()
