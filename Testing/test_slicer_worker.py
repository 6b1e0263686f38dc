"""The panel's out-of-process runs, end to end on a real MRML scene (slicer-core).

``JointSRSegLogic.runInWorker`` starts ``python -m JointSRSegLib.worker`` in its own process group;
progress comes over the pipe, results are read back into the scene.  Cancel mid-window kills the
process tree within 2 s, and neither a cancel, an error in the worker nor a crash of the worker
changes the scene.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import nodes  # noqa: E402
from JointSRSegModule.logic import CancelledError, InputError, JointSRSegLogic  # noqa: E402
from JointSRSegModule.worker_run import WorkerCrashed  # noqa: E402

from JointSRSegLib.geometry import subdivide_grid  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402

PACKAGE = "swinsr-unetr-brain-small"
ENV = {"OMP_NUM_THREADS": "1"}


def thick(size=(32, 32, 8)) -> Volume:
    i, j, k = np.meshgrid(*(np.arange(n) for n in size), indexing="ij")
    array = (300 + 100 * np.sin(i / 3.0) * np.cos(j / 4.0) + 10 * k).astype(np.float32)
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return Volume(array, (1.0, 1.0, 4.0), (12.0, -30.0, 40.0), direction, source="thick")


def scene_with(volume: Volume):
    scene = slicer.vtkMRMLScene()
    node = nodes.new_scalar_volume_node(volume, "thick")
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return scene, node


def snapshot(scene) -> list[tuple[str, str]]:
    return [(n, scene.GetNodeByID(n).GetName()) for n in nodes.scene_node_ids(scene)]


def wait_for(run, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert not run.done, f"the worker ended early: {run.stderrTail()}"
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.05)


def test_bspline_in_worker_matches_in_process():
    volume = thick()
    scene, node = scene_with(volume)
    logic = JointSRSegLogic(scene)
    request = logic.prepare(node, model="bspline", tasks=("sr",), scale=4)
    run = logic.runInWorker(request, env=ENV)
    seen = []
    while not run.done:
        seen.append((run.fraction, run.stage))
        time.sleep(0.01)
    outputs = run.finish()
    sr = outputs["sr"]
    assert nodes.node_grid(sr).almost_equal(subdivide_grid(volume.grid, 4, 2))
    assert sr.GetAttribute("JointSRSeg.model") == "bspline"
    reference = JointSRSegLogic(scene_with(volume)[0]).process(scene_with(volume)[1], model="bspline", scale=4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(sr), slicer.util.arrayFromVolume(reference["sr"]))
    assert not run.jobDir.exists(), "the job folder is removed after the import"
    assert all(0.0 <= f <= 1.0 for f, _ in seen)


def test_shipped_package_in_worker_imports_sr_and_segmentation():
    volume = thick()
    scene, node = scene_with(volume)
    logic = JointSRSegLogic(scene)
    request = logic.prepare(node, model=PACKAGE, tasks=("sr", "seg"), scale=4, device="cpu")
    run = logic.runInWorker(request, env=ENV)
    stages = set()
    while not run.done:
        stages.add(run.stage)
        time.sleep(0.02)
    outputs = run.finish()
    assert run.device and run.device.startswith("cpu")
    assert nodes.node_grid(outputs["sr"]).almost_equal(subdivide_grid(volume.grid, 4, 2))
    segmentation = outputs["seg"].GetSegmentation()
    assert segmentation.GetNumberOfSegments() >= 2
    assert outputs["sr"].GetAttribute("JointSRSeg.model") == PACKAGE
    assert "running" in stages or any("running" in s for s in stages)


def _started_package_run(size=(96, 96, 24)):
    volume = thick(size)
    scene, node = scene_with(volume)
    logic = JointSRSegLogic(scene)
    request = logic.prepare(node, model=PACKAGE, tasks=("sr", "seg"), scale=4, device="cpu")
    before = snapshot(scene)  # after prepare (which may create the scene's subject hierarchy)
    run = logic.runInWorker(request, env=ENV)
    # mid-window: the network has reported progress inside its sliding-window loop
    wait_for(run, lambda: run.stage not in ("starting",) and run.fraction > 0.06, timeout=300)
    return scene, before, run


def test_cancel_mid_window_kills_the_worker_within_two_seconds():
    scene, before, run = _started_package_run()
    pid = run.process.pid
    started = time.monotonic()
    run.cancel()
    assert run.wait(2.0), "the worker was still alive 2 s after Cancel"
    assert time.monotonic() - started < 2.0
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
    with pytest.raises(CancelledError):
        run.finish()
    assert snapshot(scene) == before


def test_worker_crash_leaves_the_scene_unchanged():
    scene, before, run = _started_package_run()
    os.kill(run.process.pid, signal.SIGKILL)  # what a CUDA abort or the OOM killer does
    assert run.wait(5.0)
    with pytest.raises(WorkerCrashed, match="SIGKILL"):
        run.finish()
    assert snapshot(scene) == before


def test_error_in_the_worker_is_reported_with_its_message():
    scene, node = scene_with(thick())
    logic = JointSRSegLogic(scene)
    request = logic.prepare(node, model=PACKAGE, tasks=("sr",), scale=4, device="cuda:7")
    before = snapshot(scene)
    run = logic.runInWorker(request, env=dict(ENV, CUDA_VISIBLE_DEVICES=""))
    assert run.wait(120)
    with pytest.raises(InputError, match="cuda"):
        run.finish()
    assert snapshot(scene) == before
