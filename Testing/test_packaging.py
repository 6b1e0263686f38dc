"""Model packages: round trips, verification (sha256, schema), safe zip import, registry, normalisation."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from JointSRSegLib.errors import InputError
from JointSRSegLib.models import build
from JointSRSegLib.normalization import denormalize, normalize, validate_spec
from JointSRSegLib.package_schema import ScaleSpec
from JointSRSegLib.packaging import (
    ModelPackage,
    available_models,
    check_compatibility,
    import_checkpoint,
    import_model,
    load_package,
    resolve_model,
    save_package,
)

BRATS_INPUTS = [{"name": n, "modality": "MR"} for n in ("T1", "T1ce", "T2", "FLAIR")]


def metadata(**overrides) -> dict:
    meta = {
        "id": "rdst-tiny-test",
        "version": "1.0.0",
        "name": "RDST tiny (test)",
        "description": "Untrained tiny RDST used by the tests",
        "tasks": ["sr"],
        "scale": [1, 1, 4],
        "protocol": "sr",
        "inputs": [{"name": "T1", "modality": "MR"}],
        "intensity_normalization": {"method": "percentile", "lower": 0.5, "upper": 99.5},
        "labels": [],
        "training_data": {"datasets": ["none"], "subjects": 0},
        "metrics": {"psnr_db": 0.0},
        "license": "Apache-2.0",
        "intended_use": "tests only",
        "uncertainty": [],
        "expected_runtime": {"cpu_seconds_per_volume": 1},
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def model() -> torch.nn.Module:
    return build("rdst", "tiny").eval()


@pytest.fixture
def package_dir(tmp_path, model) -> Path:
    return save_package(model, tmp_path / "pkg", metadata())


def outputs_equal(a: torch.nn.Module, b: torch.nn.Module, channels: int = 1) -> bool:
    x = torch.rand(1, channels, 8, 12)
    with torch.no_grad():
        return torch.equal(a(x)["sr"], b(x)["sr"])


def rewrite_json(folder: Path, **changes) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


# --------------------------------------------------------------------------- round trips


def test_folder_round_trip_gives_identical_outputs(package_dir, model):
    assert sorted(p.name for p in package_dir.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((package_dir / "model.json").read_text())
    assert meta["schema_version"] == 1 and meta["architecture"] == "rdst" and meta["preset"] == "tiny"
    assert meta["config"]["embed_dim"] == 12
    assert meta["weights_sha256"] == hashlib.sha256((package_dir / "model.safetensors").read_bytes()).hexdigest()
    package = load_package(package_dir)
    assert isinstance(package, ModelPackage) and package.id == "rdst-tiny-test" and package.channels == 1
    rebuilt = package.build_model()
    assert not rebuilt.training
    assert outputs_equal(model, rebuilt)
    assert not [p for p in package_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left over


def test_saved_folder_has_default_permissions(package_dir):
    """The atomic staging folder is private while written; the package must not stay 0700."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(package_dir.stat().st_mode) == 0o777 & ~umask


def test_zip_round_trip_and_import(tmp_path, model):
    archive = save_package(model, tmp_path / "pkg", metadata(), zip=True)
    assert archive.name == "pkg.zip"
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["model.json", "model.safetensors"]
    assert outputs_equal(model, load_package(archive).build_model())
    installed = import_model(archive, tmp_path / "models")
    assert installed.path == tmp_path / "models" / "rdst-tiny-test" and installed.path.is_dir()
    assert outputs_equal(model, installed.build_model())
    assert import_model(archive, tmp_path / "models").path == installed.path  # same package again: no-op


def test_tuple_config_and_multichannel_round_trip(tmp_path):
    net = build("rdst", "tiny", scale=(1, 4), in_channels=4).eval()
    package = load_package(save_package(net, tmp_path / "brats", metadata(id="brats", inputs=BRATS_INPUTS)))
    assert package.metadata["config"]["scale"] == [1, 4]
    assert outputs_equal(net, package.build_model(), channels=4)


def test_existing_output_needs_overwrite(package_dir, model):
    with pytest.raises(InputError, match="already exists"):
        save_package(model, package_dir, metadata())
    save_package(model, package_dir, metadata(version="1.0.1"), overwrite=True)
    assert load_package(package_dir).version == "1.0.1"


# --------------------------------------------------------------------------- verification


def test_tampered_weights_are_refused(package_dir):
    weights = package_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one float
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256") as error:
        load_package(package_dir)
    assert str(weights) in str(error.value)


def test_weights_changed_after_loading_are_refused_at_build(package_dir):
    package = load_package(package_dir)
    weights = package_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="does not match weights_sha256"):
        package.build_model()


