"""The web panel (``jointsrseg serve``) driven in a real headless browser (Chromium + Selenium).

One server and one page for the module: a bad upload shows one line; the bundled thick-slice
sample runs B-spline x4 and its SR file downloads with the exact subdivided grid; a shipped package
(SR + segmentation + uncertainty, on a crop of the same sample picked from --data-dir so the run
takes seconds on two cores) paints the overlay and the segments into the three views (pixel checks
on the streamed images, as the offscreen Slicer rendering tests do), and the opacity slider reaches
the views live; Cancel stops a run and changes nothing.  Skipped, with the reason printed, only
when chromium, chromium-driver, selenium, trame-slicer or OSMesa is missing.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from conftest import ROOT, SAMPLE
from serve_browser import (
    Server,
    bright_fraction,
    browser_problem,
    chromatic_fraction,
    new_browser,
    view_images,
    wait_for,
)

sys.path[:0] = [str(ROOT / "scripts")]
import make_screenshots  # noqa: E402

from JointSRSegLib.geometry import subdivide_grid  # noqa: E402
from JointSRSegLib.io import read_volume, write_volume  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402

PROBLEM = browser_problem() or make_screenshots.osmesa_problem()
if PROBLEM:
    print(f"test_serve_browser skipped: {PROBLEM}")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")
SAMPLE_FILE = SAMPLE / "ds000011_sub-01_inplaneT2.nii.gz"
PACKAGE = "swinsr-unetr-brain-small"  # the shipped thick-slice SR x4 + segmentation package, both maps
CROP = (slice(40, 88), slice(40, 88), slice(11, 19))  # 48 x 48 x 8 voxels through the ventricles


def crop(volume: Volume, box) -> Volume:
    """A sub-block of ``volume`` with its exact physical position (origin moved to the first voxel)."""
    start = np.array([s.start for s in box], float)
    origin = np.asarray(volume.origin) + np.asarray(volume.direction).reshape(3, 3) @ (
        start * np.asarray(volume.spacing))
    return Volume(volume.array[(slice(None), *box)].copy(), volume.spacing, tuple(origin), volume.direction,
                  source="crop")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    data = folder / "data"
    data.mkdir()
    write_volume(crop(read_volume(SAMPLE_FILE), CROP), data / "T2_crop.nii.gz")
    (folder / "downloads").mkdir()
    server = Server(data, folder / "server.log")
    driver = None
    try:
        server.wait_ready()
        driver = new_browser(folder / "downloads")
        driver.get(server.url)
        wait_for(lambda: driver.find_elements("id", "load-sample"), 30, "the page")
        yield driver, folder
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        log = (folder / "server.log").read_text(errors="replace")
        print("\n".join(line for line in log.splitlines() if "Traceback" in line or "Error" in line)[-3000:])


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text.strip()


def choose(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def pick_model(driver, model_id: str) -> None:
    """Pick a model and wait for its card: the server has adapted the tasks to it before the next click."""
    choose(driver, "model", model_id)
    wait_for(lambda: f"({model_id}" in text(driver, "model-card"), 10, f"the card of {model_id}")


def ticked(driver, element_id: str, on: bool) -> None:
    box = driver.find_element("id", element_id)
    if box.is_selected() != on:
        box.click()


def run_and_wait(driver, timeout: float) -> str:
    """Run, then the new "Done ..." status or the error (the page's old lines are cleared first)."""
    driver.execute_script("trame.state.set('status', ''); trame.state.set('error', '');")
    wait_for(lambda: not text(driver, "status") and not text(driver, "error"), 5, "the old lines to clear")
    driver.find_element("id", "run").click()
    return wait_for(lambda: (s := text(driver, "status")).startswith("Done") and s or text(driver, "error"),
                    timeout, "the run to finish")


def test_bad_upload_is_one_line_on_the_page(page):
    driver, folder = page
    bad = folder / "notes.nii.gz"
    bad.write_text("this is not a NIfTI file\n")
    driver.find_element("id", "upload").send_keys(str(bad))
    message = wait_for(lambda: text(driver, "error"), 20, "the upload error")
    assert message.startswith("notes.nii.gz: "), message
    assert "\n" not in message and "Traceback" not in message and "/tmp" not in message
    big = folder / "big.nii.gz"
    big.write_bytes(b"\0" * (6 * 1024 * 1024))  # the server was started with --max-upload-mb 5
    driver.find_element("id", "upload").send_keys(str(big))
    wait_for(lambda: "limited to 5 MB" in text(driver, "error"), 20, "the size-limit error")
    assert text(driver, "error").startswith("big.nii.gz: is 6 MB")
    assert text(driver, "input-text") == ""  # nothing was loaded


def test_sample_bspline_x4_renders_and_downloads(page):
    driver, folder = page
    driver.find_element("id", "load-sample").click()
    wait_for(lambda: text(driver, "input-text").startswith("T2 5mm: 128 × 128 × 30"), 30, "the sample")
    assert text(driver, "error") == ""
    pick_model(driver, "bspline")
    assert "B-spline" in text(driver, "model-card")
    assert driver.find_element("id", "task-sr").is_selected()
    ticked(driver, "task-sr", False)  # nothing to do: the logic's check, one line on the page
    driver.find_element("id", "run").click()
    message = wait_for(lambda: text(driver, "error"), 20, "the no-task error")
    assert "\n" not in message and "task" in message, message
    ticked(driver, "task-sr", True)
    status = run_and_wait(driver, 90)
    assert status.startswith("Done"), status
    views = wait_for(lambda: (v := view_images(driver)) and len(v) == 3 and all(bright_fraction(p) > 0.1 for p in v)
                     and v, 20, "three slice views showing the SR volume")
    assert all(chromatic_fraction(p) < 0.01 for p in views)  # grey levels only: B-spline has no overlay
    link = wait_for(lambda: driver.find_elements("id", "download-sr"), 10, "the SR download")[0]
    assert link.text == "T2_5mm_sr.nii.gz"
    link.click()
    saved = folder / "downloads" / "T2_5mm_sr.nii.gz"
    wait_for(lambda: saved.is_file() and saved.stat().st_size > 1000, 30, "the downloaded file")
    time.sleep(0.5)
    sr, sample = read_volume(saved), read_volume(SAMPLE_FILE)
    expected = subdivide_grid(sample.grid, 4, 2)
    assert sr.shape == (128, 128, 120)
    assert sr.grid.almost_equal(expected, 1e-4)
    np.testing.assert_allclose(sr.spacing, (1.5625, 1.5625, 1.25), atol=1e-5)


def test_shipped_package_paints_overlay_and_segments(page):
    driver, _ = page
    choose(driver, "data-file", "T2_crop.nii.gz")
    driver.find_element("id", "open-data-file").click()
    wait_for(lambda: text(driver, "input-text").startswith("T2_crop: 48 × 48 × 8"), 30, "the cropped sample")
    before = wait_for(lambda: (v := view_images(driver)) and len(v) == 3 and v, 20, "the views")
    assert all(chromatic_fraction(p) < 0.01 for p in before)
    pick_model(driver, PACKAGE)
    ticked(driver, "task-seg", True)
    choose(driver, "seg-model", "none")
    ticked(driver, "uncertainty", True)
    status = run_and_wait(driver, 240)
    assert status.startswith("Done"), status
    assert "uncertainty" in status and "segmentation" in status
    after = wait_for(lambda: (v := view_images(driver)) and all(chromatic_fraction(p) > 0.05 for p in v) and v,
                     20, "the overlay and segments in all three views")
    assert "unitless, 0 = certain" in text(driver, "legend-unit")
    assert "σ/(σ+c)" in text(driver, "legend")  # the SR map is the package's aleatoric head
    driver.execute_script(
        "const s = document.getElementById('opacity'); s.value = 0; s.dispatchEvent(new Event('input'));")
    coloured = sum(chromatic_fraction(p) for p in after)
    wait_for(lambda: sum(chromatic_fraction(p) for p in view_images(driver)) < 0.85 * coloured, 20,
             "the overlay to fade at opacity 0")
    assert all(chromatic_fraction(p) > 0.01 for p in view_images(driver))  # the segments stay
    links = [e.text for e in driver.find_elements("css selector", ".download")]
    assert sorted(links[:-1]) == [f"T2_crop_{k}.nii.gz" for k in ("seg", "sr", "uncertainty_seg", "uncertainty_sr")]
    assert links[-1] == "T2_crop_report.json"


def test_cancel_stops_the_run_and_changes_nothing(page):
    driver, _ = page
    pick_model(driver, "self")  # trains on the scan for up to minutes: something to cancel
    driver.find_element("id", "run").click()
    wait_for(lambda: driver.find_element("id", "cancel").is_enabled(), 20, "the run to start")
    bar = driver.find_element("id", "progress")
    wait_for(lambda: bar.is_displayed() and "%" in bar.text, 20, "the progress bar")
    assert not driver.find_element("id", "run").is_enabled()  # one run at a time
    time.sleep(1.0)
    started = time.monotonic()
    driver.find_element("id", "cancel").click()
    wait_for(lambda: text(driver, "status").startswith("Cancelled"), 20, "the cancellation")
    assert time.monotonic() - started < 10
    assert text(driver, "error") == ""
    assert driver.find_element("id", "run").is_enabled()
    # the previous run's outputs are still those offered (the cancelled run imported nothing)
    assert "T2_crop_sr.nii.gz" in [e.text for e in driver.find_elements("css selector", ".download")]
