"""One vocabulary, validated at every door (issue #15).

Tasks, protocols, factors, axes, baselines, output formats, devices and uncertainty methods are defined
once, in ``JointSRSegLib.vocabulary``.  Every door -- ``predict``, the CLI, the inference engine, the
package schema, the training data and the Slicer logic -- refuses a bad value with one InputError
(exit 2 on the command line) naming the value and the allowed ones, and accepts every value of the
vocabulary.  The Slicer panel offers exactly the engine's uncertainty methods, and each of them runs
for a trained package through the logic on a real MRML scene (slicer-core).
"""

from __future__ import annotations

import ast
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from package_factory import TISSUE_LABELS, make_package

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import checks, nodes  # noqa: E402
from JointSRSegModule.logic import JointSRSegLogic  # noqa: E402
from JointSRSegModule.worker_run import WorkerRun  # noqa: E402

from JointSRSegLib import vocabulary as v  # noqa: E402
from JointSRSegLib.api import predict  # noqa: E402
from JointSRSegLib.cli import main  # noqa: E402
from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.geometry import subdivide_grid  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402

SHIPPED = "swinsr-unetr-brain-small"  # thick-slice SR x4 + segmentation, no dropout in its network


def thick(size=(24, 24, 6)) -> Volume:
    """A small thick-slice image (1 x 1 x 4 mm, slice axis K)."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in size), indexing="ij")
    array = (300 + 100 * np.sin(i / 3.0) * np.cos(j / 4.0) + 10 * k).astype(np.float32)
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return Volume(array, (1.0, 1.0, 4.0), (12.0, -30.0, 40.0), direction, source="thick")


def assert_names(error: BaseException, bad: str, allowed) -> None:
    """The one-line message names the value given and every value allowed."""
    text = str(error)
    assert "\n" not in text, text
    assert bad in text, text
    for value in allowed:
        assert str(value) in text, (value, text)


@pytest.fixture(scope="module")
def dropout_package(tmp_path_factory) -> Path:
    """A package whose network has dropout (untrained weights, the shipped architecture): MC dropout
    can sample it, which no shipped package allows."""
    return make_package(
        tmp_path_factory.mktemp("dropout"),
        "swinsr_unetr",
        tasks=["sr", "seg"],
        package_scale=[1, 1, 4],
        protocol="sr",
        labels=TISSUE_LABELS,
        uncertainty=["sr_aleatoric", "seg_entropy"],
        in_channels=1,
        seg_channels=3,
        scale=(1, 1, 4),
        aleatoric=True,
        dropout=0.2,
    )


# --------------------------------------------------------------------------- the vocabulary itself

BAD_VALUES = [
    (v.parse_tasks, "denoise", "'denoise'", v.TASKS),
    (v.check_protocol, "thick", "'thick'", v.PROTOCOLS),
    (v.check_factor, 9, "9", ("2-8",)),
    (v.check_factor, 2.5, "2.5", ("2", "8")),
    (v.check_factor, "4", "'4'", ("2-8",)),
    (v.check_axis, 1.5, "1.5", v.AXES),
    (v.check_axis, True, "True", v.AXES),
    (v.check_axis_choice, "x", "'x'", (0, 1, 2, "auto")),
    (v.parse_axis, "x", "'x'", (0, 1, 2, "auto")),
    (v.check_device, "gpu", "'gpu'", v.DEVICES),
    (v.check_device, "cuda:1", "'cuda:1'", v.DEVICES),  # GPU indices only where the worker maps them
    (v.check_output_format, "png", "'png'", v.OUTPUT_FORMATS),
    (v.check_segmentation_model, "fast", "'fast'", v.SEGMENTATION_BASELINES),
    (v.check_uncertainty_method, "aleatoric", "'aleatoric'", v.UNCERTAINTY_METHODS),
]


@pytest.mark.parametrize(("check", "value", "shown", "allowed"), BAD_VALUES)
def test_each_check_refuses_with_the_value_and_the_allowed_ones(check, value, shown, allowed):
    with pytest.raises(InputError) as error:
        check(value)
    assert isinstance(error.value, ValueError)
    assert_names(error.value, shown, allowed)


def test_each_check_accepts_every_value_of_its_vocabulary():
    assert v.parse_tasks(",".join(v.TASKS).upper()) == v.TASKS
    assert v.parse_tasks([], allow_empty=True) == ()
    assert [v.check_protocol(p) for p in v.PROTOCOLS] == list(v.PROTOCOLS)
    assert [v.check_factor(f) for f in v.SCALE_FACTORS] == list(v.SCALE_FACTORS) == list(range(2, 9))
    assert v.check_factor(4.0) == 4 and v.check_factor(np.int64(3)) == 3
    assert [v.check_axis(a) for a in v.AXES] == [0, 1, 2] and v.check_axis(np.int64(2)) == 2
    assert [v.parse_axis(t) for t in ("auto", "0", "1", "2")] == ["auto", 0, 1, 2]
    assert [v.check_device(d.upper()) for d in v.DEVICES] == list(v.DEVICES)
    assert v.check_device("cuda:3", gpu_index=True) == "cuda:3"
    assert [v.check_output_format(f) for f in v.OUTPUT_FORMATS] == list(v.OUTPUT_FORMATS)
    assert [v.check_uncertainty_method(m) for m in v.UNCERTAINTY_METHODS] == list(v.UNCERTAINTY_METHODS)
    assert v.check_segmentation_model("atropos") == "atropos"


def test_empty_tasks_are_refused_unless_allowed():
    with pytest.raises(InputError) as error:
        v.parse_tasks(" , ")
    assert_names(error.value, "no task", v.TASKS)


def test_uncertainty_kinds_are_what_the_methods_make():
    """Each method has a kind per task, and what a package may declare is exactly their union."""
    for method in v.UNCERTAINTY_METHODS:
        assert set(v.KINDS_OF_METHOD[method]) == set(v.TASKS), method
    for task in v.TASKS:
        made = {kind for method in v.UNCERTAINTY_METHODS for kind in v.KINDS_OF_METHOD[method][task]}
        assert set(v.UNCERTAINTY_KINDS[task]) == made
    assert "seg_uasr" in v.declared_uncertainty(["seg"]) and "sr_sample_variance" in v.declared_uncertainty(["sr"])
    assert set(v.SAMPLING_METHODS) == set(v.UNCERTAINTY_METHODS) - {v.AUTO, v.UASR}
    assert v.KINDS_OF_METHOD[v.AUTO]["seg"] == ("entropy",) and v.KINDS_OF_METHOD[v.UASR]["seg"] == ("uasr",)
    assert list(v.UNCERTAINTY_METHOD_TEXT) == list(v.UNCERTAINTY_METHODS)


def test_every_baseline_is_described_where_it_is_shown():
    """A baseline added to the vocabulary needs an interpolator or segmenter and a card text."""
    from JointSRSegLib.baselines import IMAGE_INTERPOLATORS
    from JointSRSegLib.packaging import model_info

    assert list(IMAGE_INTERPOLATORS) == list(v.IMAGE_BASELINES)
    assert v.DEFAULT_BASELINE in v.IMAGE_BASELINES and checks.BASELINES[0] == v.DEFAULT_BASELINE
    for name in v.BASELINE_NAMES:
        card = checks.describe_baseline(name)
        assert card.name != name and "(classical baseline)" not in card.description, name
        assert model_info(name).description != f"{name} interpolation", name  # not the fallback text


# --------------------------------------------------------------------------- the API door


@pytest.mark.parametrize(
    ("changes", "shown", "allowed"),
    [
        ({"tasks": "sr,denoise"}, "'denoise'", v.TASKS),
        ({"device": "gpu"}, "'gpu'", v.DEVICES),
        ({"uncertainty_method": "aleatoric"}, "'aleatoric'", v.UNCERTAINTY_METHODS),
        ({"uncertainty_method": "entropy", "uncertainty": True}, "'entropy'", v.UNCERTAINTY_METHODS),
        ({"seg_model": "fast"}, "'fast'", v.SEGMENTATION_BASELINES),
        ({"axis": "x"}, "'x'", ("0, 1, 2", "auto")),
        ({"scale": 9}, "9", ("2-8",)),
    ],
)
def test_predict_refuses_a_word_outside_the_vocabulary(changes, shown, allowed):
    kwargs = {"model": "bspline", "tasks": ("sr",), "scale": 4, **changes}
    with pytest.raises(InputError) as error:
        predict(thick(), **kwargs)
    assert_names(error.value, shown, allowed)


def test_predict_accepts_every_device_task_and_format_word(tmp_path):
    from JointSRSegLib.outputs import write_outputs

    for device in v.DEVICES:  # a baseline runs on the CPU whatever the device
        assert "sr" in predict(thick(), model="bspline", tasks="sr", scale=2, device=device).outputs
    result = predict(thick(), model="bspline", tasks=v.IMAGE_TASKS, scale=2)
    assert set(result.outputs) == set(v.IMAGE_TASKS)
    for fmt in v.OUTPUT_FORMATS:
        written = write_outputs(tmp_path / fmt, result.outputs, fmt, result.report)
        assert all(str(path).endswith(fmt) for name, path in written.items() if name != "report")


def test_predict_refuses_sampling_methods_for_classical_models():
    for model in ("bspline", "atropos"):
        with pytest.raises(InputError) as error:
            predict(thick(), model=model, tasks=("sr",), scale=2, uncertainty=True, uncertainty_method="tta")
        assert_names(error.value, "'tta'", ("auto",))
        assert str(error.value).startswith(f"{model}: ")


@pytest.mark.parametrize("method", v.UNCERTAINTY_METHODS)
def test_predict_runs_every_uncertainty_method_on_a_package(method, dropout_package):
    """auto and tta on the shipped package; mc_dropout where the network has dropout, uasr on the shipped
    REHRSeg package, and on the shipped joint package (neither) a one-line refusal that names the methods
    that do apply."""
    model = {"mc_dropout": dropout_package, v.UASR: "rehrseg-brain-small"}.get(method, SHIPPED)
    tasks = ("seg",) if method == v.UASR else ("sr", "seg")
    result = predict(thick(), model=model, tasks=tasks, scale=4, device="cpu", uncertainty=True,
                     uncertainty_method=method, threads=1)  # fmt: skip
    kinds = result.report["model"]["uncertainty_kinds"]
    if "sr" in tasks:
        assert kinds["uncertainty_sr"] in v.KINDS_OF_METHOD[method]["sr"]
    assert kinds["uncertainty_seg"] in v.KINDS_OF_METHOD[method]["seg"]
    assert result.report["model"]["uncertainty_method"] == method
    if method == "mc_dropout":
        with pytest.raises(InputError) as error:
            predict(thick(), model=SHIPPED, tasks=("sr",), scale=4, device="cpu", uncertainty=True,
                    uncertainty_method=method)  # fmt: skip
        assert_names(error.value, "'mc_dropout'", ("no active dropout", "auto or tta"))
    if method == v.UASR:
        with pytest.raises(InputError) as error:
            predict(thick(), model=SHIPPED, tasks=("sr", "seg"), scale=4, device="cpu", uncertainty=True,
                    uncertainty_method=method)  # fmt: skip
        assert_names(error.value, "'uasr'", ("REHRSeg's self-SR teacher", "auto or tta"))


# --------------------------------------------------------------------------- the engine door


def test_engine_refuses_a_bad_method_and_mc_dropout_without_dropout_before_running(monkeypatch):
    from JointSRSegLib.api import CancelToken
    from JointSRSegLib.inference import engine
    from JointSRSegLib.report import StageTimer

    ran = []
    monkeypatch.setattr(engine, "_sampled_forward", lambda *a, **k: ran.append(1))

    def run(**options):
        return engine.run_model_package(thick(), SHIPPED, ("sr",), 4, 2, "cpu", True, lambda f, s: None,
                                        CancelToken(), StageTimer(), **options)  # fmt: skip

    with pytest.raises(InputError) as error:
        run(uncertainty_method="sample_variance")
    assert_names(error.value, "'sample_variance'", v.UNCERTAINTY_METHODS)
    with pytest.raises(InputError) as error:
        run(uncertainty_method="mc_dropout")
    assert_names(error.value, SHIPPED, ("'mc_dropout'", "auto or tta"))
    for trained_on_the_scan in v.SELF_TRAINED:
        with pytest.raises(InputError) as error:
            engine.run_model_package(thick(), trained_on_the_scan, ("sr",), 4, 2, "cpu", True, lambda f, s: None,
                                     CancelToken(), StageTimer(), uncertainty_method="tta")  # fmt: skip
        assert_names(error.value, f"{trained_on_the_scan}: uncertainty method 'tta'", ("auto",))
    assert not ran, "nothing ran before the refusal"


def test_device_door_of_the_engine():
    from JointSRSegLib.inference.devices import select_device

    with pytest.raises(InputError) as error:
        select_device("tpu")
    assert_names(error.value, "'tpu'", v.DEVICES)
    assert select_device("CPU").type == "cpu" and select_device(None).type in ("cpu", "cuda", "mps")


# --------------------------------------------------------------------------- the CLI door


@pytest.fixture()
def nifti(tmp_path) -> Path:
    from JointSRSegLib.io import write_volume

    path = tmp_path / "thick.nii.gz"
    write_volume(thick(), path)
    return path


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--tasks", "denoise", v.TASKS),
        ("--device", "gpu", v.DEVICES),
        ("--format", "png", v.OUTPUT_FORMATS),
        ("--uncertainty-method", "entropy", v.UNCERTAINTY_METHODS),
        ("--seg-model", "fast", v.SEGMENTATION_BASELINES),
        ("--axis", "x", ("0, 1, 2", "auto")),
    ],
)
def test_cli_refuses_a_word_outside_the_vocabulary_in_one_line(nifti, tmp_path, capsys, option, value, allowed):
    out = tmp_path / "out"
    assert exit_code(["run", "--input", str(nifti), "--scale", "2", "--out-dir", str(out), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jointsrseg: error:")
    assert_names(RuntimeError(err), value, allowed)
    assert not out.exists()


def exit_code(argv: list[str]) -> int:
    """``main``'s exit status, whether it returns it or argparse raises SystemExit (a usage error)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


