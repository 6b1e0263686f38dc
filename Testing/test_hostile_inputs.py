"""Hostile and malformed inputs at every door (issue 15): the corpus is generated at test time, small.

Classes: detached headers escaping their folder, zip bombs and unknown zip entries, packages that could
never load, deep/large model.json, invalid geometry fields, label values the dtype cannot hold, DICOM
folders with several or inconsistent series, ``eval`` on non-finite or non-label inputs, the CLI's
one-line rule (out-dir, usage errors), SIGTERM and stale staging folders, the Python API's arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from JointSRSegLib.cli import main
from JointSRSegLib.errors import InputError
from JointSRSegLib.io import read_volume, write_volume
from JointSRSegLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"TOP-SECRET-BYTES" * 4  # 64 bytes: exactly a 4x4x4 uint8 volume


def _volume(shape=(6, 6, 4), spacing=(1.0, 1.0, 3.0), dtype=np.float32, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume((rng.random(shape) * 100).astype(dtype), spacing, (0.0, 0.0, 0.0), np.eye(3))


def _one_line_error(capsys_or_text) -> str:
    text = capsys_or_text if isinstance(capsys_or_text, str) else capsys_or_text.readouterr().err
    err = text.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("jointsrseg: error:"), err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- 1a detached headers

NHDR = (
    "NRRD0004\ntype: unsigned char\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 4 4\n"
    "space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nencoding: raw\n"
    "space origin: (0,0,0)\n{data}\n"
)
MHD = (
    "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
    "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = 1 1 1\nDimSize = 4 4 4\n"
    "ElementType = MET_UCHAR\nElementDataFile = {data}\n"
)


@pytest.fixture
def header_dir(tmp_path) -> Path:
    """``tmp/outside/secret.raw`` (the file an attacker wants) and ``tmp/inside/`` for the headers."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.raw").write_bytes(SECRET)
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "sub").mkdir()
    (tmp_path / "inside" / "link.raw").symlink_to(tmp_path / "outside" / "secret.raw")
    (tmp_path / "inside" / "sub" / "uplink").symlink_to(tmp_path / "outside")
    return tmp_path / "inside"


ESCAPES = [
    ("a.nhdr", "data file: ../outside/secret.raw", "outside the header's folder"),
    ("a.nhdr", "datafile: ../outside/secret.raw", "outside the header's folder"),
    ("a.nhdr", "data file: sub/../../outside/secret.raw", "outside the header's folder"),
    ("a.nhdr", "data file: {abs}", "absolute path"),
    ("a.nhdr", "data file: link.raw", "resolves outside"),
    ("a.nhdr", "data file: sub/uplink/secret.raw", "resolves outside"),
    ("a.nhdr", "data file: LIST\n../outside/secret.raw", "outside the header's folder"),
    ("a.nhdr", "data file: ../outside/s%d.raw 0 3 1", "outside the header's folder"),
    ("a.nrrd", "data file: ../outside/secret.raw", "outside the header's folder"),
    ("a.mhd", "../outside/secret.raw", "outside the header's folder"),
    ("a.mhd", "{abs}", "absolute path"),
    ("a.mhd", "link.raw", "resolves outside"),
    ("a.mhd", "LIST\n../outside/secret.raw", "outside the header's folder"),
    ("a.mhd", "../outside/s%03d.raw 1 4 1", "outside the header's folder"),
    ("a.mha", "../outside/secret.raw", "outside the header's folder"),
]


@pytest.mark.parametrize(("name", "data", "message"), ESCAPES, ids=[f"{n}:{d[:30]}" for n, d, _ in ESCAPES])
def test_detached_header_cannot_read_outside_its_folder(header_dir, name, data, message):
    data = data.replace("{abs}", str(header_dir.parent / "outside" / "secret.raw"))
    template = NHDR if name.endswith((".nhdr", ".nrrd")) else MHD
    header = header_dir / name
    header.write_text(template.format(data=data))
    with pytest.raises(InputError, match=message) as error:
        read_volume(header)
    assert str(header) in str(error.value)


