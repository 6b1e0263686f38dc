"""The Slicer packaging and the .ui stay consistent with the code (checked without Slicer or CMake).

* The CMake lists (read by ``cmake_layout``, which applies Slicer's and CTK's copy/install rules)
  install every library file, module file and runtime resource, each into the scripted-modules
  folder the module imports from; none is lost through a ``../`` path.
* Only ``JointSRSeg.py`` sits at the top of the module folder (Slicer loads each top-level .py as a module).
* The install tree, materialised from those rules in a temporary folder, runs on its own: the
  module's helpers and JointSRSegLib import from it (no sys.path edits besides the one Slicer makes),
  the built-in packages, requirements, .ui and sample data are found there, a B-spline run works
  in-process and in the worker process.
* The .ui parses, every ``self.ui.<name>`` the widget uses exists in it, and its
  ``SlicerParameterName`` properties match the parameter-node fields one to one.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cmake_layout import SCRIPTED_DIR, installed_files

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "JointSRSeg"
UI = MODULE / "Resources" / "UI" / "JointSRSeg.ui"
# Files in shipped folders that are not part of the extension: the sample data's generator script.
NOT_SHIPPED = ("Resources/SampleData/make_sample_data.py",)
# Parameter-node fields the widget syncs with a widget by hand, not through SlicerParameterName.
SYNCED_BY_HAND = {"modelId": "modelSelector"}


@pytest.fixture(scope="module")
def layout() -> dict[str, str | None]:
    return installed_files(ROOT)


def needed_files() -> set[str]:
    """Everything the installed module runs or loads: library and module code, module resources,
    model packages, sample data and its licence, requirements."""
    files = set()
    for folder in (ROOT / "JointSRSegLib", ROOT / "Resources", MODULE):
        for path in folder.rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and path.name != "CMakeLists.txt":
                if rel not in NOT_SHIPPED:
                    files.add(rel)
    return files


def test_every_needed_file_is_installed(layout):
    missing = sorted(needed_files() - set(layout))
    assert not missing, "add to a CMakeLists.txt install list: " + ", ".join(missing)


def test_every_listed_file_lands_in_the_scripted_modules_folder(layout):
    lost = sorted(src for src, dst in layout.items() if dst is None)
    assert not lost, f"copied outside DESTINATION_DIR (a '../' path?), so never installed: {lost}"
    outside = sorted(dst for dst in layout.values() if not dst.startswith(SCRIPTED_DIR + "/"))
    assert not outside, f"installed where Slicer does not put modules on sys.path: {outside}"
    assert len(set(layout.values())) == len(layout), "two files installed to the same place"


def test_cmake_lists_only_existing_files(layout):
    absent = sorted(p for p in layout if not (ROOT / p).is_file())
    assert not absent, f"listed but missing: {absent}"


def test_destinations_are_where_the_code_looks(layout):
    """Library at <scripted>/JointSRSegLib, its Resources one level up, the module's next to JointSRSeg.py."""
    for src, dst in layout.items():
        rel = dst[len(SCRIPTED_DIR) + 1:]
        if src.startswith("JointSRSeg/"):
            assert rel == src[len("JointSRSeg/"):], (src, dst)  # resourcePath(): <module dir>/Resources/...
        else:
            assert rel == src, (src, dst)  # JointSRSegLib/../Resources, as in the source tree


def test_cmake_reader_sees_a_lost_file(tmp_path):
    """The reader itself: a '../' script (the old layout) is reported as never installed."""
    (tmp_path / "Mod").mkdir()
    (tmp_path / "Lib").mkdir()
    (tmp_path / "CMakeLists.txt").write_text("project(X)\nadd_subdirectory(Mod)\n", encoding="utf-8")
    (tmp_path / "Mod" / "CMakeLists.txt").write_text(
        "set(S Mod.py ../Lib/a.py) # comment (with parentheses)\n"
        "slicerMacroBuildScriptedModule(NAME Mod SCRIPTS ${S})\n",
        encoding="utf-8",
    )
    assert installed_files(tmp_path) == {"Mod/Mod.py": f"{SCRIPTED_DIR}/Mod.py", "Lib/a.py": None}


def test_only_the_module_file_at_the_top_of_the_module_folder(layout):
    top = sorted(p.name for p in MODULE.glob("*.py"))
    assert top == ["JointSRSeg.py"], f"Slicer would load these as modules: {top}"
    installed_top = sorted(d for d in layout.values() if d.count("/") == SCRIPTED_DIR.count("/") + 1
                           and d.endswith(".py"))
    assert installed_top == [f"{SCRIPTED_DIR}/JointSRSeg.py"], installed_top


def test_extension_cmake():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_MINIMUM_SLICER_VERSION"):
        assert re.search(rf"set\({key} \"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text and "add_subdirectory(JointSRSeg)" in text
    assert "VERSION_LESS" in text  # older Slicer builds stop at configure time with the reason
    minimum = re.search(r'EXTENSION_MINIMUM_SLICER_VERSION "([\d.]+)"', text).group(1)
    assert f"Slicer {minimum}" in (ROOT / "README.md").read_text(encoding="utf-8")
    module = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in module and "WITH_GENERIC_TESTS" in module
    assert "slicer_add_python_unittest" in module


# Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json: "additionalProperties": false.
CATALOG_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                      "build_subdirectory", "enabled", "tier"}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def cmake_value(key: str) -> str:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return re.search(rf'set\({key} "([^"]*)"\)', text).group(1)


