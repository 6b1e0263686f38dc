"""The realistic benchmark (benchmarks/realistic.py): case generation, scoring, aggregation, markdown."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import realistic as rb
from benchmarks import realistic_cases as rc
from JointSRSegLib.geometry import continuous_index, orientation_code
from JointSRSegLib.tissue_classes import tissue_classes
from JointSRSegLib.volume import Volume

LIA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # columns: +L, -S (I), -P (A)


def _volume(array: np.ndarray, direction=LIA, spacing=(1.0, 1.2, 0.9), origin=(-20.0, 30.0, 15.0)) -> Volume:
    return Volume(array[None].astype(np.float32), spacing, origin, direction, source="test")


def _same_physical_values(a: Volume, b: Volume, n: int = 200, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, s, n) for s in a.shape], axis=1)
    points = a.grid.physical_points(idx)
    other = continuous_index(b.grid, points)
    assert np.allclose(other, np.rint(other), atol=1e-6)
    other = np.rint(other).astype(int)
    assert np.array_equal(a.array[0][tuple(idx.T)], b.array[0][tuple(other.T)])


def test_reorient_is_the_same_physical_scan():
    assert orientation_code(LIA) == "LIA"
    vol = _volume(np.random.default_rng(1).normal(size=(7, 9, 11)))
    for code in ("RAS", "PSR", "LIA", "SPL"):
        out = rc.reorient(vol, code)
        assert orientation_code(out.direction) == code
        assert sorted(out.shape) == sorted(vol.shape)
        _same_physical_values(vol, out)
        back = rc.reorient(out, "LIA")
        assert back.grid.almost_equal(vol.grid) and np.array_equal(back.array, vol.array)
    # The anterior-posterior axis is found in every orientation.
    assert rc.anatomical_axis(vol) == 2 and rc.anatomical_axis(rc.reorient(vol, "RAS")) == 1
    assert rc.anatomical_axis(rc.reorient(vol, "PSR")) == 0


def test_crop_box_margin_and_factor():
    mask = np.zeros((40, 50, 60), bool)
    mask[10:20, 5:30, 20:33] = True
    box = rc.crop_box(mask, mask.shape, through_axis=2, factor=4, margin=8)
    assert box[0] == (2, 28) and box[1] == (0, 38)
    assert (box[2][1] - box[2][0]) % 4 == 0 and box[2][0] <= 12 and box[2][1] >= 41
    assert rc.crop_box(None, (40, 50, 61), 2) == [(0, 40), (0, 50), (0, 60)]


@pytest.fixture(scope="module")
def label_crop():
    path = rc.LABEL_MAPS / "training_seg_19.nii.gz"
    assert path.exists(), f"{path}: the shared label maps are part of the test data"
    source, labels = rc._label_source(19)
    box = [(100, 148), (100, 140), (96, 136)]  # a central block with cortex, WM, ventricles
    small = rc.crop(source.with_array(labels[None]), box)
    return small, small.array[0].astype(np.int32)


def _class_means(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    groups = {"wm": rc.WHITE_MATTER_LABELS, "cortex": rc.CORTEX, "csf": rc.CSF}
    return {k: float(image[np.isin(labels, v)].mean()) for k, v in groups.items()}


def test_label_cases_orientations_stripping_and_reference(label_crop):
    source, labels = label_crop
    cases = list(rc._label_group(source, labels, 19, "t1", "stripped", "full", rc.ORIENTATIONS, lambda n: True))
    assert [c["orientation"] for c in cases] == list(rc.ORIENTATIONS)
    assert [c["name"] for c in cases] == [f"s19-t1-stripped-full-{o}" for o in rc.ORIENTATIONS]
    lia = cases[0]
    for case in cases:
        assert orientation_code(case["hr"].direction) == case["orientation"]
        _same_physical_values(lia["hr"], case["hr"])  # a physical point has one value in every orientation
        labels_here = rc.reorient(source.with_array(labels[None]), case["orientation"]).array[0]
        assert np.array_equal(case["labels"], tissue_classes(labels_here))  # reference = tissue_classes
        outside = (labels_here == 0) | (labels_here >= rc.EXTRA_CEREBRAL)
        assert np.all(case["hr"].array[0][outside] == 0)  # skull-stripped: exactly 0 outside the brain
        assert np.array_equal(case["head"], ~outside)
        assert case["hr"].shape[case["axis"]] % rc.FACTOR == 0
        assert rc.anatomical_axis(case["hr"]) == case["axis"]


def test_whole_head_background_is_low_noise():
    labels = np.zeros((30, 30, 30), np.int32)
    labels[8:22, 8:22, 8:22] = 507  # an extra-cerebral label around a brain
    labels[11:19, 11:19, 11:19] = 2
    labels[13:17, 13:17, 13:17] = 3
    head = rc.synthesize(labels, "t1", "head", seed=1)
    far = np.ones_like(labels, bool)
    far[5:25, 5:25, 5:25] = False
    assert head[far].min() >= 0 and head[far].mean() < 0.02 * rc.SCALE
    assert head[labels == 507].mean() > 0.3 * rc.SCALE  # the extra-cerebral tissue is there
    stripped = rc.synthesize(labels, "t1", "stripped", seed=1)
    assert np.all(stripped[(labels == 0) | (labels >= 500)] == 0) and stripped[labels == 2].mean() > 0


def test_contrasts_have_the_documented_tissue_order(label_crop):
    _, labels = label_crop
    spreads = {}
    for contrast, order in rc.TISSUE_ORDER.items():
        image = rc.synthesize(labels, contrast, "stripped", seed=5)
        means = _class_means(image, labels)
        values = [means[k] for k in order]
        assert values == sorted(values, reverse=True), (contrast, means)
        spreads[contrast] = (max(means.values()) - min(means.values())) / max(means.values())
    assert spreads["pd"] < min(spreads[c] for c in ("t1", "t2", "flair"))  # PD-like: low contrast
    a = rc.synthesize(labels, "t2", "head", seed=3)
    assert np.array_equal(a, rc.synthesize(labels, "t2", "head", seed=3))  # deterministic


def test_plan_and_names():
    quick = rc.planned_names("quick", "brain")
    assert len(quick) == 16 and sum("-full-" in n for n in quick) == 1
    assert {n.rsplit("-", 1)[1] for n in quick if n.startswith("s19")} == set(rc.ORIENTATIONS)
    assert "mni-brain" in quick and "real-sub21-brain" in quick and "real-sub23-brain" not in quick
    assert len(rc.planned_names("full", "full")) == 2 * 4 * 2 * 3 + 4 + 1


# ------------------------------------------------------------------------------ scoring by hand
def test_scores_by_hand():
    ref = np.zeros((12, 12, 12), np.float32)
    ref[2:10, 2:10, 2:10] = 100.0
    head = ref > 0
    pred = ref.copy()
    pred[head] += 2.0
    s = rb.image_scores(pred, ref, head, data_range=100.0)
    assert s["psnr_head"] == pytest.approx(20 * math.log10(100 / 2), abs=1e-6)
    fraction = head.mean()
    assert s["psnr_all"] == pytest.approx(10 * math.log10(100**2 / (4 * fraction)), abs=1e-6)
    assert rb.image_scores(ref, ref, head, 100.0)["ssim_head"] == pytest.approx(1.0)

    seg = np.zeros_like(ref, np.uint8)
    seg[head] = 1
    seg[0, 0, :3] = 2  # three tissue voxels outside the head
    bspline = np.zeros_like(ref)
    sr = bspline + 5.0
    bg = rb.background_scores(seg, sr, bspline, head, input_range=100.0)
    assert bg["bg_tissue_fraction"] == pytest.approx(3 / np.count_nonzero(~head))
    assert bg["bg_sr_vs_bspline"] == pytest.approx(0.05)
    labels = seg.copy()
    labels[0, 0, :3] = 0
    ls = rb.label_scores(seg, labels, (1.0, 1.0, 1.0))
    assert ls["dice_gm"] == pytest.approx(1.0) and ls["dice_wm"] == 0.0 and ls["dice_mean"] == pytest.approx(0.5)


def _tiny_case(code: str) -> dict:
    """Varies only in-plane (constant along the A-P axis): thick slices lose nothing, B-spline recovers it."""
    i, j = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
    plane = (50 + 40 * np.sin(i / 2.0) * np.cos(j / 3.0)).astype(np.float32)
    lia = _volume(np.repeat(plane[:, :, None], 16, axis=2), spacing=(1.0, 1.0, 1.0))
    head = np.zeros(lia.shape, bool)
    head[2:8, 2:10, :] = True
    labels = (head.astype(np.uint8) * 2)[None]
    hr = rc.reorient(lia, code)
    return {"name": f"tiny-{code}", "hr": hr, "labels": rc.reorient(lia.with_array(labels), code).array[0],
            "head": rc.reorient(lia.with_array(head[None].astype(np.uint8)), code).array[0].astype(bool),
            "axis": rc.anatomical_axis(hr), "orientation": code, "shape": list(hr.shape), "kind": "labelmap",
            "contrast": "t1", "variant": "stripped", "fov": "full", "group": "tiny", "subject": 0}


@pytest.fixture(scope="module")
def tiny_run():
    cases = [_tiny_case("LIA"), _tiny_case("PSR")]
    return rb.evaluate(cases, ["bspline", "no-such-method"], threads=1, self_budget=1.0, log=lambda m: None)


def test_evaluate_bspline_only_on_a_trivial_case(tiny_run):
    rows, agreement, described = tiny_run
    assert [d["case"] for d in described] == ["tiny-LIA", "tiny-PSR"]
    bs = [r for r in rows if r["method"] == "bspline"]
    assert len(bs) == 2
    for r in bs:
        assert r["psnr_all"] > 60 and r["psnr_head"] > 60  # exact up to float rounding
        assert r["ssim_all"] == pytest.approx(1.0, abs=1e-4) and r["ssim_head"] == pytest.approx(1.0, abs=1e-4)
        assert r["seconds"] >= 0 and "dice_mean" not in r and "gain_bspline_head_db" not in r
    skipped = [r for r in rows if r["method"] == "no-such-method"]
    assert len(skipped) == 2 and all("not a shipped package" in r["skipped"] for r in skipped)
    assert len(agreement) == 1 and agreement[0]["orientation"] == "PSR"
    assert agreement[0]["sr_max_abs_diff_rel"] < 1e-5 and not agreement[0].get("grid_mismatch")


def test_gains_and_aggregation_by_hand():
    a = {"case": "a", "kind": "labelmap", "contrast": "t1", "orientation": "LIA"}
    b = {"case": "b", "kind": "labelmap", "contrast": "t2", "orientation": "RAS"}
    rows = [
        {**a, "method": "bspline", "psnr_head": 20.0},
        {**a, "method": "m", "psnr_head": 23.0, "dice_mean": 0.8},
        {**b, "method": "bspline", "psnr_head": 30.0},
        {**b, "method": "m", "psnr_head": 29.0, "dice_mean": 0.6},
        {**b, "case": "c", "kind": "mni", "contrast": "mni-t1", "method": "m", "psnr_head": 99.0, "trained_on": True},
        {**b, "method": "x", "skipped": "n/a"},
    ]
    rb.add_gains(rows)
    assert rows[1]["gain_bspline_head_db"] == pytest.approx(3.0) and rows[3]["gain_bspline_head_db"] == -1.0
    per = {e["method"]: e for e in rb.aggregate(rows, ("method",))}
    assert set(per) == {"bspline", "m"}  # skipped rows and the training template are not averaged
    assert per["m"]["cases"] == 2 and per["m"]["psnr_head"] == pytest.approx(26.0)
    assert per["m"]["gain_bspline_head_db"] == pytest.approx(1.0) and per["m"]["dice_mean"] == pytest.approx(0.7)
    by_orientation = {(e["method"], e["orientation"]): e for e in rb.aggregate(rows, ("method", "orientation"))}
    assert by_orientation[("m", "RAS")]["psnr_head"] == 29.0


def test_markdown_writer(tiny_run, tmp_path):
    rows, agreement, described = tiny_run
    payload = {
        "command": "python -m benchmarks.realistic --test", "methods": ["bspline", "no-such-method"],
        "skipped": {"no-such-method": rows[1]["skipped"]}, "data": "tiny test data", "cases": described,
        "rows": rows, "summary": rb.summarise(rows, agreement), "wall_s": 1.0, "complete": True,
        "environment": {"date": "today", "machine": {"cpu_count": "2", "platform": "test"}, "device": "cpu",
                        "torch_threads": 1, "versions": {"torch": "9.9"}, "cpu_model": "Test CPU",
                        "omp_num_threads": "1"},
    }
    text = rb.markdown(payload)
    assert text.startswith(rb.BEGIN) and text.rstrip().endswith(rb.END)
    assert "Test CPU" in text and "torch 9.9" in text and "1 torch thread" in text
    assert "`no-such-method`: **skipped** on every case" in text  # never silently
    assert "## Headlines" in text and "- `bspline`: " in text
    assert "| tiny-LIA | `bspline` |" in text and "| `bspline` | PSR | 1 |" in text
    table: list[str] = []
    for line in [*text.splitlines(), ""]:  # every row of a table has as many cells as its header
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert len({row.count("|") for row in table}) == 1, table
            table = []
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Quality report\n\nkept text\n")
    rb.write_section(doc, text)
    rb.write_section(doc, text.replace("tiny test data", "second run"))
    written = doc.read_text()
    assert written.startswith("# Quality report\n\nkept text\n")
    assert written.count(rb.BEGIN) == 1 and "second run" in written and "tiny test data" not in written
    partial = rb.markdown({**payload, "complete": False, "planned_cases": ["tiny-LIA", "tiny-PSR", "other"]})
    assert "PARTIAL RUN" in partial and "other" in partial


def test_merge_of_partial_runs(tiny_run):
    rows, agreement, described = tiny_run
    base = {"subset": "quick", "crop": "brain", "methods": ["bspline"], "factor": 4, "threads": 1, "wall_s": 2.0,
            "skipped": {}, "environment": {}, "data": ""}
    one = {**base, "command": "run 1", "cases": described[:1], "orientation_agreement": [],
           "rows": [r for r in rows if r["case"] == "tiny-LIA"]}
    two = {**base, "command": "run 2", "cases": described, "orientation_agreement": agreement, "rows": rows}
    merged = rb.merge_payloads([one, two])
    assert [c["case"] for c in merged["cases"]] == ["tiny-LIA", "tiny-PSR"]
    assert len(merged["rows"]) == len(rows) and merged["wall_s"] == 4.0 and not merged["complete"]
    assert merged["command"] == "run 1 ; run 2" and merged["summary"]["orientation_agreement"]
    with pytest.raises(ValueError):
        rb.merge_payloads([one, {**two, "crop": "full"}])
    # a later run that re-measures one method on one case replaces just that row
    redo = {k: v for k, v in rows[0].items() if not k.startswith("gain_")}
    redo["psnr_head"] = -1.0
    again = rb.merge_payloads([two, {**base, "command": "run 3", "threads": 2, "cases": described[:1],
                                     "orientation_agreement": [], "rows": [redo]}])  # fmt: skip
    by = {(r["case"], r["method"]): r for r in again["rows"]}
    assert len(again["rows"]) == len(rows) and by[(redo["case"], redo["method"])]["psnr_head"] == -1.0
    assert again["threads"] == [1, 2]
    # a merge merges again: its runs are kept one by one (commands, threads), not nested
    twice = rb.merge_payloads([again, {**base, "command": "run 4", "threads": 4, "cases": described[:1],
                                       "orientation_agreement": [], "rows": [redo]}])  # fmt: skip
    assert twice["command"] == "run 2 ; run 3 ; run 4" and twice["threads"] == [1, 2, 4]
    assert [run["command"] for run in twice["merged_from"]] == ["run 2", "run 3", "run 4"]