@pytest.mark.parametrize(("name", "data"), [("ok.nhdr", "data file: ok.raw"), ("ok.mhd", "ok.raw"),
                                            ("ok2.nhdr", "data file: sub/ok.raw")])
def test_detached_header_inside_its_folder_still_reads(header_dir, name, data):
    target = header_dir / ("sub/ok.raw" if "sub/" in data else "ok.raw")
    target.write_bytes(bytes(range(64)))
    template = NHDR if name.endswith(".nhdr") else MHD
    (header_dir / name).write_text(template.format(data=data))
    volume = read_volume(header_dir / name)
    assert volume.shape == (4, 4, 4) and int(volume.array.max()) == 63


def test_cli_refuses_escaping_header_in_one_line(header_dir, capsys):
    (header_dir / "evil.nhdr").write_text(NHDR.format(data="data file: ../outside/secret.raw"))
    assert main(["info", str(header_dir / "evil.nhdr")]) == 2
    assert "outside the header's folder" in _one_line_error(capsys)


# --------------------------------------------------------------------------- 2 geometry headers

NRRD_GEOMETRY = [
    ("spacings", "sizes: 4 4 4\nspacings: 1 1 nan\n", r"spacing\[2\] is NaN"),
    ("spacings inf", "sizes: 4 4 4\nspacings: inf 1 1\n", r"spacing\[0\] is infinite"),
    ("spacings zero", "sizes: 4 4 4\nspacings: 1 0 1\n", r"spacing\[1\] is 0"),
    ("direction nan", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,nan)\n",
     r"spacing\[2\] is NaN"),
    ("direction zero", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,0,0) (0,0,1)\n",
     r"spacing\[1\] is 0"),
    ("singular", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (1,0,0) (0,0,1)\n",
     "not orthonormal"),
    ("sheared", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (0.3,1,0) (0,0,1)\n",
     "not orthonormal"),
    ("origin nan", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
     "space origin: (0,nan,0)\n", r"origin\[1\] is NaN"),
    ("origin inf", "sizes: 4 4 4\nspace: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
     "space origin: (-inf,0,0)\n", r"origin\[0\] is infinite"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "fields", "message"), NRRD_GEOMETRY, ids=[c for c, _, _ in NRRD_GEOMETRY])
def test_nrrd_geometry_fields_are_validated_and_named(tmp_path, case, fields, message):
    path = tmp_path / "g.nrrd"
    path.write_bytes(b"NRRD0004\ntype: unsigned char\ndimension: 3\n" + fields.encode() + b"encoding: raw\n\n"
                     + bytes(64))  # fmt: skip
    with pytest.raises(InputError, match=message):
        read_volume(path)


META_GEOMETRY = [
    ("spacing nan", {"ElementSpacing": "1 nan 1"}, r"spacing\[1\] is NaN"),
    ("spacing negative", {"ElementSpacing": "1 1 -2"}, r"spacing\[2\] is -2.0"),
    ("offset nan", {"Offset": "0 0 nan"}, r"origin\[2\] is NaN"),
    ("singular matrix", {"TransformMatrix": "1 0 0 1 0 0 0 0 1"}, "not orthonormal"),
    ("matrix nan", {"TransformMatrix": "1 0 0 0 nan 0 0 0 1"}, r"direction\[1\]\[1\] is NaN"),
]


