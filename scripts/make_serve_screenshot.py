"""Regenerate ``docs/images/serve.png``: the web panel (``jointsrseg serve``) in headless Chromium after a run.

The bundled 5 mm T2 sample (Load sample), the shipped package ``swinsr-unetr-brain-small`` with
super-resolution x4, segmentation and its uncertainty maps, on the CPU; the page is captured as the
browser shows it (the views are the server's offscreen Slicer rendering)::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_serve_screenshot.py   # about 1-2 min on two cores

Needs ``apt-get install chromium chromium-driver libosmesa6`` and the ``dev`` and ``slicer`` extras.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "Testing")]

from serve_browser import Server, browser_problem, new_browser, wait_for  # noqa: E402

MODEL = "swinsr-unetr-brain-small"


def main(out: Path = ROOT / "docs" / "images" / "serve.png") -> int:
    problem = browser_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from selenium.webdriver.support.ui import Select

    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder), Path(folder) / "server.log", max_upload_mb=512)
        driver = None
        try:
            server.wait_ready()
            driver = new_browser(Path(folder))
            driver.get(server.url)
            wait_for(lambda: driver.find_elements("id", "load-sample"), 30, "the page")
            driver.find_element("id", "load-sample").click()
            wait_for(lambda: driver.find_element("id", "input-text").text, 30, "the sample")
            Select(driver.find_element("id", "model")).select_by_value(MODEL)
            for box in ("task-seg", "uncertainty"):
                if not driver.find_element("id", box).is_selected():
                    driver.find_element("id", box).click()
            driver.find_element("id", "run").click()
            status = wait_for(lambda: driver.find_element("id", "status").text.startswith("Done")
                              or driver.find_element("id", "error").text, 600, "the run")
            if status is not True:
                print(f"run failed: {status}", file=sys.stderr)
                return 1
            time.sleep(2.0)  # the last frames of the three views
            driver.save_screenshot(str(out))
        finally:
            if driver is not None:
                driver.quit()
            server.stop()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