def test_cli_accepts_every_format_device_and_method(nifti, tmp_path, capsys):
    for fmt in v.OUTPUT_FORMATS:
        out = tmp_path / fmt
        assert main(["run", "--input", str(nifti), "--scale", "2", "--model", "bspline", "--out-dir", str(out),
                     "--format", fmt]) == 0
        assert (out / f"sr.{fmt}").is_file()
    for device in v.DEVICES:
        out = tmp_path / f"device-{device}"
        assert main(["run", "--input", str(nifti), "--scale", "2", "--model", "bspline", "--out-dir", str(out),
                     "--device", device]) == 0
    out = tmp_path / "tta"
    argv = ["run", "--input", str(nifti), "--model", SHIPPED, "--tasks", "sr", "--scale", "4", "--device", "cpu",
            "--threads", "1", "--uncertainty", "--uncertainty-method", "tta", "--out-dir", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["uncertainty_kinds"] == {"uncertainty_sr": "sample_variance"}
    capsys.readouterr()
    argv[argv.index("tta")] = "mc_dropout"
    argv[-1] = str(tmp_path / "mc")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'mc_dropout' does not apply" in err and "choose auto or tta" in err


# --------------------------------------------------------------------------- schema and training doors


def test_package_ids_of_the_vocabulary_are_reserved(dropout_package, tmp_path):
    import shutil

    from JointSRSegLib.packaging import load_package

    copy = tmp_path / "pkg"
    shutil.copytree(dropout_package, copy)
    meta = json.loads((copy / "model.json").read_text())
    for reserved in (*v.SELF_TRAINED, "atropos"):
        (copy / "model.json").write_text(json.dumps({**meta, "id": reserved}))
        with pytest.raises(InputError, match="is reserved"):
            load_package(copy)


def test_package_uncertainty_methods_come_from_model_json(dropout_package):
    from JointSRSegLib.package_schema import uncertainty_methods
    from JointSRSegLib.packaging import load_package, resolve_model

    assert uncertainty_methods(resolve_model(SHIPPED).metadata) == ("auto", "tta")
    assert uncertainty_methods(load_package(dropout_package).metadata) == ("auto", "tta", "mc_dropout")
    assert uncertainty_methods(resolve_model("rdst-e-brain").metadata) == ("tta",)  # no maps of its own
    assert uncertainty_methods(resolve_model("rehrseg-brain-small").metadata) == ("auto", "tta", v.UASR)


def test_training_doors_use_the_vocabulary():
    from training.config import SCHEMA, ConfigError, resolve
    from training.data import MakeLRHRPaird

    assert SCHEMA["data.protocol"].choices == v.PROTOCOLS
    assert SCHEMA["run.device"].choices == v.TRAINING_DEVICES
    with pytest.raises(ConfigError) as error:
        resolve(overrides=["data.protocol=thick"])
    assert_names(error.value, "'thick'", v.PROTOCOLS)
    with pytest.raises(InputError) as error:
        MakeLRHRPaird(protocol="thick", factor=4, axis=2)
    assert_names(error.value, "'thick'", v.PROTOCOLS)
    for protocol in v.PROTOCOLS:
        assert MakeLRHRPaird(protocol=protocol, factor=4, axis=2).protocol == protocol


# --------------------------------------------------------------------------- the Slicer door


@pytest.fixture()
def scene_node():
    scene = slicer.vtkMRMLScene()
    node = nodes.new_scalar_volume_node(thick(), "thick")
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return scene, node


@pytest.mark.parametrize(
    ("changes", "shown", "allowed"),
    [
        ({"tasks": ("sr", "denoise")}, "'denoise'", v.TASKS),
        ({"device": "gpu"}, "'gpu'", (*v.DEVICES, "cuda:N")),
        ({"uncertaintyMethod": "aleatoric", "uncertainty": True}, "'aleatoric'", v.UNCERTAINTY_METHODS),
        ({"protocol": "thick"}, "'thick'", v.PROTOCOLS),
        ({"axis": "I"}, "'I'", ("0, 1, 2", "auto")),
        ({"segModel": "fast", "tasks": ("sr", "seg")}, "'fast'", checks.SEG_MODELS),
    ],
)
def test_slicer_logic_refuses_a_word_outside_the_vocabulary(scene_node, changes, shown, allowed):
    scene, node = scene_node
    kwargs = {"model": "bspline", "tasks": ("sr",), "scale": 4, **changes}
    with pytest.raises(InputError) as error:
        JointSRSegLogic(scene).prepare(node, **kwargs)
    assert_names(error.value, shown, allowed)


def test_slicer_logic_accepts_every_panel_device(scene_node):
    scene, node = scene_node
    assert set(v.DEVICES) <= set(checks.DEVICES)
    for device in checks.DEVICES:
        request = JointSRSegLogic(scene).prepare(node, model="bspline", tasks=("sr",), scale=4, device=device)
        assert request.device == "cpu"  # a baseline runs on the CPU


def test_panel_offers_exactly_the_engine_methods_and_the_ui_describes_them():
    source = (ROOT / "JointSRSeg" / "JointSRSeg.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    fields = {
        node.target.id: ast.unparse(node.annotation)
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name == "JointSRSegParameterNode"
        for node in cls.body
        if isinstance(node, ast.AnnAssign)
    }
    assert fields["uncertaintyMethod"] == "Annotated[str, Choice(list(UNCERTAINTY_METHODS))]"
    assert fields["device"] == "Annotated[str, Choice(list(DEVICES))]"
    ui = ET.parse(ROOT / "JointSRSeg" / "Resources" / "UI" / "JointSRSeg.ui")
    combo = next(w for w in ui.iter("widget") if w.get("name") == "uncertaintyMethodComboBox")
    tooltip = next(p for p in combo.iter("property") if p.get("name") == "toolTip").find("string").text
    assert tooltip == "; ".join(f"{name}: {text}" for name, text in v.UNCERTAINTY_METHOD_TEXT.items())
    for stale in ("aleatoric:", "sample_variance", "entropy:", "mutual_information"):
        assert stale not in tooltip


@pytest.mark.parametrize("method", v.UNCERTAINTY_METHODS)
def test_every_panel_uncertainty_choice_runs_for_a_trained_package(scene_node, dropout_package, method):
    """The panel's path without Qt: prepare -> compute -> import, with each Method choice."""
    scene, node = scene_node
    logic = JointSRSegLogic(scene)
    if method == v.UASR:  # REHRSeg's teacher map: the shipped REHRSeg package, segmentation only
        outputs = logic.process(node, model="rehrseg-brain-small", tasks=("seg",), scale=4, device="cpu",
                                uncertainty=True, uncertaintyMethod=method)  # fmt: skip
        kinds = json.loads(nodes.provenance_of(outputs["seg"])["report"])["model"]["uncertainty_kinds"]
        assert kinds == {"uncertainty_seg": "uasr"}
        unc = slicer.util.arrayFromVolume(outputs["uncertainty_seg"])
        assert 0.0 < unc.min() and unc.max() < 1.0
        return
    package = str(dropout_package) if method == "mc_dropout" else SHIPPED
    outputs = logic.process(node, model=package, tasks=("sr", "seg"), scale=4, device="cpu", uncertainty=True,
                            uncertaintyMethod=method)  # fmt: skip
    assert {"sr", "seg", "uncertainty_sr", "uncertainty_seg"} <= set(outputs)
    assert nodes.node_grid(outputs["sr"]).almost_equal(subdivide_grid(thick().grid, 4, 2))
    unc = slicer.util.arrayFromVolume(outputs["uncertainty_sr"])
    assert 0.0 <= unc.min() and unc.max() <= 1.0
    kinds = json.loads(nodes.provenance_of(outputs["sr"])["report"])["model"]["uncertainty_kinds"]
    assert kinds["uncertainty_sr"] in v.KINDS_OF_METHOD[method]["sr"]
    assert kinds["uncertainty_seg"] in v.KINDS_OF_METHOD[method]["seg"]
    if method != v.AUTO:  # the panel's worker gets the method too
        request = logic.prepare(node, model=package, tasks=("sr",), scale=4, uncertainty=True,
                                uncertaintyMethod=method)  # fmt: skip
        assert WorkerRun(logic, request).requestJson()["options"] == {"uncertainty_method": method}


def test_panel_refuses_a_method_the_package_lacks_in_one_line_before_running(scene_node):
    scene, node = scene_node
    logic = JointSRSegLogic(scene)
    logic.predictFunction = lambda *a, **k: pytest.fail("nothing may run")
    with pytest.raises(InputError) as error:
        logic.process(node, model=SHIPPED, tasks=("sr", "seg"), scale=4, uncertainty=True,
                      uncertaintyMethod="mc_dropout")  # fmt: skip
    assert_names(error.value, f"{SHIPPED}: uncertainty method 'mc_dropout' does not apply", ("auto or tta",))
    with pytest.raises(InputError) as error:
        logic.prepare(node, model="rdst-e-brain", tasks=("sr",), scale=4, axis=2, protocol="inplane",
                      uncertainty=True)  # fmt: skip
    assert_names(error.value, "'auto' does not apply", ("choose tta",))
    with pytest.raises(InputError) as error:
        logic.prepare(node, model="atropos", tasks=("sr", "seg"), scale=4, uncertainty=True, uncertaintyMethod="tta")
    assert_names(error.value, "'tta' does not apply", ("choose auto",))


# --------------------------------------------------------------------------- single source (supplement)

# Whole vocabularies that must not be written out again outside vocabulary.py.
WHOLE = {
    "TASKS": v.TASKS,
    "PROTOCOLS": v.PROTOCOLS,
    "IMAGE_BASELINES": v.IMAGE_BASELINES,
    "BASELINE_NAMES": v.BASELINE_NAMES,
    "OUTPUT_FORMATS": v.OUTPUT_FORMATS,
    "DEVICES": v.DEVICES,
    "TRAINING_DEVICES": v.TRAINING_DEVICES,
    "UNCERTAINTY_METHODS": v.UNCERTAINTY_METHODS,
    "IMAGE_TASKS": v.IMAGE_TASKS,
}
KINDS = {kind for kinds in v.UNCERTAINTY_KINDS.values() for kind in kinds}


def test_no_vocabulary_is_written_out_twice():
    """A tuple, list or set literal equal to a whole vocabulary (or three or more uncertainty kinds, the
    panel's old method menu) anywhere in the library, the module, training or benchmarks is a copy."""
    copies = []
    for folder in ("JointSRSegLib", "JointSRSeg", "training", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "vocabulary.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Tuple | ast.List | ast.Set) or len(node.elts) < 2:
                    continue
                if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    continue
                values = {e.value for e in node.elts}
                named = [name for name, words in WHOLE.items() if values == set(words)]
                if len(values) >= 3 and values <= KINDS:
                    named.append("uncertainty kinds")
                copies += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in named]
    assert not copies, "use JointSRSegLib.vocabulary instead: " + ", ".join(copies)
