"""First-run installs: what a model needs, what is missing, and installing it with every failure shown.

* Trained packages and ``self`` need PyTorch (through the PyTorch extension, which picks the CUDA
  build for the computer) and ``Resources/requirements.txt``.
* ``contour`` needs ``itk-morphologicalcontourinterpolation`` and ``atropos`` needs ``antspyx``
  (pyproject.toml's extras ``labels`` and ``atropos``; ``Testing/test_slicer_first_run.py`` keeps them equal).
* The other classical interpolators need nothing beyond Slicer's own numpy and SimpleITK.

Slicer's dependency helper (``pip_ensure``, which asks, installs and offers a restart) is used where
the build has it -- ``slicer.pydeps`` (Slicer 5.11 and later; Docs/developer_guide/script_repository/
packaging.md), or ``slicer.packaging`` in the builds that named it so; older builds fall back to
``slicer.util.pip_install`` after our own confirmation dialog.  Nothing here imports torch: whether it is
installed is asked with ``importlib.util.find_spec``.  The dialogs are injected so the logic runs
(and is tested) without Qt.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import JointSRSegLib

REQUESTER = "JointSRSeg"
# pyproject.toml [project.optional-dependencies]: labels (contour) and atropos.
EXTRA_REQUIREMENTS = {
    "contour": ("itk-morphologicalcontourinterpolation>=2.1",),
    "atropos": ("antspyx==0.6.3",),
}
TORCH = "torch"


def resources_dir() -> Path:
    """The shared Resources folder: next to JointSRSegLib in the source tree and in the installed extension."""
    return Path(JointSRSegLib.__file__).resolve().parent.parent / "Resources"


def requirements_file() -> Path:
    return resources_dir() / "requirements.txt"


def read_requirements(path: Path | None = None) -> list[str]:
    lines = (path or requirements_file()).read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def requirements_for(model, segModel: str | None = None) -> tuple[bool, list[str]]:
    """(needs PyTorch, pip requirements) for running ``model`` (a ModelDescription), optionally with
    ``segModel`` (e.g. ``"atropos"``) segmenting its output."""
    needs_torch = not model.is_baseline
    requirements = read_requirements() if needs_torch else []
    for name in (model.id, segModel):
        requirements += [r for r in EXTRA_REQUIREMENTS.get(name or "", ()) if r not in requirements]
    return needs_torch, requirements


def _name_and_check(requirement: str) -> tuple[str, Callable[[str], bool]]:
    try:
        from packaging.requirements import Requirement

        parsed = Requirement(requirement)
        return parsed.name, lambda version: parsed.specifier.contains(version, prereleases=True)
    except ImportError:  # no 'packaging': presence is enough, an exact pin is still compared
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        pin = requirement.split("==", 1)[1].strip() if "==" in requirement else None
        return name, lambda version: pin is None or version == pin


def missing_requirements(requirements: Sequence[str]) -> list[str]:
    """The requirements not satisfied by the installed distributions."""
    missing = []
    for requirement in requirements:
        name, satisfied = _name_and_check(requirement)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if not satisfied(version):
            missing.append(requirement)
    return missing


def torch_installed() -> bool:
    return importlib.util.find_spec(TORCH) is not None


HELPER_MODULES = ("pydeps", "packaging")


def slicer_packaging(slicer_module):
    """Slicer's ``pip_ensure`` helper module (``slicer.pydeps`` or ``slicer.packaging``), else None."""
    for name in HELPER_MODULES:
        module = getattr(slicer_module, name, None)
        if module is None:
            try:
                module = importlib.import_module(f"{slicer_module.__name__}.{name}")
            except ImportError:
                continue
        if hasattr(module, "pip_ensure"):
            return module
    return None


class DependencyInstaller:
    """Asks, installs and reports; returns False (after an error dialog with the reason) on any failure."""

    def __init__(
        self,
        slicer_module,
        confirm: Callable[[str, str], bool],
        error: Callable[[str], None],
        busy: Callable[[], object] | None = None,
    ):
        self.slicer = slicer_module
        self.confirm, self.error = confirm, error
        self.busy = busy

    def ensure(self, model, segModel: str | None = None) -> bool:
        try:
            needs_torch, requirements = requirements_for(model, segModel)
        except OSError as error:
            self.error(f"Cannot read the module's requirements file {requirements_file()}: {error}")
            return False
        if needs_torch and not torch_installed() and not self._installTorch():
            return False
        what = model.id if segModel in (None, "", "none") else f"{model.id} + {segModel}"
        return self._installPip(requirements, what)

    def _busy(self):
        import contextlib

        return self.busy() if self.busy is not None else contextlib.nullcontext()

    def _installTorch(self) -> bool:
        if not self.confirm(
            "Trained models need PyTorch (about 1-3 GB). Install it now with the PyTorch extension?",
            "JointSRSeg: install PyTorch",
        ):
            return False
        try:
            import PyTorchUtils
        except ImportError:
            self.error("Trained models need PyTorch: install the 'PyTorch' extension from the Extensions Manager, "
                       "restart Slicer and press Apply again.")
            return False
        try:
            with self._busy():
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
        except Exception as error:
            self.error(f"PyTorch could not be installed: {type(error).__name__}: {error}")
            return False
        if torch is None or not torch_installed():
            self.error("PyTorch could not be installed (the PyTorch extension gave no reason; "
                       "see the Python console). Check the network connection and the free disk space.")
            return False
        return True

    def _installPip(self, requirements: list[str], what: str) -> bool:
        missing = missing_requirements(requirements)
        if not missing:
            return True
        helper = slicer_packaging(self.slicer)
        try:
            with self._busy():
                if helper is not None:
                    from packaging.requirements import Requirement  # Slicer's helper takes parsed requirements

                    helper.pip_ensure([Requirement(r) for r in missing], requester=REQUESTER)
                else:
                    if not self.confirm(
                        f"{what} needs these Python packages, which are not installed:\n  "
                        + "\n  ".join(missing) + "\n\nInstall them now (pip)?",
                        "JointSRSeg: install Python packages",
                    ):
                        return False
                    self.slicer.util.pip_install(" ".join(f'"{r}"' for r in missing))
        except Exception as error:
            self.error(f"Installing {', '.join(missing)} failed: {type(error).__name__}: {error}")
            return False
        importlib.invalidate_caches()
        still = missing_requirements(missing)
        if still:
            self.error(f"{what} needs {', '.join(still)}, which could not be installed (or the install was "
                       "declined); see the Python console for pip's output.")
            return False
        return True


__all__ = [
    "EXTRA_REQUIREMENTS",
    "DependencyInstaller",
    "missing_requirements",
    "read_requirements",
    "requirements_file",
    "requirements_for",
    "resources_dir",
]
