"""The 256^3 timing's inference-only peak RSS window (benchmarks.quality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.quality import reset_peak_rss, window_peak_rss_mb


def test_window_peak_restarts_after_reset_and_sees_a_new_allocation():
    if not Path("/proc/self/clear_refs").exists():  # no VmHWM to reset: the timing reports no window
        assert reset_peak_rss() is False
        return
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
