"""The Slicer packaging and the .ui stay consistent with the code (checked without Slicer).

* every library file and module resource is listed in JointSRSeg/CMakeLists.txt (new files fail
  here until listed, so an installed extension never misses a module);
* the .ui parses, every ``self.ui.<name>`` the widget uses exists in it, and its
  ``SlicerParameterName`` properties match the parameter-node fields one to one.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "JointSRSeg"
UI = MODULE / "Resources" / "UI" / "JointSRSeg.ui"
# Top-level Resources the module does not ship: the CLI demo's sample data (and its generator).
NOT_SHIPPED = ("Resources/SampleData/",)
# Parameter-node fields the widget syncs with a widget by hand, not through SlicerParameterName.
SYNCED_BY_HAND = {"modelId": "modelSelector"}


def cmake_entries() -> set[str]:
    """Paths listed in the module's CMake lists, relative to the repository root."""
    text = (MODULE / "CMakeLists.txt").read_text()
    text = re.sub(r"#.*", "", text).replace("${MODULE_NAME}", "JointSRSeg")
    entries = set()
    for token in re.findall(r"[\w./-]+\.(?:py|ui|png|svg|txt|json|safetensors|zip|md)\b", text):
        entries.add((MODULE / token).resolve().relative_to(ROOT).as_posix())
    return entries


def needed_files() -> set[str]:
    files = set()
    for folder in (ROOT / "JointSRSegLib", ROOT / "Resources", MODULE / "Resources"):
        for path in folder.rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and not rel.startswith(NOT_SHIPPED):
                files.add(rel)
    files |= {p.relative_to(ROOT).as_posix() for p in MODULE.glob("*.py")}
    return files


def test_every_needed_file_is_listed_in_cmake():
    missing = sorted(needed_files() - cmake_entries())
    assert not missing, "add to JointSRSeg/CMakeLists.txt: " + ", ".join(missing)


def test_cmake_lists_only_existing_files():
    absent = sorted(p for p in cmake_entries() if not (ROOT / p).is_file())
    assert not absent, f"listed but missing: {absent}"


def test_extension_cmake():
    text = (ROOT / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf"set\({key} \"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text and "add_subdirectory(JointSRSeg)" in text
    module = (MODULE / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in module and "WITH_GENERIC_TESTS" in module
    assert "slicer_add_python_unittest" in module


def ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def parameter_fields() -> set[str]:
    tree = ast.parse((MODULE / "JointSRSeg.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JointSRSegParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}


def test_ui_parses_and_referenced_widgets_exist():
    widgets = ui_widgets()
    assert widgets["JointSRSeg"].get("class") == "qMRMLWidget"
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "JointSRSeg.py").read_text()))
    assert used, "the widget uses no ui elements?"
    assert not sorted(used - set(widgets)), f"missing in the .ui: {sorted(used - set(widgets))}"


def bound_parameters() -> dict[str, str]:
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    return bound


def test_parameter_names_match_fields_one_to_one():
    bound = bound_parameters()
    fields = parameter_fields() - set(SYNCED_BY_HAND)
    assert set(bound) == fields, f"unbound fields {fields - set(bound)}, unknown names {set(bound) - fields}"


def test_hand_synced_parameters():
    """The model list is only known at run time, and a QComboBox bound through SlicerParameterName
    needs a fixed Choice (Slicer's QComboBoxToStringableConnector), so the widget syncs modelId itself."""
    source = (MODULE / "JointSRSeg.py").read_text()
    bound = bound_parameters()
    for field, widget in SYNCED_BY_HAND.items():
        assert field in parameter_fields() and widget in ui_widgets()
        assert widget not in bound.values(), f"{widget} must not also be bound through SlicerParameterName"
        assert f"p.{field} = " in source and f"self.ui.{widget}" in source


def test_node_selectors_follow_the_scene():
    tree = ET.parse(UI)
    receivers = {c.findtext("receiver") for c in tree.iter("connection") if "mrmlSceneChanged" in c.findtext("signal")}
    selectors = {n for n, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def test_logic_imports_without_qt():
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(MODULE)!r}]; import JointSRSegLogic, JointSRSegNodes; "
        "bad = [m for m in ('qt', 'ctk', 'slicer.ScriptedLoadableModule', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_file_compiles_and_reexports_logic():
    source = (MODULE / "JointSRSeg.py").read_text()
    tree = ast.parse(source)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "JointSRSegLogic"
                for a in n.names}
    assert "JointSRSegLogic" in imported
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"JointSRSeg", "JointSRSegWidget", "JointSRSegTest"} <= set(classes)
    model_id = [s for s in classes["JointSRSegTest"].body if isinstance(s, ast.Assign)
                and s.targets[0].id == "MODEL_ID"]
    assert model_id and model_id[0].value.value == "bspline"
    assert "not for diagnosis" in source
