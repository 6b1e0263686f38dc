"""Default models that work out of the box (issue #7), in the Slicer module and the CLI demo.

* ``JointSRSegLib.defaults`` picks the shipped package that fits a request; the module's selector
  (``JointSRSegLogic.defaultModel`` / ``modelForRequest``) and ``jointsrseg demo`` use that one rule;
* every selector entry carries the model's name, card summary, licence and intended use, which reads
  "research use, not for diagnosis";
* a run with the default package on a small crop of the MNI152 sample, on a real MRML scene, gives
  output nodes on the protocol grid of the input (IJK-to-RAS checked against Slicer's own matrix).

Expectations come from the shipped ``Resources/Models/*/model.json`` files, so packages that are
added later (``rdst-e-brain``, ``rehrseg-brain-small``) are checked without editing this file:
where a request has no fitting package, the bspline fallback is asserted instead of skipping.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
import vtk  # noqa: E402
from JointSRSegModule import checks, nodes  # noqa: E402
from JointSRSegModule.logic import InputError, JointSRSegLogic  # noqa: E402
from slicer_grid import grid_from_slicer  # noqa: E402

from JointSRSegLib.defaults import choose_default, default_model  # noqa: E402
from JointSRSegLib.degradation import simulate_inplane_bicubic, simulate_slice_gaps, simulate_thick_slices  # noqa: E402
from JointSRSegLib.demo import demo_plan  # noqa: E402
from JointSRSegLib.geometry import insert_grid, subdivide_grid  # noqa: E402
from JointSRSegLib.io import read_volume  # noqa: E402
from JointSRSegLib.volume import Grid, Volume  # noqa: E402

MODELS = ROOT / "Resources" / "Models"
PRIORS = ROOT / "Resources" / "Priors"
SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
SWINSR, TASC, RDST_E = "swinsr-unetr-brain-small", "tasc-swinmt-brain-small", "rdst-e-brain"
CROP_START, CROP_SIZE = (106, 70, 60), (24, 48, 32)  # in the sample's held-out slab (axis 0 >= 106)
INPLANE_CROP_START, INPLANE_CROP_SIZE = (106, 60, 70), (40, 64, 8)  # in-plane x4: 10 x 16 pixels per LR slice


# --------------------------------------------------------------------------- expectations from model.json


def shipped() -> dict[str, dict]:
    """Every built-in package's model.json, by id, in folder order."""
    found = {}
    for folder in sorted(MODELS.iterdir()):
        if (folder / "model.json").is_file():
            meta = json.loads((folder / "model.json").read_text())
            found[meta["id"]] = meta
    return found


def rankable() -> dict[str, dict]:
    """:func:`shipped`, then ``adapt`` read from each shipped self-SR prior's prior.json (it competes for
    image-only requests of its protocol and factor), keyed ``adapt@<protocol>-x<R>`` (:func:`method_id`)."""
    found = shipped()
    for record_path in sorted(PRIORS.glob("*/prior.json")):
        prior = json.loads(record_path.read_text(encoding="utf-8"))
        key = f"adapt@{prior['protocol']}-x{prior['factor']}"
        found[key] = {"tasks": [prior["protocol"]], "protocol": prior["protocol"],
                      "scale": {"factors": [prior["factor"]]}, "metrics": prior.get("metrics", {})}
    return found


def method_id(key: str) -> str:
    """The model id of a :func:`rankable` key (``adapt@sr-x4`` -> ``adapt``)."""
    return key.split("@")[0]


def factors(meta: dict) -> set[int]:
    scale = meta["scale"]
    if isinstance(scale, list):
        return {v for v in scale if v != 1} or {1}
    return set(scale["factors"])


def candidates(tasks, protocol: str, factor: int) -> list[str]:
    return [
        model_id
        for model_id, meta in rankable().items()
        if set(tasks) <= set(meta["tasks"]) and meta["protocol"] == protocol and factor in factors(meta)
    ]


def real_record(model_id: str, protocol: str, factor: int) -> dict | None:
    """The card's real-scan record (``metrics.realistic``) for this request, if any."""
    record = rankable()[model_id].get("metrics", {}).get("realistic")
    if record and record.get("protocol") == protocol and record.get("factor") == factor:
        return record
    return None


