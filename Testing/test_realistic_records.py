"""Real-scan records for the model cards: paired means, and the defaults rule that reads them."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.realistic_records import merged_rows, package_record
from JointSRSegLib.defaults import beats_segmentation_peer, choose_default, shipped_packages


def _row(case, method, kind="labelmap", **values):
    return {"case": case, "method": method, "kind": kind, **values}


REPORT = {
    "rows": [
        _row("a", "bspline", psnr_head=20.0, ssim_head=0.90),
        _row("a", "pkg", psnr_head=21.0, ssim_head=0.92, dice_mean=0.70),
        _row("a", "atropos", psnr_head=20.0, ssim_head=0.90, dice_mean=0.80),
        _row("a", "self+atropos", psnr_head=23.0, ssim_head=0.95, dice_mean=0.84),
        _row("b", "bspline", psnr_head=30.0, ssim_head=0.95),
        _row("b", "pkg", psnr_head=32.0, ssim_head=0.94, dice_mean=0.90),
        _row("b", "atropos", psnr_head=30.0, ssim_head=0.95, dice_mean=0.86),
        _row("r", "bspline", "real", psnr_head=25.0, ssim_head=0.91),
        _row("r", "pkg", "real", psnr_head=26.0, ssim_head=0.90),
        _row("r", "self+atropos", "real", skipped="no antspyx"),
    ]
}


def test_records_are_paired_means():
    record = package_record(merged_rows([REPORT]), "pkg", ["r.json"])
    assert record["dice_mean"] == pytest.approx(0.80) and record["atropos_on_bspline_dice"] == pytest.approx(0.83)
    # the peer on self-SR ran on case "a" only: both sides of that comparison are case "a"
    assert record["atropos_on_self_dice"] == 0.84 and record["dice_mean_on_those_cases"] == 0.70
    assert record["psnr_gain_over_bspline_db"] == pytest.approx((1 + 2 + 1) / 3, abs=0.01)
    assert record["ssim"] == pytest.approx((0.92 + 0.94 + 0.90) / 3, abs=1e-4) and record["image_cases"] == 3
    assert record["self_gain_over_bspline_db"] == 3.0 and record["package_gain_on_those_cases_db"] == 1.0
    assert package_record(merged_rows([REPORT]), "absent", []) is None


def test_a_package_below_atropos_on_real_scans_is_not_the_segmentation_default():
    package = next(p for p in shipped_packages() if p.id == "swinsr-unetr-brain-small")

    def card(record):
        metrics = {**package.metadata.get("metrics", {}), "realistic": record}
        return dataclasses.replace(package, metadata={**package.metadata, "metrics": metrics})

    below = card({"protocol": "sr", "factor": 4, "dice_mean": 0.76, "atropos_on_self_dice": 0.84,
                  "dice_mean_on_those_cases": 0.76, "atropos_on_bspline_dice": 0.80})  # fmt: skip
    above = card({"protocol": "sr", "factor": 4, "dice_mean": 0.88, "atropos_on_self_dice": 0.84})
    assert beats_segmentation_peer(below.metadata, "sr", 4)[0] is False
    choice = choose_default(("sr", "seg"), "sr", 4, packages=[below])
    assert choice.model == "atropos" and "0.76 vs atropos on B-spline 0.80" in choice.reason
    assert choose_default(("sr", "seg"), "sr", 4, packages=[above]).model == package.id
    # both classical pipelines are bars, each on its own cases: beating atropos on B-spline over all
    # cases is not enough when atropos on self-SR wins on the cases it ran
    between = card({"protocol": "sr", "factor": 4, "dice_mean": 0.60, "atropos_on_bspline_dice": 0.50,
                    "dice_mean_on_those_cases": 0.75, "atropos_on_self_dice": 0.79})  # fmt: skip
    reason = choose_default(("seg",), "sr", 4, packages=[between]).reason
    assert "0.75 vs atropos on self-SR 0.79 on the same cases" in reason
    wins = card({"protocol": "sr", "factor": 4, "dice_mean": 0.60, "atropos_on_bspline_dice": 0.50,
                 "dice_mean_on_those_cases": 0.70, "atropos_on_self_dice": 0.45})  # fmt: skip
    assert choose_default(("seg",), "sr", 4, packages=[wins]).model == package.id
    unmeasured = card(None)
    assert choose_default(("seg",), "sr", 4, packages=[unmeasured]).model == "atropos"
    # an image-only request ignores the segmentation peer but not a real-scan SSIM below B-spline's
    blurry = card({"protocol": "sr", "factor": 4, "psnr_gain_over_bspline_db": 1.2, "ssim": 0.95,
                   "bspline_ssim": 0.987})  # fmt: skip
    assert choose_default(("sr",), "sr", 4, packages=[blurry]).model == "bspline"
    sharp = card({"protocol": "sr", "factor": 4, "psnr_gain_over_bspline_db": 1.2, "ssim": 0.99, "bspline_ssim": 0.98})
    assert choose_default(("sr",), "sr", 4, packages=[sharp]).model == package.id
