"""The CLI contract: outputs on the protocol grids, report.json, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ROOT

from JointSRSegLib.cli import main
from JointSRSegLib.geometry import insert_grid, subdivide_grid
from JointSRSegLib.io import read_volume, write_volume
from JointSRSegLib.volume import Volume


def _anisotropic(tmp_path: Path, name: str = "thick.nii.gz", spacing=(1.0, 1.0, 4.0), shape=(12, 10, 6)) -> Path:
    rng = np.random.default_rng(0)
    vol = Volume((rng.random((1, *shape)) * 100).astype(np.float32), spacing, (1.0, 2.0, 3.0))
    return write_volume(vol, tmp_path / name)


def test_info_reports_geometry(tmp_path, capsys):
    path = _anisotropic(tmp_path)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == [12, 10, 6] and info["spacing"] == [1.0, 1.0, 4.0]
    assert info["orientation"] == "LPS" and info["through_plane_axis"] == 2 and info["anisotropy"] == 4.0


def test_run_writes_outputs_on_protocol_grids_and_report(tmp_path, capsys):
    path = _anisotropic(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--input",
            str(path),
            "--tasks",
            "sr,interp",
            "--scale",
            "4",
            "--model",
            "bspline",
            "--out-dir",
            str(out),
        ]
    )
    assert code == 0
    lr = read_volume(path)
    sr, interp = read_volume(out / "sr.nii.gz"), read_volume(out / "interp.nii.gz")
    assert sr.grid.almost_equal(subdivide_grid(lr.grid, 4, 2), tol=1e-5)
    assert interp.grid.almost_equal(insert_grid(lr.grid, 4, 2), tol=1e-5)
    np.testing.assert_allclose(interp.array[0, :, :, ::4], lr.array[0], atol=1e-2)
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["id"] == "bspline" and report["through_plane_axis"] == 2
    assert report["inputs"]["size"] == [12, 10, 6] and "total" in report["timings_s"]
    assert report["peak_rss_mb"] > 0 and report["versions"]["SimpleITK"] != "not installed"
    assert sorted(p.name for p in out.iterdir()) == ["interp.nii.gz", "report.json", "sr.nii.gz"]


def test_run_nrrd_format_and_eval(tmp_path, capsys):
    hr = read_volume(_anisotropic(tmp_path, "hr.nii.gz", spacing=(1.0, 1.0, 1.0), shape=(8, 8, 16)))
    from JointSRSegLib.degradation import simulate_slice_gaps

    lr_path = write_volume(simulate_slice_gaps(hr, 2, 2), tmp_path / "lr.nrrd")
    out = tmp_path / "o"
    assert (
        main(
            [
                "run",
                "--input",
                str(lr_path),
                "--tasks",
                "interp",
                "--scale",
                "2",
                "--axis",
                "2",
                "--model",
                "linear",
                "--out-dir",
                str(out),
                "--format",
                "nrrd",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", "--pred", str(out / "interp.nrrd"), "--reference", str(tmp_path / "hr.nii.gz")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 10 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1


def test_eval_labels(tmp_path, capsys):
    a = np.zeros((1, 10, 10, 10), np.uint8)
    a[0, 2:6, 2:6, 2:6] = 1
    b = np.roll(a, 1, axis=1)
    pa = write_volume(Volume(a, (1, 1, 2), (0, 0, 0)), tmp_path / "a.nii.gz")
    pb = write_volume(Volume(b, (1, 1, 2), (0, 0, 0)), tmp_path / "b.nii.gz")
    assert main(["eval", "--pred", str(pa), "--reference", str(pb), "--labels"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["1"]["dice"] == pytest.approx(0.75) and m["1"]["hd95_mm"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- bad input


def _write_raw_nifti(path: Path, array: np.ndarray, pixdim=(1.0, 1.0, 1.0)) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_data_dtype(array.dtype)
    nib.save(nib.Nifti1Image(array, None, header), str(path))
    raw = bytearray(path.read_bytes())  # nibabel refuses to save a zero pixdim: patch the header bytes
    raw[80:92] = np.asarray(pixdim, "<f4").tobytes()
    path.write_bytes(bytes(raw))
    return path


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (extra CLI args, file named in the message, expected problem text)."""
    cases = {}
    cases["missing"] = (["--input", str(tmp / "nope.nii.gz")], "nope.nii.gz", "file not found")
    good = _anisotropic(tmp, "good.nii.gz")
    data = gzip.open(good).read()
    truncated = tmp / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(data[: len(data) // 2]))
    cases["truncated"] = (["--input", str(truncated)], "truncated.nii.gz", "truncated or corrupt")
    flat = sitk.GetImageFromArray(np.ones((10, 12), np.float32))
    sitk.WriteImage(flat, str(tmp / "slice2d.nii.gz"))
    cases["2d"] = (["--input", str(tmp / "slice2d.nii.gz")], "slice2d.nii.gz", "2D image")
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp / "rgb.nrrd"))
    cases["rgb"] = (["--input", str(tmp / "rgb.nrrd")], "rgb.nrrd", "(RGB/vector) image")
    nan = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    write_volume(Volume(nan, (1, 1, 3), (0, 0, 0)), tmp / "nan.nii.gz")
    cases["nan"] = (["--input", str(tmp / "nan.nii.gz")], "nan.nii.gz", "NaN or Inf")
    write_volume(Volume(np.full((6, 6, 6), 3.0, np.float32), (1, 1, 3), (0, 0, 0)), tmp / "const.nii.gz")
    cases["constant"] = (["--input", str(tmp / "const.nii.gz")], "const.nii.gz", "same value")
    _write_raw_nifti(tmp / "zero.nii", np.random.rand(5, 6, 7).astype(np.float32), pixdim=(0.0, 1.0, 3.0))
    cases["zero spacing"] = (["--input", str(tmp / "zero.nii")], "zero.nii", "must be positive")
    np.random.rand(7, 6, 5).astype(np.float32).tofile(tmp / "neg.raw")
    (tmp / "neg.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 5 6 7\nElementSpacing = -2 1 1\n"
        "ElementType = MET_FLOAT\nElementDataFile = neg.raw\n"
    )
    cases["negative spacing"] = (["--input", str(tmp / "neg.mhd")], "neg.mhd", "must be positive")
    cases["factor 9"] = (["--input", str(good), "--scale", "9"], "good.nii.gz", "scale factor 9")
    cases["factor 1"] = (["--input", str(good), "--scale", "1"], "good.nii.gz", "outside 2-8")
    iso = _anisotropic(tmp, "iso.nii.gz", spacing=(1.0, 1.0, 1.0))
    cases["isotropic auto"] = (["--input", str(iso)], "iso.nii.gz", "cannot detect the through-plane axis")
    other = _anisotropic(tmp, "t2.nii.gz", spacing=(1.0, 1.0, 5.0))
    cases["mismatched grids"] = (["--input", str(good), "--input", str(other)], "t2.nii.gz", "does not match")
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "truncated",
        "2d",
        "rgb",
        "nan",
        "constant",
        "zero spacing",
        "negative spacing",
        "factor 9",
        "factor 1",
        "isotropic auto",
        "mismatched grids",
    ],
)
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, capsys, case):
    inputs = tmp_path / "in"
    inputs.mkdir()
    args, named_file, problem = _bad_cases(inputs)[case]
    before = sorted(p.name for p in inputs.iterdir())
    out = tmp_path / "out"
    code = main(["run", *args, "--tasks", "sr", "--out-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert named_file in err and problem in err and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_output_that_would_overwrite_the_input_is_refused(tmp_path, capsys):
    path = _anisotropic(tmp_path, "sr.nii.gz")
    before = path.read_bytes()
    code = main(["run", "--input", str(path), "--tasks", "sr", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "sr.nii.gz" in err and "overwrite the input" in err
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["sr.nii.gz"]


def test_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    import JointSRSegLib.outputs as outputs

    path = _anisotropic(tmp_path)
    calls = []

    def failing_write(volume, target, compress=True):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(volume, target, compress)

    original = outputs.write_volume
    monkeypatch.setattr(outputs, "write_volume", failing_write)
    with pytest.raises(OSError):
        main(["run", "--input", str(path), "--tasks", "sr,interp", "--out-dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("jointsrseg")
    proc = subprocess.run(
        [str(exe), "run", "--input", str(tmp_path / "missing.nii"), "--out-dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"jointsrseg: error: {tmp_path / 'missing.nii'}: file not found"


def test_models_lists_baselines_and_self(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("bspline", "lanczos", "contour", "self"):
        assert name in out


def test_batch_resumes_and_shards(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        _anisotropic(inputs, f"case{i}.nii.gz")
    (inputs / "notes.txt").write_text("not a volume")
    out = tmp_path / "out"
    args = ["batch", "--input-dir", str(inputs), "--out-dir", str(out), "--scale", "2", "--model", "linear"]
    assert main([*args, "--shard", "1/2"]) == 0  # only case1
    assert sorted(p.name for p in out.iterdir()) == ["case1"]
    # An interrupted earlier run left a folder without report.json: it is redone, finished ones are skipped.
    (out / "case0").mkdir()
    capsys.readouterr()
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "skip (done): case1.nii.gz" in log and "done: case0.nii.gz" in log and "done: case2.nii.gz" in log
    for i in range(3):
        assert (out / f"case{i}" / "sr.nii.gz").exists() and (out / f"case{i}" / "report.json").exists()


def test_self_supervised_mode_through_the_cli(tmp_path, capsys):
    path = _anisotropic(tmp_path, shape=(24, 22, 6))
    out = tmp_path / "self"
    code = main(["run", "--input", str(path), "--tasks", "sr", "--scale", "4", "--model", "self",
                 "--time-budget", "30", "--out-dir", str(out)])  # the epoch cap stops it early
    assert code == 0
    sr = read_volume(out / "sr.nii.gz")
    assert sr.grid.almost_equal(subdivide_grid(read_volume(path).grid, 4, 2), tol=1e-5)
    report = json.loads((out / "report.json").read_text())
    training = report["model"]["training"]["sr"]
    assert report["model"]["id"] == "self"
    assert training["training"]["steps"] > 0 and len(training["training"]["curve"]) > 0