def recorded(model_id: str, key: str, protocol: str, factor: int) -> float | None:
    """A figure of the card: from its real-scan record where it has one, else its regression check."""
    real = real_record(model_id, protocol, factor)
    if real is not None:
        return real.get(key)
    check = rankable()[model_id].get("metrics", {}).get("regression_check", {})
    return check.get(key) if check.get("protocol") == protocol and check.get("factor") == factor else None


def beats_atropos(model_id: str, protocol: str, factor: int) -> bool:
    real = real_record(model_id, protocol, factor) or {}
    pairs = [(real.get("dice_mean"), real.get("atropos_on_bspline_dice")),
             (real.get("dice_mean_on_those_cases", real.get("dice_mean")), real.get("atropos_on_self_dice"))]
    pairs = [(mine, peer) for mine, peer in pairs if peer is not None]
    return bool(pairs) and all(mine is not None and mine > peer for mine, peer in pairs)


def expected_default(tasks, protocol: str, factor: int) -> str:
    """The documented rule, restated: best recorded PSNR gain (Dice for segmentation only), records
    before none, then folder order; an image-only request never gets a recorded loss against
    B-spline (nor a real-scan SSIM below B-spline's); segmentation only by a package whose real-scan
    record beats atropos, else atropos; bspline when nothing fits an image-only request."""
    key = "psnr_gain_over_bspline_db" if {"sr", "interp"} & set(tasks) else "dice_mean"
    image_only = bool({"sr", "interp"} & set(tasks)) and "seg" not in tasks
    ranked = []
    for order, model_id in enumerate(candidates(tasks, protocol, factor)):
        value = recorded(model_id, key, protocol, factor)
        real = real_record(model_id, protocol, factor) or {}
        if "seg" in tasks and not beats_atropos(model_id, protocol, factor):
            continue
        if image_only and value is not None and value < 0:
            continue
        if image_only and real.get("ssim", 1.0) < real.get("bspline_ssim", 0.0):
            continue
        ranked.append((value is not None, value or 0.0, -order, model_id))
    if not ranked and "seg" in tasks and protocol != "inplane":
        return chained_sr(tasks, protocol, factor) or "atropos"
    return method_id(max(ranked)[-1]) if ranked else "bspline"


def chained_sr(tasks, protocol: str, factor: int) -> str | None:
    """For a request with segmentation that no package wins: the SR method for its image task whose
    real-scan record shows Atropos on its output beating Atropos on B-spline (largest Dice gain), with an
    image gain and SSIM not below B-spline's; None when there is none.  Segmentation alone: Atropos
    still reads an image on the protocol's grid, so the SR method for the protocol's own task."""
    image_tasks = [t for t in tasks if t in ("sr", "interp")] or ([protocol] if protocol in ("sr", "interp") else [])
    best = None
    for order, model_id in enumerate(candidates(image_tasks, protocol, factor) if image_tasks else []):
        real = real_record(model_id, protocol, factor) or {}
        mine, peer = real.get("with_atropos_dice"), real.get("with_atropos_peer_dice")
        gain = real.get("psnr_gain_over_bspline_db")
        if None in (mine, peer, gain) or mine <= peer or gain <= 0 or real["ssim"] < real["bspline_ssim"]:
            continue
        best = max(best or (-1.0, 0.0, 0, ""), (mine - peer, gain, -order, model_id))
    return method_id(best[-1]) if best else None


@pytest.fixture(scope="module")
def logic():
    return JointSRSegLogic()


@pytest.fixture(scope="module")
def models(logic):
    return {m.id: m for m in logic.availableModels()}


# --------------------------------------------------------------------------- the selection rule


def test_every_shipped_package_is_listed_with_its_protocol(models):
    for model_id, meta in shipped().items():
        assert models[model_id].protocols == (meta["protocol"],)
        assert set(models[model_id].factors) == factors(meta)
    assert {SWINSR, TASC} <= set(shipped())


