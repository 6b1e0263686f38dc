"""benchmarks/paper_protocols.py: each paper's LR protocol and baseline land on the HR grid, the scores and
the models-table cell read what the run measured (no training here: that is the benchmark's job)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import paper_protocols as pp
from JointSRSegLib.volume import Volume


def _ramp_volume(shape=(24, 20, 16)) -> Volume:
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return Volume((x + 2 * y + 3 * z)[None], (1.0, 0.9, 1.1), (5.0, -3.0, 2.0))


@pytest.mark.parametrize(("kind", "factor", "lr_shape", "hr_shape"), [
    ("isotropic", 2, (12, 10, 8), (24, 20, 16)),
    ("interp", 2, (24, 20, 8), (24, 20, 15)),
    ("inplane", 4, (16, 12, 16), (64, 48, 16)),
])
def test_protocols_and_baselines_share_the_hr_grid(kind, factor, lr_shape, hr_shape):
    """A linear ramp is reproduced exactly by linear interpolation on the protocol's output grid, so the
    baseline and the cropped HR reference are the same grid (sr / in-plane: block centres; interp: kept
    slices)."""
    hr = _ramp_volume((64, 48, 16) if kind == "inplane" else (24, 20, 16))
    lr, target = pp.degrade(hr, kind, factor, noise_std=0.0)
    assert lr.shape == lr_shape and target.shape == hr_shape
    out = pp.baseline(lr, kind, factor, "linear")
    assert out.grid.almost_equal(target.grid)
    # away from the borders, where the truncated slice profile / bicubic kernel bias the first LR voxels
    margin = 4 * factor if kind == "inplane" else 2 * factor  # bicubic's anti-aliased support: 2R voxels
    inner = (slice(None),) + tuple(slice(margin, n - margin) if n > 2 * margin else slice(None) for n in hr_shape)
    np.testing.assert_allclose(out.array[inner], target.array[inner], atol=1e-3)


def test_scores_follow_the_papers_tables():
    rng = np.random.default_rng(0)
    reference = rng.random((1, 16, 16, 6)).astype(np.float32) + 1.0
    scores = pp.image_scores(reference.copy(), reference, "interp", 2)
    assert scores["ssim"] == pytest.approx(1.0) and scores["nmse"] == 0.0 and scores["psnr"] > 100
    assert pp._slices(reference[0], "interp", 2) == [1, 3, 5]  # TASC scores the inserted slices only
    labels = np.zeros((8, 8, 4), np.int64)
    labels[:4] = 1
    labels[4:6] = 2
    guess = labels.copy()
    guess[5] = 1
    dice = pp.label_scores(guess, labels)
    assert dice["dice_gm"] == pytest.approx(2 * 128 / (160 + 128))
    assert dice["dice_wm"] == pytest.approx(2 * 32 / (32 + 64)) and dice["dice_t"] == 1.0


def test_models_table_cell_puts_ours_next_to_the_paper():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_models_table", pp.ROOT / "docs" / "build_models_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    results = {"paper": {"rdst": pp.ARMS["rdst"]["paper"], "rdst_e": pp.ARMS["rdst_e"]["paper"]},
               "arms": [{"case": "rdst", "steps": 220, "train_seconds": 61.0, "summary": [
                   {"method": "rdst", "psnr": 25.5, "ssim": 0.81, "unet_dice_t": 0.9},
                   {"method": "bspline", "psnr": 24.3, "ssim": 0.83, "unet_dice_t": 0.88},
                   {"method": "HR (U-Net on HR)", "unet_dice_t": 0.95}]}]}
    cell = table.protocol_cell("rdst", results)
    assert "PSNR 25.50 vs 33.42 (bspline 24.30 vs the paper's bicubic 29.88)" in cell
    assert "Dice-T 0.900 vs 0.889 (HR 0.950 vs the paper's HR 0.952)" in cell and "`rdst_e`: not measured" in cell
    rehrseg = table.protocol_cell("rehrseg", results)  # REHRSeg's figure is its Eq. 1 ablation (own benchmark)
    assert "Table 4 0.8155 -> 0.8213" in rehrseg and "seeds" in rehrseg
