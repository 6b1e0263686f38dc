"""The 256^3 timing's inference-only peak RSS window (benchmarks.quality)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks.quality import reset_peak_rss, window_peak_rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM reset needs Linux /proc")
def test_window_peak_restarts_after_reset_and_sees_a_new_allocation():
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    before = window_peak_rss_mb()
    del big
    assert reset_peak_rss()
    after_reset = window_peak_rss_mb()
    assert after_reset is not None and after_reset < before - 40  # the old peak is forgotten
    block = np.ones(96 * 2**20 // 8)  # 96 MiB, touched
    grown = window_peak_rss_mb()
    assert grown - after_reset > 80
    del block
    assert window_peak_rss_mb() == pytest.approx(grown, abs=2.0)  # a peak, not the current RSS