@pytest.mark.parametrize(
    "tasks, protocol, factor",
    [
        (("sr",), "sr", 4),
        (("sr", "seg"), "sr", 4),
        (("seg",), "sr", 4),
        (("interp",), "interp", 2),
        (("interp",), "interp", 4),
        (("interp", "seg"), "interp", 4),
        (("sr",), "inplane", 4),
    ],
)
def test_default_is_the_best_fitting_shipped_package(logic, models, tasks, protocol, factor):
    expected = expected_default(tasks, protocol, factor)
    choice = logic.defaultChoice(tasks, protocol, factor)
    assert choice.model == expected == default_model(tasks, protocol, factor), choice.reason
    assert logic.defaultModel(tasks, protocol, factor) == expected and expected in models
    if expected == "atropos":
        assert "no shipped package beats atropos" in choice.reason and choice.seg_model is None
    elif "seg" in tasks and expected == chained_sr(tasks, protocol, factor):  # SR method + Atropos on its output
        assert choice.seg_model == "atropos" and "segmented by atropos" in choice.reason
        assert logic.modelFits(logic.withSegmentationModel(models[expected], "atropos"), tasks, protocol, factor)
    elif expected != "bspline":
        assert logic.modelFits(models[expected], tasks, protocol, factor)
        assert expected in choice.reason
    elif candidates(tasks, protocol, factor):  # fitting packages all record a loss against B-spline
        assert "no shipped package records a gain over B-spline" in choice.reason
    else:
        assert "no shipped package does" in choice.reason


def test_defaults_name_the_shipped_packages(logic):
    """Thick-slice SR -> SwinSR-UNETR, interpolation -> TASC unless it loses to B-spline, in-plane ->
    RDST-E; segmentation -> a package only where the real-scan report shows it beating atropos."""
    joint = SWINSR if beats_atropos(SWINSR, "sr", 4) else (chained_sr(("sr", "seg"), "sr", 4) or "atropos")
    assert logic.defaultModel(("sr", "seg"), "sr", 4) == joint
    assert logic.defaultModel("sr", None, 4) == expected_default(("sr",), "sr", 4)  # thick slices from the tasks
    assert SWINSR in candidates(("seg",), "sr", 4)
    for factor in (2, 4):
        assert logic.defaultModel(("interp", "seg"), "interp", factor) == (
            TASC if beats_atropos(TASC, "interp", factor) else "atropos"
        )
        # interpolation alone: TASC unless its card records a loss against B-spline at this factor
        assert logic.defaultModel(("interp",), None, factor) == expected_default(("interp",), "interp", factor)
    inplane = logic.defaultModel(("sr",), "inplane", 4)
    if (MODELS / RDST_E).is_dir():
        assert inplane == RDST_E
    else:  # not shipped (yet): no package does in-plane x4, the classical fallback is preselected
        assert inplane == "bspline" and not candidates(("sr",), "inplane", 4)


@pytest.mark.parametrize(
    "tasks, protocol, factor",
    [(("sr",), "sr", 7), (("sr", "seg"), "sr", 5), (("interp",), "interp", 5), (("seg",), "sr", 6),
     (("sr", "interp"), None, 4)],
)
def test_bspline_when_no_shipped_package_fits(logic, tasks, protocol, factor):
    assert not candidates(tasks, protocol or "interp", factor), "a shipped package now fits; pick another request"
    choice = logic.defaultChoice(tasks, protocol, factor)
    if "seg" in tasks:  # the classical peer segments at any factor
        assert choice.model == "atropos" and "no shipped package beats atropos" in choice.reason
    else:
        assert choice.model == "bspline" and "no shipped package does" in choice.reason and "bspline" in choice.reason


def test_demo_uses_the_same_rule():
    """SR by a package only with a positive recorded gain that ``self`` does not beat on the real-scan
    report (else ``self``); segmentation by the same rule as the module (atropos unless beaten)."""
    gains = {m: recorded(m, "psnr_gain_over_bspline_db", "sr", 4) for m in candidates(("sr",), "sr", 4)}
    positive = {
        m: g
        for m, g in gains.items()
        if g is not None and g > 0
        and (real_record(m, "sr", 4) or {}).get("ssim", 1.0) >= (real_record(m, "sr", 4) or {}).get("bspline_ssim", 0)
    }
    best = max(positive, key=positive.get) if positive else None
    if best is not None and (real_record(best, "sr", 4) or {}).get("self_gain_over_bspline_db", -1e9) > positive[best]:
        best = None
    plan = demo_plan()
    assert plan.sr_model == method_id(best or "self")
    seg = choose_default(("seg",), "sr", 4)
    assert seg.model == expected_default(("seg",), "sr", 4)
    # a chained choice (a method's SR, segmented by Atropos) segments the demo's own SR output with Atropos
    assert plan.seg_model == (seg.seg_model or seg.model)
    if not positive:
        assert "no built-in SR package" in plan.reason


