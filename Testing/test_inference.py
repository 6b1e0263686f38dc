"""The inference engine: protocol grids for 3D and 2D models, seamless stitching, cancellation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA
from package_factory import TISSUE_LABELS, make_package

from JointSRSegLib import CancelToken, predict
from JointSRSegLib.errors import CancelledError, InputError
from JointSRSegLib.foreground import head_mask
from JointSRSegLib.geometry import insert_grid, subdivide_grid
from JointSRSegLib.inference.sliding import sliding_window_predict
from JointSRSegLib.io import read_volume
from JointSRSegLib.vocabulary import CALIBRATED_UNITS
from JointSRSegLib.volume import Volume


def _crop(volume: Volume, size=(18, 17, 13)) -> Volume:
    """A small block from the middle of a volume, with its geometry moved accordingly."""
    start = [(s - n) // 2 for s, n in zip(volume.shape, size)]
    array = volume.array[(slice(None),) + tuple(slice(a, a + n) for a, n in zip(start, size))]
    origin = volume.grid.physical_points([start])[0]
    return Volume(np.ascontiguousarray(array), volume.spacing, origin, volume.direction, source=volume.source)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("packages")
    return {
        "swinsr": make_package(
            folder,
            "swinsr_unetr",
            tasks=["sr", "seg"],
            package_scale=[1, 1, 2],
            protocol="sr",
            labels=TISSUE_LABELS,
            uncertainty=["sr_aleatoric", "seg_entropy"],
            in_channels=1,
            seg_channels=3,
            scale=(1, 1, 2),
            aleatoric=True,
        ),
        "tasc": make_package(
            folder,
            "tasc_swinmt",
            tasks=["interp", "seg"],
            package_scale={"factors": [2, 3], "factor_axis": "through_plane"},
            protocol="interp",
            labels=TISSUE_LABELS,
            uncertainty=["seg_entropy"],
            in_channels=1,
            seg_channels=3,
        ),
        "rdst": make_package(
            folder, "rdst", tasks=["sr"], package_scale=[1, 1, 2], protocol="sr", in_channels=1, scale=(1, 2)
        ),
        "rehrseg": make_package(
            folder,
            "rehrseg_seg_uasr",
            tasks=["seg"],
            package_scale=[1, 1, 2],
            protocol="sr",
            labels=TISSUE_LABELS,
            uncertainty=["seg_uasr"],
            segmenter={"in_channels": 1, "num_classes": 3, "scale": (1, 1, 2), "features": (8, 16, 32, 48)},
            teacher={"in_channels": 1, "num_classes": 3, "scale": 2, "slice_axis": 2, "features": (8, 16, 24, 32),
                     "blocks_per_layer": (1, 1, 1, 1)},
        ),
    }


@pytest.mark.parametrize("name", ("RAS", "PIR", "SAL"))
def test_3d_joint_model_outputs_on_protocol_grid(packages, name):
    lr = _crop(read_volume(DATA / "orientation" / f"{name}.nii.gz"))
    axis = 1
    result = predict(lr, model=packages["swinsr"], tasks=("sr", "seg"), scale=2, axis=axis, uncertainty=True)
    expected = subdivide_grid(lr.grid, 2, axis)
    for key in ("sr", "seg", "uncertainty_sr", "uncertainty_seg"):
        assert result.outputs[key].grid.almost_equal(expected), key
    seg = result.outputs["seg"].array
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2}
    for key in ("uncertainty_sr", "uncertainty_seg"):
        u = result.outputs[key].array
        assert u.min() >= 0.0 and u.max() <= 1.0 and u.std() > 0
    assert result.report["model"]["weights_sha256"] and result.report["model"]["device"].startswith("cpu")
    assert set(result.report["model"]["uncertainty"]) == {"uncertainty_sr", "uncertainty_seg"}


def test_rehrseg_package_gives_the_uasr_map_as_segmentation_uncertainty(packages, monkeypatch):
    """A ``seg_uasr`` package: with method ``uasr`` ``uncertainty_seg`` is the teacher's U on the HR grid (in
    [0, 1]); the teacher runs only when that map is asked for: ``auto`` gives the softmax entropy (UASR ranks
    label errors at chance on held-out scans), TTA the mutual information."""
    from JointSRSegLib.models.rehrseg_sr import REHRSegSR

    calls = []
    forward = REHRSegSR.forward
    monkeypatch.setattr(REHRSegSR, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    lr = _crop(read_volume(DATA / "orientation" / "RAS.nii.gz"))
    plain = predict(lr, model=packages["rehrseg"], tasks=("seg",), scale=2, axis=1)
    assert set(plain.outputs) == {"seg"} and not calls
    auto = predict(lr, model=packages["rehrseg"], tasks=("seg",), scale=2, axis=1, uncertainty=True)
    assert not calls and auto.report["model"]["uncertainty_kinds"] == {"uncertainty_seg": "entropy"}
    assert np.array_equal(auto.outputs["seg"].array, plain.outputs["seg"].array)
    result = predict(lr, model=packages["rehrseg"], tasks=("seg",), scale=2, axis=1, uncertainty=True,
                     uncertainty_method="uasr")
    assert calls
    expected = subdivide_grid(lr.grid, 2, 1)
    u = result.outputs["uncertainty_seg"]
    assert u.grid.almost_equal(expected) and result.outputs["seg"].grid.almost_equal(expected)
    assert 0.0 < u.array.min() and u.array.max() < 1.0 and u.array.std() > 0
    assert result.report["model"]["uncertainty_kinds"] == {"uncertainty_seg": "uasr"}
    assert np.array_equal(result.outputs["seg"].array, plain.outputs["seg"].array)
    calls.clear()
    tta = predict(lr, model=packages["rehrseg"], tasks=("seg",), scale=2, axis=1, uncertainty=True,
                  uncertainty_method="tta")
    assert not calls and tta.report["model"]["uncertainty_kinds"] == {"uncertainty_seg": "mutual_information"}
    with pytest.raises(InputError, match=r"uncertainty method 'uasr' does not apply: the UASR map is REHRSeg"):
        predict(lr, model=packages["swinsr"], tasks=("sr", "seg"), scale=2, axis=1, uncertainty=True,
                uncertainty_method="uasr")


def test_2d_pairwise_interpolation_keeps_acquired_slices(packages):
    lr = _crop(read_volume(DATA / "orientation" / "LPS.nii.gz"), (20, 19, 6))
    for factor in (2, 3):
        result = predict(lr, model=packages["tasc"], tasks=("interp", "seg"), scale=factor, axis=2, uncertainty=True)
        out = result.outputs["interp"]
        assert out.grid.almost_equal(insert_grid(lr.grid, factor, 2))
        np.testing.assert_allclose(out.array[0, :, :, ::factor], lr.array[0], rtol=1e-5, atol=1e-3)
        assert result.outputs["seg"].grid.almost_equal(out.grid)


def test_2d_smore_sr_along_any_axis(packages):
    lr = _crop(read_volume(DATA / "orientation" / "ASL.nii.gz"), (12, 11, 10))
    for axis in (0, 2):
        result = predict(lr, model=packages["rdst"], tasks=("sr",), scale=2, axis=axis)
        assert result.outputs["sr"].grid.almost_equal(subdivide_grid(lr.grid, 2, axis))
        assert np.isfinite(result.outputs["sr"].array).all()


def test_package_that_does_not_fit_is_refused(packages):
    lr = _crop(read_volume(DATA / "orientation" / "RAS.nii.gz"))
    with pytest.raises(InputError, match="factor 4"):
        predict(lr, model=packages["swinsr"], tasks=("sr",), scale=4, axis=1)
    two = Volume(np.concatenate([lr.array, lr.array]), lr.spacing, lr.origin, lr.direction)
    with pytest.raises(InputError, match="takes 1 channel"):
        predict(two, model=packages["swinsr"], tasks=("sr",), scale=2, axis=1)
    with pytest.raises(InputError, match="does sr"):
        predict(lr, model=packages["rdst"], tasks=("sr", "seg"), scale=2, axis=1)


class PointwiseSR(torch.nn.Module):
    """A per-voxel network with a pixel shuffle along the last axis: any seam would show."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        self.conv = torch.nn.Conv3d(1, factor, 1)

    def forward(self, x):
        y = self.conv(x)  # (B, R, X, Y, Z)
        b, r, *size = y.shape
        return {"sr": y.permute(0, 2, 3, 4, 1).reshape(b, 1, size[0], size[1], size[2] * r)}