def test_wrong_sha256_in_metadata_is_refused(package_dir):
    rewrite_json(package_dir, weights_sha256="0" * 64)
    with pytest.raises(InputError, match="model.safetensors: sha256 .* does not match"):
        load_package(package_dir)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 2}, "unknown schema_version 2 .*update JointSRSeg"),
        ({"schema_version": "1"}, "schema_version must be an integer"),
        ({"tasks": ["sr", "denoise"]}, r"unknown task 'denoise'; choose from sr, interp, seg"),
        ({"architecture": "unet9000"}, "unknown architecture 'unet9000'"),
        ({"scale": [2, 1, 4]}, "scale .* is not one factor"),
        ({"protocol": "thick"}, "unknown protocol .thick.; choose from sr, interp, inplane"),
        ({"tasks": ["seg"], "labels": []}, '"seg" model must list its labels'),
        ({"uncertainty": ["seg_entropy"]}, "uncertainty 'seg_entropy' does not fit tasks"),
        ({"uncertainty": ["seg_uasr"]}, "uncertainty 'seg_uasr' does not fit tasks"),
        ({"intensity_normalization": {"method": "histogram"}}, "unknown method 'histogram'"),
        ({"id": "bspline"}, "reserved for a classical baseline"),
        ({"id": "../escape"}, "id '../escape' must be letters"),
    ],
)
def test_bad_metadata_is_refused(package_dir, changes, message):
    rewrite_json(package_dir, **changes)
    with pytest.raises(InputError, match=message) as error:
        load_package(package_dir)
    assert str(error.value).startswith(str(package_dir / "model.json") + ": ")