@pytest.fixture(scope="module")
def inplane_package(tmp_path_factory):
    """An untrained in-plane x2 RDST package (the kind rdst-e-brain is), built from the real architecture."""
    from package_factory import make_package

    from JointSRSegLib.packaging import load_package

    folder = tmp_path_factory.mktemp("inplane")
    path = make_package(folder, "rdst", tasks=["sr"], package_scale=[2, 2, 1], protocol="inplane", in_channels=1,
                        scale=(2, 2))
    return load_package(path)


def with_card(package, model_id: str, gain: float | None, protocol: str = "inplane", factor: int = 2):
    """The same package under another id, its card recording ``gain`` dB over B-spline."""
    check = {} if gain is None else {"regression_check": {"protocol": protocol, "factor": factor,
                                                          "psnr_db": 30.0, "psnr_gain_over_bspline_db": gain}}
    return dataclasses.replace(package, metadata={**package.metadata, "id": model_id, "metrics": check})


def test_ranking_by_recorded_gain_and_the_demo_threshold(inplane_package):
    cards = [with_card(inplane_package, "a-unmeasured", None), with_card(inplane_package, "b-small", 0.4),
             with_card(inplane_package, "c-best", 1.3), with_card(inplane_package, "d-other-factor", 5.0, factor=4)]
    choice = choose_default(("sr",), "inplane", 2, packages=cards)
    assert (choice.model, choice.gain_db) == ("c-best", 1.3) and "+1.30 dB PSNR over B-spline" in choice.reason
    assert choose_default(("sr",), "inplane", 2, packages=cards, require_gain=True, fallback="self").model == "c-best"
    worse = [with_card(inplane_package, "e-worse", -0.2), with_card(inplane_package, "f-unmeasured", None)]
    # an image-only request never gets a package recorded as worse than B-spline ...
    assert choose_default(("sr",), "inplane", 2, packages=worse).model == "f-unmeasured"
    only_worse = choose_default(("sr",), "inplane", 2, packages=worse[:1])
    assert only_worse.model == "bspline" and "records a gain" in only_worse.reason
    # ... but a record (even a small one) ranks before none
    small = [with_card(inplane_package, "g-small", 0.1), with_card(inplane_package, "h-unmeasured", None)]
    assert choose_default(("sr",), "inplane", 2, packages=small).model == "g-small"
    demo_like = choose_default(("sr",), "inplane", 2, packages=worse, require_gain=True, fallback="self")
    assert demo_like.model == "self" and "no shipped package records a gain over B-spline" in demo_like.reason
    assert choose_default(("sr",), "sr", 2, packages=cards).model == "bspline"  # in-plane packages: not thick slices


def test_inplane_package_run_lands_on_the_refined_grid(scene, inplane_package):
    """An in-plane package through the logic: each slice's pixels subdivided, slices unchanged."""
    assert choose_default(("sr",), "inplane", 2, packages=[inplane_package]).model == inplane_package.id
    hr = sample_crop(INPLANE_CROP_START, INPLANE_CROP_SIZE)
    node = add_node(scene, simulate_inplane_bicubic(hr, 2, 2), "T1")
    logic = JointSRSegLogic(scene)
    outputs = logic.process(node, model=str(inplane_package.path), tasks=("sr",), scale=2, axis=2, device="cpu",
                            protocol="inplane")
    grid = subdivide_grid(subdivide_grid(grid_from_slicer(node), 2, 0), 2, 1)
    assert_on_grid(outputs["sr"], grid)
    assert grid.almost_equal(hr.grid, 1e-4)
    with pytest.raises(InputError, match="does in-plane super-resolution; set SR direction to in-plane"):
        logic.process(node, model=str(inplane_package.path), tasks=("sr",), scale=2, axis=2, protocol="sr")


# --------------------------------------------------------------------------- the selector's behaviour