@pytest.mark.parametrize(("case", "fields", "message"), META_GEOMETRY, ids=[c for c, _, _ in META_GEOMETRY])
def test_metaimage_geometry_fields_are_validated_and_named(tmp_path, case, fields, message):
    text = MHD.format(data="LOCAL")
    for key, value in fields.items():
        lines = [f"{key} = {value}" if line.startswith(key) else line for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    path = tmp_path / "g.mha"
    path.write_bytes(text.encode() + bytes(64))
    with pytest.raises(InputError, match=message):
        read_volume(path)


@pytest.mark.parametrize(
    ("field", "message"),
    [("pixdim", r"spacing\[1\] is NaN"), ("qoffset_y", r"qoffset\[1\] is NaN"), ("srow_z", r"srow_z\[3\] is NaN")],
)
def test_nifti_geometry_fields_are_validated_and_named(tmp_path, field, message):
    import nibabel as nib

    image = nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    image.header.set_sform(np.eye(4), code=1)
    header = image.header
    if field == "pixdim":
        header["pixdim"][2] = np.nan
    elif field == "srow_z":
        header["srow_z"][3] = np.nan
    else:
        header[field] = np.nan
    path = tmp_path / "g.nii"
    nib.save(nib.Nifti1Image(image.get_fdata(dtype=np.float32), None, header), path)
    raw = bytearray(path.read_bytes())  # nibabel may repair fields on save: write the NaN into the bytes
    offsets = {"pixdim": 76 + 4 * 2, "qoffset_y": 272, "srow_z": 328 + 12}
    raw[offsets[field] : offsets[field] + 4] = struct.pack("<f", np.nan)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=message):
        read_volume(path)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (np.int64, [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, 7]),
        (np.int64, [2**53 + 1, 5, 2**40, -(2**33)]),
        (np.uint32, [2**32 - 1, 2**31 + 1, 0, 3]),
        (np.int32, [-(2**31), 2**24 + 1, 1, 2]),
        (np.int16, [-32768, 32767, -1, 0]),
        (np.uint64, [2**64 - 1, 2**63, 1, 0]),
    ],
)
def test_label_values_survive_nearest_upsampling_exactly(dtype, values):
    from JointSRSegLib.api import predict

    rng = np.random.default_rng(0)
    array = np.asarray(values, dtype=dtype)[rng.integers(0, len(values), size=(4, 4, 3))]
    result = predict(Volume(array, (1, 1, 3), (0, 0, 0)), model="nearest", tasks=("sr",), scale=2, axis=2)
    out = result.outputs["sr"].array
    assert out.dtype == dtype
    assert set(np.unique(out).tolist()) <= set(np.asarray(values, dtype=dtype).tolist())
    np.testing.assert_array_equal(out[0, :, :, ::2], array)  # sr x2: slab i -> HR slices 2i, 2i+1


def test_float_label_map_that_uint8_cannot_hold_is_refused():
    from JointSRSegLib.baselines import upsample_labels

    labels = Volume(np.full((4, 4, 3), 300.0, dtype=np.float32), (1, 1, 3), (0, 0, 0))
    with pytest.raises(InputError, match="outside 0-255"):
        upsample_labels(labels, "sr", 2, 2)


# --------------------------------------------------------------------------- 3 DICOM


