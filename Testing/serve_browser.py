"""Helpers for the web panel's browser tests: a ``jointsrseg serve`` process and headless Chromium (Selenium).

Debian's ``chromium`` and ``chromium-driver`` packages (``make test`` installs them when it can);
:func:`browser_problem` names what is missing, the tests' only skip reason.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WINDOW = (1500, 950)


def browser_problem() -> str | None:
    """None when the browser tests can run, else the missing dependency by name."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(binary).is_file() or shutil.which(Path(binary).name)):
            return f"{binary} is missing; install it with: apt-get install -y chromium chromium-driver ({package})"
    for module, extra in (("selenium", "dev"), ("trame_slicer", "slicer")):
        if importlib.util.find_spec(module) is None:
            return f"Python package {module} is missing; pip install -e '.[{extra}]'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m JointSRSegLib.cli serve`` in its own process group, stopped with its worker children."""

    def __init__(self, data_dir: Path, log: Path, max_upload_mb: float = 5.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYTHONUNBUFFERED="1")
        self.log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "JointSRSegLib.cli", "serve", "--port", str(self.port), "--data-dir",
             str(data_dir), "--max-upload-mb", str(max_upload_mb)],
            cwd=str(ROOT), env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jointsrseg serve exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url, timeout=2).read(1)
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"jointsrseg serve did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()


def new_browser(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER if Path(CHROMEDRIVER).is_file()
                                              else shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def view_images(driver) -> list[np.ndarray]:
    """RGB pixels of the three slice views' streamed images, left to right (axial, coronal, sagittal)."""
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By

    images = [i for i in driver.find_elements(By.CSS_SELECTOR, "#views img") if i.size["width"] > 50]
    images.sort(key=lambda element: element.location["x"])
    pixels = []
    for element in images:
        rgb = imread(io.BytesIO(element.screenshot_as_png), format="png")[..., :3]
        pixels.append(np.round(rgb * 255).astype(np.int16) if rgb.dtype != np.uint8 else rgb.astype(np.int16))
    return pixels


def chromatic_fraction(pixels: np.ndarray, spread: int = 40) -> float:
    """Share of pixels with colour (max - min channel > ``spread``): the overlay and the segments;
    a grey-level MR image has none."""
    return float(np.mean(pixels.max(axis=-1) - pixels.min(axis=-1) > spread))


def bright_fraction(pixels: np.ndarray, level: int = 40) -> float:
    return float(np.mean(pixels.max(axis=-1) > level))