def test_screenshots_are_rendered_files_the_docs_show():
    """Each EXTENSION_SCREENSHOTURLS entry is a PNG in docs/images that make_screenshots.py writes and the
    README or the user guide shows."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_screenshots

    urls = cmake_value("EXTENSION_SCREENSHOTURLS").split()
    prefix = "https://raw.githubusercontent.com/jointsrseg/JointSRSeg/main/"
    assert urls and all(u.startswith(prefix + "docs/images/") for u in urls), urls
    names = [u.rsplit("/", 1)[1] for u in urls]
    assert names == list(make_screenshots.IMAGES)
    docs = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "docs" / "slicer.md").read_text(encoding="utf-8")
    for url, name in zip(urls, names):
        path = ROOT / url[len(prefix):]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert f"images/{name}" in docs, f"{name} is not shown in README.md or docs/slicer.md"
    icon = cmake_value("EXTENSION_ICONURL")
    assert icon.startswith(prefix) and (ROOT / icon[len(prefix):]).is_file(), icon


def test_catalog_entry_draft_fits_the_schema_and_the_cmake_metadata():
    import json

    entry = json.loads((ROOT / "docs" / "JointSRSeg.json").read_text(encoding="utf-8"))
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_PROPERTIES, sorted(set(entry) - CATALOG_PROPERTIES)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == cmake_value("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == cmake_value("EXTENSION_DEPENDS").split()
    assert entry["scm_url"].endswith(".git") and entry.get("tier", 1) in (1, 3, 5)
    assert cmake_value("EXTENSION_HOMEPAGE").startswith(entry["scm_url"][: -len(".git")])


INSTALLED_CHECK = r"""
import json, sys
from pathlib import Path
tree = Path(sys.argv[1])
import JointSRSegLib, JointSRSegModule
from JointSRSegModule import dependencies, sample_data
from JointSRSegModule.logic import JointSRSegLogic
from JointSRSegLib.packaging import BUILTIN_MODELS_DIR
paths = [JointSRSegLib.__file__, JointSRSegModule.__file__, str(BUILTIN_MODELS_DIR),
         str(dependencies.requirements_file())] + [str(p) for p in sample_data.sample_files()]
outside = [p for p in paths if not Path(p).resolve().is_relative_to(tree.resolve())]
assert not outside, outside
missing = [p for p in paths if not Path(p).exists()]
assert not missing, missing
logic = JointSRSegLogic()
models = sorted(m.id for m in logic.availableModels() if m.source == "builtin")
assert dependencies.read_requirements(), "empty requirements"
torch_loaded = "torch" in sys.modules
from JointSRSegLib.demo import SAMPLE_DIR  # the CLI demo's sample folder is the shipped one
assert SAMPLE_DIR.resolve() == sample_data.sample_dir().resolve(), SAMPLE_DIR
print(json.dumps({"models": models, "torch": torch_loaded}))
"""


def test_installed_tree_runs_on_its_own(layout, tmp_path):
    scripted = tmp_path / "qt-scripted-modules"
    for src, dst in layout.items():
        target = tmp_path / "qt-scripted-modules" / dst[len(SCRIPTED_DIR) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / src, target)
    ui = scripted / "Resources" / "UI" / "JointSRSeg.ui"  # ScriptedLoadableModuleWidget.resourcePath()
    assert ui.is_file() and (scripted / "Resources" / "Icons" / "JointSRSeg.png").is_file()
    # Slicer puts the scripted-modules folder on sys.path; -I keeps the source tree and PYTHONPATH out.
    code = f"import sys; sys.path.insert(0, {str(scripted)!r}); sys.argv[1:] = [{str(scripted)!r}]\n" + INSTALLED_CHECK
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    shipped = sorted(p.name for p in (ROOT / "Resources" / "Models").iterdir() if (p / "model.json").is_file())
    assert report["models"] == shipped
    assert report["torch"] is False


def ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def parameter_fields() -> set[str]:
    tree = ast.parse((MODULE / "JointSRSeg.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "JointSRSegParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}


def test_ui_parses_and_referenced_widgets_exist():
    widgets = ui_widgets()
    assert widgets["JointSRSeg"].get("class") == "qMRMLWidget"
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "JointSRSeg.py").read_text(encoding="utf-8")))
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
    source = (MODULE / "JointSRSeg.py").read_text(encoding="utf-8")
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
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(MODULE)!r}]; "
        "import JointSRSegModule.logic, JointSRSegModule.nodes, JointSRSegModule.worker_run; "
        "bad = [m for m in ('qt', 'ctk', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_module_file_compiles_and_reexports_logic():
    source = (MODULE / "JointSRSeg.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "JointSRSegModule.logic" for a in n.names}
    assert "JointSRSegLogic" in imported
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"JointSRSeg", "JointSRSegWidget", "JointSRSegTest"} <= set(classes)
    model_id = [s for s in classes["JointSRSegTest"].body if isinstance(s, ast.Assign)
                and s.targets[0].id == "MODEL_ID"]
    assert model_id and model_id[0].value.value == "bspline"
    assert "not for diagnosis" in source