def test_selection_follows_the_request_until_the_user_picks(logic, models):
    joint, interp = expected_default(("sr", "seg"), "sr", 4), expected_default(("interp", "seg"), "interp", 4)
    model, choice = logic.modelForRequest(models, "", True, ("sr", "seg"), "sr", 4)
    assert model == joint and choice is not None and choice.model == joint
    # Interpolation ticked: the preselection follows.
    model, choice = logic.modelForRequest(models, model, True, ("interp", "seg"), "interp", 4)
    assert model == interp and choice is not None
    # The user picks bspline: the request adapts (no segmentation) and the pick stays while it fits.
    tasks, direction, scale = logic.requestForModel(models["bspline"], ("interp", "seg"), "through-plane", 4)
    assert (tasks, direction, scale) == (("interp",), "through-plane", 4)
    assert logic.modelForRequest(models, "bspline", False, ("interp",), "interp", 3) == ("bspline", None)
    assert logic.modelForRequest(models, "bspline", False, ("sr",), "sr", 4) == ("bspline", None)
    # ... until the request needs what it cannot do: segmentation -> the default again.
    model, choice = logic.modelForRequest(models, "bspline", False, ("sr", "seg"), "sr", 4)
    assert model == joint and choice is not None


def test_picking_a_model_adapts_the_request_so_that_it_fits(logic, models):
    assert logic.requestForModel(models[TASC], ("sr",), "through-plane", 3) == (("interp",), "through-plane", 2)
    assert logic.requestForModel(models[SWINSR], ("interp", "seg"), "in-plane", 2) == (("seg",), "through-plane", 4)
    for model in models.values():
        for request in ((("sr", "interp", "seg"), "in-plane", 3), ((), "through-plane", 8)):
            tasks, direction, scale = logic.requestForModel(model, *request)
            protocol = logic.requestProtocol(tasks, direction)
            assert tasks and logic.modelFits(model, tasks, protocol, scale), (model.id, tasks, protocol, scale)
            if model.protocols == ("inplane",):
                assert direction == "in-plane"


def test_request_protocol_from_tasks_and_direction(logic):
    assert logic.requestProtocol(("sr", "seg"), "through-plane") == "sr"
    assert logic.requestProtocol(("seg",), "through-plane") == "sr"
    assert logic.requestProtocol(("interp",), "in-plane") == "interp"
    assert logic.requestProtocol(("sr",), "in-plane") == "inplane"


# --------------------------------------------------------------------------- what the selector shows


def test_card_text_shows_name_summary_licence_and_intended_use(logic, models):
    for model_id, meta in shipped().items():
        model = models[model_id]
        text = model.card_text()
        for part in (meta["name"], meta["description"], meta["license"], meta["intended_use"]):
            assert part in text, (model_id, part)
        assert "not for diagnosis" in text.lower()
        assert meta["name"] in model.menu_text() and model_id in model.menu_text()
        gain = meta.get("metrics", {}).get("regression_check", {}).get("psnr_gain_over_bspline_db")
        if gain is not None:
            assert f"{gain:+.2f} dB vs B-spline" in text  # a preselected package never looks better than it is
    for model in models.values():  # baselines and the self-supervised mode too
        assert "not for diagnosis" in model.card_text().lower() and model.license in model.card_text()
    choice = logic.defaultChoice(("sr", "seg"), "sr", 4)
    info = logic.modelInfoText(models[choice.model], choice)
    assert info.startswith(models[choice.model].card_text()) and f"Preselected: {choice.reason}." in info
    assert "Preselected" not in logic.modelInfoText(models["bspline"])


def test_research_notice_added_when_a_card_lacks_it():
    model = checks.ModelDescription(
        id="mine", name="My model", description="Summary.", tasks=("sr",), inputs=(("T2", "MR"),),
        license="MIT", intended_use="tests only",
    )
    text = model.card_text()
    assert "Intended use: tests only. Research use, not for diagnosis." in text and "Licence: MIT." in text