def _write_series(folder: Path, uid: str, sizes=(8, 8, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, size in enumerate(sizes):
        image = sitk.GetImageFromArray((np.arange(size * size).reshape(1, size, size) % 50 + k).astype(np.int16))
        image.SetSpacing((1.0, 1.0, 2.0))
        tags = {
            "0020|000e": uid, "0020|000d": "1.2.3", "0008|0060": "MR", "0020|0032": f"0\\0\\{2.0 * k}",
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k + 1), "0008|0018": f"{uid}.{k}",
        }  # fmt: skip
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{uid}-{k}.dcm"))
        writer.Execute(image)


def test_dicom_folder_with_two_series_lists_them_and_series_chooses(tmp_path, capsys):
    _write_series(tmp_path / "d", "1.2.3.4")
    _write_series(tmp_path / "d", "1.2.3.5", sizes=(6, 6, 6, 6))
    with pytest.raises(InputError, match=r"2 DICOM series: 1\.2\.3\.4 \(3 files\), 1\.2\.3\.5 \(4 files\).*--series"):
        read_volume(tmp_path / "d")
    assert read_volume(tmp_path / "d", series="1.2.3.5").shape == (6, 6, 4)
    with pytest.raises(InputError, match="no DICOM series '9.9'"):
        read_volume(tmp_path / "d", series="9.9")
    out = tmp_path / "o"
    args = ["run", "--input", str(tmp_path / "d"), "--scale", "2", "--axis", "2", "--out-dir", str(out)]
    assert main(args) == 2
    assert "--series" in _one_line_error(capsys)
    assert main([*args, "--series", "1.2.3.4"]) == 0
    assert read_volume(out / "sr.nii.gz").shape == (8, 8, 6)


def test_dicom_series_with_mixed_slice_sizes_says_what_differs(tmp_path):
    _write_series(tmp_path / "d", "1.2.3.6", sizes=(8, 8, 6))
    with pytest.raises(InputError, match=r"inconsistent: slice size differs: 8x8 in 2 file\(s\).*6x6 in 1"):
        read_volume(tmp_path / "d")


def test_itk_warnings_are_silenced_while_reading(tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not dicom")
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path / "empty")
    captured = capfd.readouterr()
    assert "GDCMSeriesFileNames" not in captured.err + captured.out
    assert sitk.ProcessObject.GetGlobalWarningDisplay()  # restored afterwards


# --------------------------------------------------------------------------- 4 eval


def _eval(capsys, pred: Path, ref: Path, *extra) -> tuple[int, str, str]:
    code = main(["eval", "--pred", str(pred), "--reference", str(ref), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_eval_identical_images_prints_valid_json_with_null_psnr(tmp_path, capsys):
    path = write_volume(_volume(), tmp_path / "a.nii.gz")
    code, out, _ = _eval(capsys, path, path)
    assert code == 0
    result = _strict_json(out)
    assert result["psnr"] is None and result["ssim"] == pytest.approx(1.0)


def test_eval_constant_volumes_print_valid_json(tmp_path, capsys):
    const = _volume()
    const = const.with_array(np.full_like(const.array, 5.0))
    a = write_volume(const, tmp_path / "a.nii.gz")
    b = write_volume(_volume(), tmp_path / "b.nii.gz")
    code, out, _ = _eval(capsys, a, b)
    assert code == 0
    _strict_json(out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_eval_refuses_non_finite_voxels(tmp_path, capsys, bad):
    vol = _volume()
    array = vol.array.copy()
    array[0, 1, 2, 3] = bad
    a = write_volume(vol.with_array(array), tmp_path / "a.nii.gz")
    b = write_volume(vol, tmp_path / "b.nii.gz")
    code, _, err = _eval(capsys, a, b)
    assert code == 2
    assert "NaN or Inf" in _one_line_error(err)


def test_eval_labels_refuses_float_image_and_accepts_whole_numbers(tmp_path, capsys):
    image = write_volume(_volume(), tmp_path / "img.nii.gz")
    labels = _volume().with_array(np.rint(_volume().array / 50).astype(np.float32))
    lab = write_volume(labels, tmp_path / "lab.nii.gz")
    code, _, err = _eval(capsys, image, lab, "--labels")
    assert code == 2
    assert "not a label map" in _one_line_error(err)
    code, out, _ = _eval(capsys, lab, lab, "--labels")
    assert code == 0
    _strict_json(out)


# --------------------------------------------------------------------------- 5 one-line rule


def _out_dir_case(tmp_path: Path, case: str) -> Path:
    if case == "file":
        (tmp_path / "f").write_text("x")
        return tmp_path / "f"
    if case == "dangling symlink":
        (tmp_path / "link").symlink_to(tmp_path / "nowhere")
        return tmp_path / "link"
    if case == "under a file":
        (tmp_path / "f").write_text("x")
        return tmp_path / "f" / "sub" / "out"
    if case == "under a dangling symlink":
        (tmp_path / "link").symlink_to(tmp_path / "nowhere")
        return tmp_path / "link" / "out"
    return Path("/proc/jointsrseg-test-out")


@pytest.mark.parametrize("case", ["file", "dangling symlink", "under a file", "under a dangling symlink", "/proc"])
@pytest.mark.parametrize("command", ["run", "batch"])
def test_unusable_out_dir_is_refused_before_any_work(tmp_path, capsys, monkeypatch, case, command):
    import JointSRSegLib.api as api

    volume = write_volume(_volume(), tmp_path / "in.nii.gz")
    out = _out_dir_case(tmp_path, case)
    monkeypatch.setattr(api, "predict", lambda *a, **k: pytest.fail("work started"))
    if command == "run":
        args = ["run", "--input", str(volume), "--out-dir", str(out)]
    else:
        args = ["batch", "--input-dir", str(tmp_path), "--out-dir", str(out)]
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    assert "--out-dir" in _one_line_error(capsys)
    assert sorted(tmp_path.rglob("*")) == before


USAGE_ERRORS = [
    ["run", "--input", "x.nii", "--out-dir", "o", "--format", "tiff"],
    ["run", "--input", "x.nii", "--out-dir", "o", "--threads", "-2"],
    ["run", "--input", "x.nii", "--out-dir", "o", "--threads", "0"],
    ["run", "--input", "x.nii", "--out-dir", "o", "--threads", "many"],
    ["run", "--input", "x.nii", "--out-dir", "o", "--device", "tpu"],
    ["run", "--input", "x.nii", "--out-dir", "o", "--bogus"],
    ["run", "--out-dir", "o"],
    ["frobnicate"],
    [],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=[" ".join(a[-2:]) or "empty" for a in USAGE_ERRORS])
def test_usage_errors_are_one_line_with_help_hint(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = _one_line_error(capsys)
    assert "--help" in err


# --------------------------------------------------------------------------- 6 interruption

_SLOW_RUN = """
import sys, time
sys.path.insert(0, {root!r})
import JointSRSegLib.outputs as outputs
from JointSRSegLib.cli import main
original = outputs.write_volume
def slow(volume, path, *a, **k):
    out = original(volume, path, *a, **k)
    open(path, "ab").write(b"partial")
    print("STAGED", flush=True)
    time.sleep(60)
    return out
outputs.write_volume = slow
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_write_cleans_up_and_exits_143(tmp_path):
    volume = write_volume(_volume(), tmp_path / "in.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN.format(root=str(ROOT)), "run", "--input", str(volume), "--scale", "2",
         "--out-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.time() + 40
    line = ""
    while "STAGED" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    assert "STAGED" in line
    assert [p for p in out.iterdir() if p.name.startswith(".jointsrseg-")]  # staging exists now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert err.strip() == "jointsrseg: terminated (SIGTERM); nothing was written"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_of_dead_processes_is_removed_live_ones_kept(tmp_path):
    from JointSRSegLib.outputs import write_outputs

    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".jointsrseg-{_dead_pid()}-abc123"
    dead.mkdir()
    (dead / "sr.nii.gz").write_bytes(b"partial")
    alive = out / f".jointsrseg-{os.getppid()}-def456"
    alive.mkdir()
    unrelated = out / ".jointsrseg-notapid"
    unrelated.mkdir()
    write_outputs(out, {"sr": _volume()}, "nii.gz", {"ok": True})
    names = sorted(p.name for p in out.iterdir())
    assert dead.name not in names
    assert alive.name in names and unrelated.name in names
    assert "sr.nii.gz" in names and "report.json" in names


def test_staging_folder_names_carry_the_pid(tmp_path, monkeypatch):
    import JointSRSegLib.outputs as outputs

    seen = []
    original = outputs.write_volume

    def spy(volume, path, *a, **k):
        seen.append(Path(path).parent.name)
        return original(volume, path, *a, **k)

    monkeypatch.setattr(outputs, "write_volume", spy)
    outputs.write_outputs(tmp_path, {"sr": _volume()}, "nii.gz", None)
    assert seen and seen[0].startswith(f".jointsrseg-{os.getpid()}-")


def test_failed_rename_restores_previous_outputs(tmp_path, monkeypatch):
    import JointSRSegLib.outputs as outputs

    out = tmp_path / "out"
    outputs.write_outputs(out, {"sr": _volume(seed=1)}, "nii.gz", {"run": 1})
    old_sr, old_report = (out / "sr.nii.gz").read_bytes(), (out / "report.json").read_bytes()
    calls = []
    real_replace = os.replace

    def flaky(src, dst):
        calls.append(dst)
        if Path(dst).name == "report.json" and Path(src).parent.name.startswith(".jointsrseg-") \
                and not Path(src).name.startswith(".old-"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky)
    with pytest.raises(OSError):
        outputs.write_outputs(out, {"sr": _volume(seed=2)}, "nii.gz", {"run": 2})
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert (out / "sr.nii.gz").read_bytes() == old_sr
    assert (out / "report.json").read_bytes() == old_report
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "sr.nii.gz"]


# --------------------------------------------------------------------------- 1b/1c model packages


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    import torch

    from JointSRSegLib.models import build
    from JointSRSegLib.packaging import save_package

    torch.manual_seed(0)
    meta = {
        "id": "hostile-test", "version": "1.0.0", "name": "RDST tiny", "description": "tests", "tasks": ["sr"],
        "scale": [1, 1, 4], "protocol": "sr", "inputs": [{"name": "T1", "modality": "MR"}],
        "intensity_normalization": {"method": "percentile", "lower": 0.5, "upper": 99.5}, "labels": [],
        "training_data": {}, "metrics": {}, "license": "Apache-2.0", "intended_use": "tests", "uncertainty": [],
        "expected_runtime": {},
    }  # fmt: skip
    return save_package(build("rdst", "tiny").eval(), tmp_path_factory.mktemp("pkg") / "pkg", meta)


def _copy_package(source: Path, dest: Path, meta_changes=None, config_changes=None, weights: bytes | None = None):
    from JointSRSegLib.packaging import sha256_bytes

    shutil.copytree(source, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta.update(meta_changes or {})
    meta["config"] = {**meta["config"], **(config_changes or {})}
    if weights is not None:
        (dest / "model.safetensors").write_bytes(weights)
    meta["weights_sha256"] = sha256_bytes((dest / "model.safetensors").read_bytes())
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def _state(source: Path) -> dict:
    from safetensors.torch import load

    return dict(load((source / "model.safetensors").read_bytes()))


def _weights(state: dict) -> bytes:
    from safetensors.torch import save

    return save(state)


def _bad_weights(source: Path, kind: str) -> bytes:
    import torch

    state = _state(source)
    first = sorted(state)[0]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return os.urandom(256)
    if kind == "truncated":
        return (source / "model.safetensors").read_bytes()[:-40]
    if kind == "huge header":
        return struct.pack("<Q", 2**40) + b"{}"
    if kind == "no tensors":
        return struct.pack("<Q", 2) + b"{}"
    if kind == "renamed":
        state["not." + first] = state.pop(first)
    elif kind == "missing":
        state.pop(first)
    elif kind == "extra":
        state["extra.weight"] = torch.zeros(3)
    elif kind == "shape":
        state[first] = torch.zeros(*state[first].shape, 2)
    elif kind == "dtype":
        state[first] = torch.zeros(state[first].shape, dtype=torch.int32)
    return _weights(state)


WEIGHT_CASES = {
    "empty": "empty or truncated", "garbage": "not a valid safetensors", "truncated": "data_offsets",
    "huge header": "not a valid safetensors", "no tensors": "holds no tensors", "renamed": "missing 1 tensor",
    "missing": "missing 1 tensor", "extra": "1 unexpected tensor", "shape": "has shape", "dtype": "has dtype I32",
}  # fmt: skip


@pytest.mark.parametrize("kind", list(WEIGHT_CASES))
def test_import_refuses_weights_that_can_never_load(tiny_package, tmp_path, kind):
    from JointSRSegLib.packaging import import_model

    bad = _copy_package(tiny_package, tmp_path / "bad", weights=_bad_weights(tiny_package, kind))
    with pytest.raises(InputError, match=WEIGHT_CASES[kind]):
        import_model(bad, tmp_path / "models")
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


CONFIG_CASES = [
    ({"window_size": -4}, r"config.window_size is -4"),
    ({"window_size": 0}, r"config.window_size is 0"),
    ({"window_size": 100000}, r"between 0 and 4096"),
    ({"window_size": 1000}, r"at most 64"),
    ({"embed_dim": 4096, "num_dense_blocks": 64}, r"parameters; a package holds at most"),
    ({"mlp_ratio": float("nan")}, r"config.mlp_ratio is nan"),
    ({"mlp_ratio": 1e300}, r"config.mlp_ratio"),
    ({"num_heads": "six"}, r"config does not fit"),
    ({"scale": [4] * 100}, r"lists 100 values"),
]


@pytest.mark.parametrize(("changes", "message"), CONFIG_CASES, ids=[str(c)[:40] for c, _ in CONFIG_CASES])
def test_import_bounds_config_values(tiny_package, tmp_path, changes, message):
    from JointSRSegLib.packaging import import_model

    bad = _copy_package(tiny_package, tmp_path / "bad", config_changes=changes)
    started = time.perf_counter()
    with pytest.raises(InputError, match=message):
        import_model(bad, tmp_path / "models")
    assert time.perf_counter() - started < 20  # built on the meta device: nothing allocated


def test_import_of_a_good_package_still_works(tiny_package, tmp_path):
    from JointSRSegLib.packaging import import_model

    installed = import_model(tiny_package, tmp_path / "models")
    assert installed.build_model() is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200000 + "]" * 200000, "nests"),
        ("[" * 65 + "]" * 65, "nests 65 levels"),
        ('{"x": "' + "a" * (1024 * 1024 + 10) + '"}', "at most 1048576 bytes"),
        ('{"id": "x",', "not valid JSON"),
        ("\xff\xfe", "not valid JSON"),
    ],
    ids=["200000 deep", "65 deep", "over 1 MiB", "truncated", "not utf-8"],
)
def test_model_json_size_and_depth_are_bounded(tiny_package, tmp_path, text, message):
    from JointSRSegLib.packaging import load_package

    bad = tmp_path / "bad"
    shutil.copytree(tiny_package, bad)
    (bad / "model.json").write_bytes(text.encode("utf-8") if text != "\xff\xfe" else b"\xff\xfe")
    with pytest.raises(InputError, match=message):
        load_package(bad)


def _zip(path: Path, package: Path, extra: dict[str, bytes] | None = None, prefix: str = "",
         level: int | None = None) -> Path:  # fmt: skip
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name in ("model.json", "model.safetensors"):
            archive.write(package / name, prefix + name)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"evil.sh": b"rm -rf /"}, "entries a model package does not have: 'evil.sh'"),
        ({"docs/notes.txt": b"x"}, "does not have: 'docs/notes.txt'"),
        ({"model.json.bak": b"{}"}, "does not have"),
        ({"sub/model.safetensors": b"x"}, "does not have"),
        ({"README.md": b"\0" * (2 * 1024**2)}, "expands"),
        ({"model.safetensors": b"again"}, "twice"),
    ],
    ids=["script", "folder", "backup", "nested weights", "bomb member", "duplicate"],
)
def test_import_zip_refuses_unknown_entries_and_bombs(tiny_package, tmp_path, extra, message):
    import warnings

    from JointSRSegLib.packaging import import_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive = _zip(tmp_path / "p.zip", tiny_package, extra)
    with pytest.raises(InputError, match=message):
        import_model(archive, tmp_path / "models")
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_import_zip_refuses_more_than_100_mb_uncompressed(tiny_package, tmp_path):
    from JointSRSegLib.packaging import import_model

    zeros = b"\0" * (101 * 1024**2)
    archive = _zip(tmp_path / "p.zip", tiny_package, {"README.md": zeros}, level=1)
    assert archive.stat().st_size < 2 * 1024**2
    with pytest.raises(InputError, match="at most 104,857,600 bytes"):
        import_model(archive, tmp_path / "models")


def test_import_zip_with_readme_installs_only_package_files(tiny_package, tmp_path):
    from JointSRSegLib.packaging import import_model

    archive = _zip(tmp_path / "p.zip", tiny_package, {"pkg/README.md": b"# card"}, prefix="pkg/")
    installed = import_model(archive, tmp_path / "models")
    assert sorted(p.name for p in installed.path.iterdir()) == ["README.md", "model.json", "model.safetensors"]


def test_import_folder_copies_only_package_files(tiny_package, tmp_path):
    from JointSRSegLib.packaging import import_model

    folder = tmp_path / "src"
    shutil.copytree(tiny_package, folder)
    (folder / "train.log").write_text("junk")
    (folder / "checkpoints").mkdir()
    installed = import_model(folder, tmp_path / "models")
    assert sorted(p.name for p in installed.path.iterdir()) == ["model.json", "model.safetensors"]


def test_cli_import_model_refusal_is_one_line(tiny_package, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOINTSRSEG_MODELS", str(tmp_path / "models"))
    bad = _copy_package(tiny_package, tmp_path / "bad", config_changes={"window_size": -1})
    assert main(["import-model", str(bad)]) == 2
    assert "window_size is -1" in _one_line_error(capsys)


# --------------------------------------------------------------------------- 7 the Python API


API_CASES = {
    "inputs None": ({"inputs": None}, "inputs must be"),
    "inputs int": ({"inputs": 42}, "inputs must be"),
    "inputs empty list": ({"inputs": []}, "inputs must be"),
    "inputs empty path": ({"inputs": ""}, "empty path"),
    "model None": ({"model": None}, "model must be"),
    "scale None": ({"scale": None}, "scale must be an integer"),
    "scale list": ({"scale": [4]}, "scale must be an integer"),
    "scale str": ({"scale": "4"}, "scale must be an integer"),
    "scale nan": ({"scale": float("nan")}, "scale must be an integer"),
    "scale 2.5": ({"scale": 2.5}, "must be an integer"),
    "tasks None": ({"tasks": None}, "tasks must be"),
    "tasks ints": ({"tasks": [1, 2]}, "tasks must be"),
    "tasks unknown": ({"tasks": ["sr", "denoise"]}, "unknown task"),
    "axis x": ({"axis": "x"}, "axis must be 0, 1, 2 or 'auto'"),
    "axis 1.5": ({"axis": 1.5}, "axis must be 0, 1, 2 or 'auto'"),
    "axis 3": ({"axis": 3}, "axis must be 0, 1, 2 or 'auto'"),
    "axis True": ({"axis": True}, "axis must be"),
    "cancel object": ({"cancel": object()}, "cancel must be a CancelToken"),
    "progress int": ({"progress": 3}, "progress must be a callable"),
    "uncertainty str": ({"uncertainty": "yes"}, "uncertainty must be True or False"),
    "device int": ({"device": 0}, "unknown device 0; choose from auto, cpu, cuda, mps"),
    "misspelt option": ({"time_buget": 3}, "unknown option.*'time_buget' \\(did you mean 'time_budget'\\?\\)"),
    "unknown option": ({"colour": "red"}, "unknown option.*'colour'"),
    "threads -2": ({"threads": -2}, "threads must be a positive integer"),
    "threads str": ({"threads": "2"}, "threads must be a positive integer"),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_predict_bad_arguments_raise_input_error(case):
    from JointSRSegLib.api import predict

    changes, message = API_CASES[case]
    kwargs = {"inputs": _volume(), "model": "bspline", "tasks": ("sr",), "scale": 2, "axis": "auto", **changes}
    inputs = kwargs.pop("inputs")
    with pytest.raises(InputError, match=message) as error:
        predict(inputs, **kwargs)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("path", ["", "   "])
def test_read_volume_of_an_empty_path_is_refused(path):
    with pytest.raises(InputError, match="non-empty"):
        read_volume(path)


def test_predict_still_accepts_good_arguments():
    from JointSRSegLib.api import CancelToken, predict

    result = predict(_volume(), model="bspline", tasks="sr", scale=np.int64(2), axis=np.int64(2), cancel=CancelToken(),
                     progress=lambda f, s: None, uncertainty=np.bool_(False), threads=1)  # fmt: skip
    assert result.outputs["sr"].shape == (6, 6, 8)
