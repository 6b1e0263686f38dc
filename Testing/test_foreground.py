"""Background: the head mask, window skipping, and the classical answer outside the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE
from monai.inferers import sliding_window_inference
from scipy import ndimage

from JointSRSegLib import predict
from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.foreground import bounding_box, head_mask, mask_on_grid
from JointSRSegLib.geometry import insert_grid, subdivide_grid
from JointSRSegLib.inference.sliding import sliding_window_predict, window_slices
from JointSRSegLib.io import read_volume
from JointSRSegLib.volume import Volume


def _ellipsoid(shape=(48, 52, 40), radii=(16, 18, 12)) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grid, radii)) <= 1.0


def test_head_mask_covers_the_head_and_not_the_far_background():
    rng = np.random.default_rng(0)
    inside = _ellipsoid()
    shell = inside & ~ndimage.binary_erosion(inside, iterations=3)  # bright scalp around a dark skull/brain
    brain = ndimage.binary_erosion(inside, iterations=6)
    for background_noise in (0.0, 0.03):  # skull-stripped (exact zeros) and whole-head (noisy air)
        image = np.abs(rng.normal(0, background_noise, inside.shape)) + 0.9 * shell + 0.5 * brain
        mask = head_mask(Volume(image[None].astype(np.float32), (1.0, 1.0, 1.0), (0, 0, 0)))
        assert mask[inside].all()  # the dark ring between scalp and brain is filled, nothing is cut
        distance = ndimage.distance_transform_edt(~inside)
        assert distance[mask].max() < 11  # smoothing (2 mm) + margin (4 mm box): about 10 mm at most
        assert mask.mean() < 0.6 and not mask[distance > 11].any()


def test_mask_on_output_grids_follows_the_protocols():
    lr = Volume(np.zeros((1, 4, 5, 6), np.float32), (1.0, 1.0, 4.0), (3.0, 2.0, 1.0))
    mask = np.zeros(lr.shape, bool)
    mask[1, 2, 3] = True
    sr = mask_on_grid(mask, lr.grid, subdivide_grid(lr.grid, 4, 2))
    assert sr.shape == (4, 5, 24) and np.array_equal(np.flatnonzero(sr[1, 2]), np.arange(12, 16))
    interp = mask_on_grid(mask, lr.grid, insert_grid(lr.grid, 4, 2))
    assert interp.shape == (4, 5, 21) and np.array_equal(np.flatnonzero(interp[1, 2]), np.arange(11, 15))


def test_bounding_box_is_widened_to_a_window():
    mask = np.zeros((40, 40, 10), bool)
    mask[18:20, 30:33, 4] = True
    box = bounding_box(mask, minimum=(16, 16, 4))
    assert [b.stop - b.start for b in box] == [16, 16, 4]
    assert box[1].stop == 40 and box[0].start <= 18 and box[0].stop >= 20


class _Upsampler(torch.nn.Module):
    """A window-dependent toy head: a 3x3x3 conv, then x2 along the last axis; counts its calls."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        y = self.conv(x) + x.mean()  # the window's own statistics, like instance norm
        return {"same": y, "sr": torch.repeat_interleave(y[:, :1], 2, dim=-1)}


def test_sliding_windows_match_monai_and_skip_empty_ones():
    torch.manual_seed(0)
    net = _Upsampler().eval()
    image = torch.rand(1, 1, 30, 26, 20)
    ours = sliding_window_predict(net, image, (16, 16, 8), ["same", "sr"], torch.device("cpu"), 0.25)
    with torch.inference_mode():
        theirs = sliding_window_inference(image, (16, 16, 8), 1, lambda w: net(w)["same"], 0.25, mode="gaussian")
    assert torch.allclose(ours["same"], theirs, atol=1e-5)
    assert ours["sr"].shape == (1, 1, 30, 26, 40)
    mask = torch.zeros(30, 26, 20, dtype=torch.bool)
    mask[2:5, 2:5, 2:4] = True
    net.calls = 0
    skipped = sliding_window_predict(net, image, (16, 16, 8), ["same"], torch.device("cpu"), 0.25, mask=mask)
    ran = [s for s in window_slices((30, 26, 20), (16, 16, 8), 0.25) if mask[s].any()]
    assert net.calls == len(ran) < len(window_slices((30, 26, 20), (16, 16, 8), 0.25))
    covered = torch.zeros(30, 26, 20, dtype=torch.bool)
    for s in ran:
        covered[s] = True
    assert torch.all(skipped["same"][0][:, ~covered] == 0)  # never run, never invented
    # inside a window covered only by windows that ran, the blend equals the windows' own outputs
    with torch.inference_mode():
        alone = net(image[(slice(None), slice(None)) + ran[0]])["same"]
    assert torch.allclose(skipped["same"][(slice(None), slice(None)) + (slice(0, 4), slice(0, 4), slice(0, 2))],
                          alone[..., :4, :4, :2], atol=1e-5)  # fmt: skip


@pytest.fixture(scope="module")
def padded_thick_block() -> tuple[Volume, tuple[slice, ...]]:
    """A 64 x 64 x 48 block of the sample, padded with 32 empty voxels on every side, x4 thick slices."""
    hr = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz")
    pad = 32
    block = hr.array[:, 44:108, 70:134, 60:108]
    array = np.pad(block, [(0, 0)] + [(pad, pad)] * 3)
    origin = hr.grid.physical_points([[44 - pad, 70 - pad, 60 - pad]])[0]
    lr = simulate_thick_slices(Volume(array, hr.spacing, origin, hr.direction), 4, 2)
    content = tuple(slice(pad, pad + n) for n in block.shape[1:])
    return lr, content


def test_no_tissue_and_classical_sr_in_the_empty_border(padded_thick_block):
    lr, content = padded_thick_block
    result = predict(lr, model="swinsr-unetr-brain-small", tasks=("sr", "seg"), scale=4, threads=2, uncertainty=True)
    bspline = predict(lr, model="bspline", tasks=("sr",), scale=4).outputs["sr"].array[0].astype(np.float64)
    seg = result.outputs["seg"].array[0]
    sr = result.outputs["sr"].array[0].astype(np.float64)
    near = np.zeros(seg.shape, bool)
    near[tuple(slice(max(0, c.start - 10), c.stop + 10) for c in content)] = True
    value_range = float(lr.array.max() - lr.array.min())
    assert not seg[~near].any()  # no tissue more than 10 voxels from anything
    assert np.abs(sr - bspline)[~near].max() <= 0.01 * value_range
    assert not result.outputs["uncertainty_seg"].array[0][~near].any()
    assert (seg[near] > 0).mean() > 0.3  # the block itself is segmented
    assert result.report["model"]["foreground"]["fraction_of_input"] < 0.5