def test_packages_are_listed_and_preselected_before_pytorch_is_installed():
    """A fresh 3D Slicer has no PyTorch: the shipped packages are still listed and preselected (Apply
    then offers to install PyTorch)."""
    code = (
        "import sys; sys.modules['torch'] = None; "
        f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'JointSRSeg')!r}]; "
        "from JointSRSegModule.logic import JointSRSegLogic; logic = JointSRSegLogic(); "
        "print(' '.join(m.id for m in logic.availableModels())); "
        "print(logic.defaultModel(('sr', 'seg'), 'sr', 4), logic.defaultModel(('interp', 'seg'), None, 4))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    listed, defaults = result.stdout.strip().splitlines()[-2:]
    expected = [expected_default(("sr", "seg"), "sr", 4), expected_default(("interp", "seg"), "interp", 4)]
    assert set(shipped()) <= set(listed.split()) and defaults.split() == expected


# --------------------------------------------------------------------------- runs with the default model


@pytest.fixture()
def scene():
    from trame_slicer.core import SlicerApp

    return SlicerApp().scene


def sample_crop(start=CROP_START, size=CROP_SIZE) -> Volume:
    hr = read_volume(SAMPLE)
    index = tuple(slice(a, a + n) for a, n in zip(start, size))
    origin = hr.grid.physical_points(np.array([start], dtype=float))[0]
    array = np.ascontiguousarray(hr.array[(slice(None), *index)].astype(np.float32))
    return Volume(array, hr.spacing, tuple(origin), hr.direction, source="MNI152 crop")


def assert_on_grid(node, grid: Grid) -> None:
    np.testing.assert_allclose(nodes.node_ijk_to_ras(node), nodes.RAS_FROM_LPS @ grid.index_to_physical_matrix(),
                               atol=1e-4)
    assert node.GetImageData().GetDimensions() == grid.size


def shared_labelmap(segmentation_node) -> tuple[Grid, set[int]]:
    """Grid and label values of the labelmap the segments share (the stored representation)."""
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetNthSegment(0)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    if extent[0::2] != (0, 0, 0):  # voxel (0, 0, 0) of the stored extent is where the grid starts
        matrix_np = slicer.util.arrayFromVTKMatrix(matrix)
        matrix_np[:3, 3] += matrix_np[:3, :3] @ np.array(extent[0::2], dtype=float)
        matrix = slicer.util.vtkMatrixFromArray(matrix_np)
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    grid = nodes.grid_from_ijk_to_ras(slicer.util.arrayFromVTKMatrix(matrix), size)
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return grid, {int(v) for v in np.unique(values) if v != 0}


