"""First-run installs (JointSRSegModule.dependencies) with stand-in dialogs and a stand-in slicer module."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

from JointSRSegModule import checks, dependencies  # noqa: E402


def fake_slicer(pip_install=None, helper=None):
    module = types.ModuleType("fake_slicer_for_tests")
    module.util = types.SimpleNamespace(pip_install=pip_install or (lambda spec: None))
    if helper is not None:
        module.pydeps = helper
    return module


def installer(slicer_module, confirm=True):
    errors = []
    return dependencies.DependencyInstaller(slicer_module, lambda *a: confirm, errors.append), errors


def test_extras_match_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert list(dependencies.EXTRA_REQUIREMENTS["contour"]) == extras["labels"]
    assert list(dependencies.EXTRA_REQUIREMENTS["atropos"]) == extras["atropos"]


def test_what_each_model_needs():
    assert dependencies.requirements_for(checks.describe_baseline("bspline")) == (False, [])
    torch, reqs = dependencies.requirements_for(checks.describe_baseline("contour"))
    assert not torch and reqs == ["itk-morphologicalcontourinterpolation>=2.1"]
    torch, reqs = dependencies.requirements_for(checks.describe_baseline("bspline"), "atropos")
    assert not torch and reqs == ["antspyx==0.6.3"]
    torch, reqs = dependencies.requirements_for(checks.describe_self_supervised())
    assert torch and "monai>=1.6.1" in reqs


def test_old_slicer_falls_back_to_pip_install(monkeypatch):
    calls = []
    monkeypatch.setattr(dependencies, "missing_requirements", lambda reqs: [] if calls else list(reqs))
    run, errors = installer(fake_slicer(pip_install=calls.append))
    assert run.ensure(checks.describe_baseline("contour"))
    assert calls == ['"itk-morphologicalcontourinterpolation>=2.1"'] and not errors


def test_slicer_helper_is_used_where_it_exists(monkeypatch):
    seen = []
    helper = types.SimpleNamespace(pip_ensure=lambda reqs, requester: seen.append(([str(r) for r in reqs], requester)))
    monkeypatch.setattr(dependencies, "missing_requirements", lambda reqs: [] if seen else list(reqs))
    run, errors = installer(fake_slicer(helper=helper))
    assert run.ensure(checks.describe_baseline("bspline"), "atropos")
    assert seen == [(["antspyx==0.6.3"], "JointSRSeg")] and not errors


def test_every_install_failure_is_shown_with_its_reason(monkeypatch):
    monkeypatch.setattr(dependencies, "missing_requirements", lambda reqs: list(reqs))

    def broken(spec):
        raise RuntimeError("no network")

    run, errors = installer(fake_slicer(pip_install=broken))
    assert not run.ensure(checks.describe_baseline("contour"))
    assert len(errors) == 1 and "no network" in errors[0] and "itk-morphologicalcontourinterpolation" in errors[0]
    run, errors = installer(fake_slicer())  # pip "succeeds" but the package is still missing
    assert not run.ensure(checks.describe_baseline("contour"))
    assert "could not be installed" in errors[0]


def test_missing_pytorch_extension_is_explained(monkeypatch):
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails
    run, errors = installer(fake_slicer())
    assert not run.ensure(checks.describe_self_supervised())
    assert "PyTorch" in errors[0] and "Extensions Manager" in errors[0]