def test_missing_field_and_bad_json_are_refused(package_dir):
    meta = json.loads((package_dir / "model.json").read_text())
    del meta["license"]
    (package_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"missing required field\(s\): license"):
        load_package(package_dir)
    (package_dir / "model.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_package(package_dir)
    (package_dir / "model.json").unlink()
    with pytest.raises(InputError, match="model.json is missing"):
        load_package(package_dir)


def test_inputs_must_match_in_channels(tmp_path, model):
    with pytest.raises(InputError, match=r"inputs lists 4 channel\(s\) \(T1, T1ce, T2, FLAIR\) but config.in_channels"):
        save_package(model, tmp_path / "p", metadata(inputs=BRATS_INPUTS))
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- zip safety


def _evil_zip(path: Path, package_dir: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.write(package_dir / "model.json", "model.json")
        z.write(package_dir / "model.safetensors", "model.safetensors")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd" if symlink else "pwned")
    return path


@pytest.mark.parametrize(
    ("entry", "symlink", "message"),
    [
        ("../evil.txt", False, r"points outside its folder \('..'\)"),
        ("docs/../../evil.txt", False, r"points outside its folder"),
        ("/tmp/evil.txt", False, "absolute path"),
        ("C:/evil.txt", False, "absolute path"),
        ("link", True, "symbolic link"),
    ],
)
def test_zip_entries_cannot_escape(tmp_path, package_dir, entry, symlink, message):
    work = tmp_path / "work"
    work.mkdir()
    archive = _evil_zip(work / "evil.zip", package_dir, entry, symlink)
    models = work / "models"
    before = set(tmp_path.rglob("*"))
    outside = [Path("/tmp/evil.txt"), tmp_path / "evil.txt", Path("C:") / "evil.txt"]
    existed = [p.exists() for p in outside]
    with pytest.raises(InputError, match=message) as error:
        import_model(archive, models)
    assert str(archive) in str(error.value)
    assert set(tmp_path.rglob("*")) - before <= {models}  # nothing written, at most an empty models folder
    assert not models.exists() or not list(models.iterdir())
    assert [p.exists() for p in outside] == existed


def test_zip_in_a_single_top_folder_is_accepted(tmp_path, package_dir, model):
    archive = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("model.json", "model.safetensors"):
            z.write(package_dir / name, f"rdst-tiny-test/{name}")
    assert outputs_equal(model, import_model(archive, tmp_path / "models").build_model())


def test_import_needs_overwrite_for_a_different_package(tmp_path, package_dir, model):
    import_model(package_dir, tmp_path / "models")
    other = save_package(build("rdst", "tiny").eval(), tmp_path / "other", metadata(version="2.0.0"))
    with pytest.raises(InputError, match="pass overwrite"):
        import_model(other, tmp_path / "models")
    assert import_model(other, tmp_path / "models", overwrite=True).version == "2.0.0"
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["rdst-tiny-test"]


def test_failed_import_leaves_nothing_behind(tmp_path, package_dir, monkeypatch):
    import JointSRSegLib.packaging as packaging

    def fail(staging, target):
        raise OSError("disk full")

    monkeypatch.setattr(packaging, "replace_dir", fail)
    with pytest.raises(OSError, match="disk full"):
        import_model(package_dir, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []  # the staging folder was removed


# --------------------------------------------------------------------------- compatibility


def test_channel_mismatch_names_what_fits(tmp_path):
    net = build("rdst", "tiny", in_channels=4).eval()
    package = load_package(save_package(net, tmp_path / "brats", metadata(id="brats-sr", inputs=BRATS_INPUTS)))
    with pytest.raises(InputError, match=r"model 'brats-sr' takes 4 channels \(T1, T1ce, T2, FLAIR\); the input has 1"):
        check_compatibility(package, 1, ["sr"], 4, "sr")
    check_compatibility(package, 4, ["sr"], 4, "sr")


def test_task_factor_and_protocol_mismatches(package_dir):
    package = load_package(package_dir)
    with pytest.raises(InputError, match="does sr; seg was requested"):
        check_compatibility(package, 1, ["sr", "seg"], 4, "sr")
    with pytest.raises(InputError, match="supports through-plane factor x4; factor 3 was requested"):
        check_compatibility(package, 1, ["sr"], 3, "sr")
    with pytest.raises(InputError, match="trained for the 'sr' protocol; 'interp' was requested"):
        check_compatibility(package, 1, ["sr"], 4, "interp")


def test_scale_spec_forms():
    assert ScaleSpec.parse([1, 1, 4]) == ScaleSpec((4,), "through_plane")
    assert ScaleSpec.parse([3, 3, 1]).per_axis(3) == (3, 3, 1)
    multi = ScaleSpec.parse({"factors": [4, 2, 3], "factor_axis": "through_plane"})
    assert multi.factors == (2, 3, 4) and multi.per_axis(3) == (1, 1, 3)
    assert multi.describe() == "through-plane factor x2 or x3 or x4"
    assert ScaleSpec.parse([1, 1, 1]).factor_axis == "none"
    with pytest.raises(InputError, match="factor_axis must be one of"):
        ScaleSpec.parse({"factors": [2], "factor_axis": "slice"})


# --------------------------------------------------------------------------- registry


def test_available_models_and_resolve(tmp_path, monkeypatch, model):
    monkeypatch.setenv("JOINTSRSEG_MODELS", str(tmp_path / "user-models"))
    save_package(model, tmp_path / "user-models" / "mine", metadata(id="my-sr"))
    (tmp_path / "user-models" / "broken").mkdir()
    (tmp_path / "user-models" / "broken" / "model.json").write_text("{}")  # skipped, not fatal
    infos = {info.id: info for info in available_models()}
    for name in ("nearest", "linear", "bspline", "lanczos", "contour"):
        assert infos[name].source == "baseline"
    assert infos["contour"].inputs == ("label map",)
    mine = infos["my-sr"]
    assert (mine.source, mine.tasks, mine.inputs) == ("user", ("sr",), ("T1",))
    assert mine.scale == "through-plane factor x4" and mine.description.startswith("Untrained")
    assert mine.supports_factor(4, "sr") and not mine.supports_factor(4, "interp") and not mine.supports_factor(2)
    assert infos["bspline"].supports_factor(8, "interp") and not infos["bspline"].supports_factor(9)
    assert resolve_model("bspline") == "bspline"
    assert resolve_model("my-sr").id == "my-sr"
    assert resolve_model(str(tmp_path / "user-models" / "mine")).id == "my-sr"
    with pytest.raises(InputError, match="no model package, path or baseline .*bspline.*my-sr"):
        resolve_model("missing-model")


# --------------------------------------------------------------------------- checkpoints


def test_import_checkpoint_reads_tensors_only(tmp_path, model):
    state = model.state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    loaded = import_checkpoint(tmp_path / "ckpt.pth")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save({"state_dict": state, "callback": os.path.join}, tmp_path / "unsafe.pt")  # a global, not a tensor
    with pytest.raises(InputError, match="cannot be loaded safely"):
        import_checkpoint(tmp_path / "unsafe.pt")


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "spec",
    [
        {"method": "none"},
        {"method": "zscore"},
        {"method": "zscore", "nonzero": True},
        {"method": "percentile", "lower": 1, "upper": 99},
        {"method": "minmax"},
        {"method": "window", "low": -1000, "high": 2000},
    ],
)
def test_normalisation_round_trip(spec):
    rng = np.random.default_rng(0)
    array = np.stack([rng.normal(300, 80, (6, 5, 4)), rng.uniform(0, 2000, (6, 5, 4))])
    array[:, 0] = 0  # background for the nonzero variant
    exact, params = normalize(array, spec, dtype=np.float64)
    assert np.allclose(denormalize(exact, params, dtype=np.float64), array, rtol=0, atol=1e-9)
    single, params32 = normalize(array.astype(np.float32), spec)
    assert single.dtype == np.float32
    assert np.allclose(denormalize(single, params32), array, rtol=1e-6, atol=1e-6 * np.abs(array).max())
    json.dumps(params)  # recordable next to the outputs


def test_normalisation_values():
    x = np.arange(101, dtype=np.float64)[None]
    y, params = normalize(x, {"method": "percentile", "lower": 10, "upper": 90})
    assert params["offset"] == [10.0] and params["scale"] == [80.0]
    assert y[0, 10] == 0 and y[0, 90] == 1
    z, _ = normalize(x, {"method": "zscore"})
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6
    flat, params = normalize(np.full((1, 3), 7.0), {"method": "zscore"})  # constant: no division by zero
    assert params["scale"] == [1.0] and np.all(flat == 0)
    clipped, _ = normalize(x, {"method": "window", "low": 0, "high": 50, "clip": True})
    assert clipped.max() == 1.0
    assert validate_spec({"method": "percentile"}) == {
        "method": "percentile",
        "nonzero": False,
        "clip": False,
        "lower": 0.5,
        "upper": 99.5,
    }
    with pytest.raises(InputError, match="has no option lower"):
        validate_spec({"method": "zscore", "lower": 1})