def add_node(scene, volume: Volume, name: str):
    node = nodes.new_scalar_volume_node(volume, name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


@pytest.mark.parametrize("tasks, protocol", [(("sr", "seg"), "sr"), (("interp", "seg"), "interp")])
def test_default_package_run_lands_on_the_input(scene, tasks, protocol):
    """Thick (or gapped) x4 slices of the sample crop, the preselected package, outputs on the HR grid."""
    logic = JointSRSegLogic(scene)
    choice = logic.defaultChoice(tasks, protocol, 4)
    model = choice.model
    assert model == expected_default(tasks, protocol, 4) != "bspline"  # a package, atropos, or SR + atropos
    hr = sample_crop()
    lr = simulate_thick_slices(hr, 4, 2) if protocol == "sr" else simulate_slice_gaps(hr, 4, 2)
    node = add_node(scene, lr, "T1")
    outputs = logic.process(node, model=model, tasks=tasks, scale=4, axis="auto", device="cpu",
                            uncertainty=True, protocol=protocol, segModel=choice.seg_model)
    task = tasks[0]
    grid = (subdivide_grid if protocol == "sr" else insert_grid)(grid_from_slicer(node), 4, 2)
    assert_on_grid(outputs[task], grid)
    # the output grid is the high-resolution grid the slices were made from
    np.testing.assert_allclose(grid.origin, hr.origin, atol=1e-4)
    np.testing.assert_allclose(grid.spacing, hr.spacing, atol=1e-6)
    assert grid.size[2] == (CROP_SIZE[2] if protocol == "sr" else CROP_SIZE[2] - 3)
    assert nodes.reference_grid(outputs["seg"]).almost_equal(grid, 1e-4)
    labelmap_grid, values = shared_labelmap(outputs["seg"])
    assert labelmap_grid.almost_equal(grid, 1e-4) and {1, 2} <= values  # grey and white matter on the SR grid
    uncertainty = [k for k in outputs if k.startswith("uncertainty_")]
    assert uncertainty
    for key in uncertainty:
        assert_on_grid(outputs[key], grid)
    for output in outputs.values():
        assert output.GetAttribute("JointSRSeg.model") == model
    image = slicer.util.arrayFromVolume(outputs[task])
    assert np.isfinite(image).all() and image.std() > 0


def test_inplane_default_run_or_refusal(scene):
    """In-plane x4: the shipped RDST-E package runs onto the in-plane refined grid; while none is
    shipped the preselected fallback is refused with the fix instead of resampling through-plane."""
    logic = JointSRSegLogic(scene)
    model = logic.defaultModel(("sr",), "inplane", 4)
    hr = sample_crop(INPLANE_CROP_START, INPLANE_CROP_SIZE)
    lr = simulate_inplane_bicubic(hr, 4, 2)
    node = add_node(scene, lr, "T1")
    if model == "bspline":
        assert not candidates(("sr",), "inplane", 4)
        count = scene.GetNumberOfNodes()
        with pytest.raises(InputError, match="not in-plane; choose an in-plane package"):
            logic.process(node, model=model, tasks=("sr",), scale=4, axis=2, protocol="inplane")
        assert scene.GetNumberOfNodes() == count
        return
    assert model in candidates(("sr",), "inplane", 4)
    outputs = logic.process(node, model=model, tasks=("sr",), scale=4, axis=2, device="cpu", protocol="inplane")
    grid = subdivide_grid(subdivide_grid(grid_from_slicer(node), 4, 0), 4, 1)
    assert_on_grid(outputs["sr"], grid)
    np.testing.assert_allclose(grid.origin, hr.origin, atol=1e-4)


def test_protocol_mismatch_is_refused_with_the_fix(scene):
    node = add_node(scene, simulate_thick_slices(sample_crop(), 4, 2), "T1")
    logic = JointSRSegLogic(scene)
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="SR direction to through-plane"):
        logic.process(node, model="bspline", tasks=("sr",), scale=4, protocol="inplane")
    with pytest.raises(InputError, match="made for gapped slices, not thick slices"):
        logic.process(node, model=TASC, tasks=("seg",), scale=4, protocol="sr")
    assert scene.GetNumberOfNodes() == count


def test_sr_plus_segmentation_default_is_the_best_sr_for_atropos():
    """No package beats Atropos: the SR method whose real-scan record shows Atropos on its output beating
    Atropos on B-spline (and an image gain, SSIM not below B-spline's) does the SR, Atropos segments it."""
    from JointSRSegLib.defaults import LearnedMethod, _Factors

    def method(name, gain, ssim, chained, peer=0.69):
        record = {"protocol": "sr", "factor": 4, "psnr_gain_over_bspline_db": gain, "ssim": ssim,
                  "bspline_ssim": 0.88, "with_atropos_dice": chained, "with_atropos_peer_dice": peer}
        return LearnedMethod(name, ("sr",), "sr", _Factors((4,)), {"metrics": {"realistic": record}})

    methods = [method("a-small-seg-gain", 4.0, 0.94, 0.70), method("b-best", 3.0, 0.93, 0.74),
               method("c-blurry", 5.0, 0.80, 0.80), method("d-worse-seg", 6.0, 0.95, 0.60)]
    choice = choose_default(("sr", "seg"), "sr", 4, packages=methods)
    assert (choice.model, choice.seg_model) == ("b-best", "atropos"), choice
    assert "+0.05 vs Atropos on B-spline" in choice.reason and choice.gain_db == 3.0
    plain = choose_default(("sr", "seg"), "sr", 4, packages=methods, chain_segmentation=False)
    assert (plain.model, plain.seg_model) == ("atropos", None)
    # the image-only request ranks by PSNR gain and ignores the segmentation figures
    assert choose_default(("sr",), "sr", 4, packages=methods).model == "d-worse-seg"
    # nothing beats Atropos on B-spline: the classical pair
    none = choose_default(("sr", "seg"), "sr", 4, packages=[method("e", 4.0, 0.94, 0.65)])
    assert (none.model, none.seg_model) == ("atropos", None)