def test_sliding_window_equals_whole_volume_inference():
    torch.manual_seed(0)
    net = PointwiseSR(3).eval()
    image = torch.rand(1, 1, 37, 29, 23)
    whole = net(image)["sr"]
    windows = []
    stitched = sliding_window_predict(
        net, image, (16, 16, 8), ["sr"], torch.device("cpu"), 0.25, 1, lambda done, total: windows.append(total)
    )
    assert len(windows) > 8  # really several windows
    torch.testing.assert_close(stitched["sr"], whole.detach(), atol=1e-4, rtol=0)


def test_cancellation_stops_the_run_and_nothing_is_written(packages, tmp_path):
    from JointSRSegLib.outputs import write_outputs

    lr = _crop(read_volume(DATA / "orientation" / "RAS.nii.gz"), (40, 40, 20))
    token = CancelToken()
    stages = []

    def progress(fraction, stage):
        stages.append(stage)
        if stage.startswith("running"):
            token.cancel()

    out_dir = tmp_path / "out"
    with pytest.raises(CancelledError):
        result = predict(lr, model=packages["swinsr"], tasks=("sr",), scale=2, axis=1, progress=progress, cancel=token)
        write_outputs(out_dir, result.outputs, "nii.gz", result.report)
    assert not out_dir.exists()
    assert sum(s.startswith("running") for s in stages) == 1  # stopped after the first window


