"""The app in Debian's chromium through Playwright: upload, both predictions and four heatmaps, tabs, distill + cancel,
Rank and Distill on the default (demo) data, a reload during a run, a DICOM upload and a map enlarged, a sample
clicked, the Diagnose tab on a 400 px phone screen.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no ``playwright install``: no browser download).
Screenshots go to ``<tmp>/screenshots`` (path printed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from playwright import sync_api

from tests.helpers import axial_volume, synthetic_slice, write_dicom, write_nifti

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
    classes = re.compile("glioma|meningioma|no tumour|pituitary")
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
    expect(page.locator("#rank-proxy-note")).to_contain_text("Proxy in use")
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


def test_dicom_enlarge_opacity_volume_slice_and_a_sample(page, app, tmp_path):
    expect = sync_api.expect
    page.goto(app["url"])
    pixels = synthetic_slice(1, np.random.default_rng(3), 80).astype(np.uint16) * 200
    page.locator("#upload input[type=file]").set_input_files(str(write_dicom(tmp_path / "slice.dcm", pixels)))
    expect(page.locator("#teacher-info")).to_contain_text("predicts")
    expect(page.locator("#slice-note")).to_contain_text("DICOM")
    expect(page.locator("#upload-view img")).to_be_visible()  # the decoded slice itself
    expect(page.locator("#heatmaps img")).to_have_count(4)
    before = page.locator("#heatmaps img").first.get_attribute("src")
    page.locator("#opacity input[type=range]").fill("0.3")  # re-drawn overlays, models not re-run
    expect(page.locator("#heatmaps img").first).not_to_have_attribute("src", before)
    small = page.locator("#heatmaps img").first.bounding_box()["width"]
    page.locator("#heatmaps .thumbnail-item").first.click()  # enlarge
    big = page.locator("#heatmaps .preview img").first
    expect(big).to_be_visible()
    assert big.bounding_box()["width"] > 1.5 * small
    expect(page.locator("#heatmaps .preview")).to_contain_text("teacher · LRP")

    page.goto(app["url"])  # a volume: its middle slice first, then the slice picked
    volume = np.concatenate([axial_volume(synthetic_slice(i % 4, np.random.default_rng(i), 64)) for i in range(5)],
                            axis=2)
    page.locator("#upload input[type=file]").set_input_files(str(write_nifti(tmp_path / "v.nii.gz", volume)))
    expect(page.locator("#slice-note")).to_contain_text("slice 3 of 5")
    page.locator("#slice input[type=number]").fill("4")
    page.locator("#slice input[type=number]").press("Enter")
    expect(page.locator("#slice-note")).to_contain_text("slice 5 of 5")

    page.goto(app["url"])  # a bundled sample's thumbnail runs the diagnosis
    page.locator("#samples img").first.click()
    expect(page.locator("#student-info")).to_contain_text("predicts")
    expect(page.locator("#heatmaps img")).to_have_count(4)


def test_phone_layout_shows_all_four_maps(page, app, files, tmp_path_factory):
    """At 400 px wide every map is on screen whole, at least 125 px wide (colour-bar labels >= 11 px), and no
    caption is cut."""
    shots = Path(os.environ.get("KDCORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots-phone"))
    phone = page.context.browser.new_page(viewport={"width": 400, "height": 800})
    phone.set_default_timeout(60_000)
    phone.goto(app["url"])
    phone.locator("#upload input[type=file]").set_input_files(str(files["slice"]))
    maps = phone.locator("#heatmaps img")
    sync_api.expect(maps).to_have_count(4)
    phone.locator("#heatmaps").scroll_into_view_if_needed()
    for img in maps.all():
        box = img.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 400 and box["width"] >= 125, box
    sync_api.expect(phone.locator("#heatmaps .caption-label")).to_have_count(4)
    clipped = phone.locator("#heatmaps .caption-label").evaluate_all(
        "els => els.filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent)")
    assert clipped == []
    phone.screenshot(path=str(shots / "diagnose-phone.png"), full_page=True)
    phone.close()