def test_uncertainty_is_higher_where_the_input_is_ambiguous():
    """Self-SR on a smooth volume whose second half carries strong noise: the two plane families
    disagree there, so the SR uncertainty is higher on that half (and everything stays in [0, 1])."""
    rng = np.random.default_rng(0)
    x, y, z = np.mgrid[:32, :32, :8].astype(np.float32)
    image = 100 + 40 * np.sin(x / 5.0) * np.cos(y / 6.0) + 3 * z
    image[16:] += rng.normal(0, 25, size=image[16:].shape)
    volume = Volume(image[None].astype(np.float32), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    result = predict(volume, model="self", tasks=("sr",), scale=4, axis=2, uncertainty=True, max_steps=40,
                     time_budget=60)
    u = result.outputs["uncertainty_sr"]
    assert u.grid.almost_equal(result.outputs["sr"].grid)
    assert 0.0 <= u.array.min() and u.array.max() <= 1.0
    clean, noisy = u.array[0, :16].mean(), u.array[0, 16:].mean()
    assert noisy > 1.5 * clean, (clean, noisy)
    summary = result.report["model"]["uncertainty"]["uncertainty_sr"]  # calibrated: E|error| / range (issue #17)
    head = head_mask(result.outputs["sr"])
    assert summary["unit"] == CALIBRATED_UNITS["uncertainty_sr"] and summary["threshold"] == 0.05
    assert summary["mean_in_head"] == pytest.approx(u.array[0][head].mean(), abs=1e-5)
    assert summary["fraction_of_head_above_threshold"] == pytest.approx((u.array[0][head] >= 0.05).mean(), abs=1e-5)


def test_out_of_memory_is_retried_and_reported(packages, monkeypatch):
    """A (simulated) out-of-memory error in the forward pass is retried and recorded in the report."""
    import JointSRSegLib.inference.engine as engine

    real_forward = engine._forward
    calls = []

    def flaky_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_forward", flaky_forward)
    lr = _crop(read_volume(DATA / "orientation" / "RAS.nii.gz"))
    result = predict(lr, model=packages["swinsr"], tasks=("sr",), scale=2, axis=1)
    retries = result.report["model"]["retries"]
    assert len(calls) == 2 and len(retries) == 1 and retries[0]["error"] == "out of memory"
    assert result.outputs["sr"].grid.almost_equal(subdivide_grid(lr.grid, 2, 1))
