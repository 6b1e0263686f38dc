"""Offscreen rendering of the result as a user sees it: SR volume with the uncertainty overlay.

Rendered with slicer-core's slice pipeline through OSMesa (the renderer behind the README
screenshots, scripts/make_screenshots.py).  Skipped only when the OSMesa library cannot be loaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "JointSRSeg")]

import make_screenshots as screenshots  # noqa: E402

PROBLEM = screenshots.osmesa_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")
OPACITY = 0.6
HIGH = 0.9


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    app = screenshots.new_application()
    view = screenshots.new_slice_view(app, "Axial", (240, 240))
    from JointSRSegModule import nodes
    from JointSRSegModule.logic import JointSRSegLogic

    from JointSRSegLib.volume import Volume

    # bright square on black, 1 x 1 x 4 mm axial slices; LPS identity -> patient left is screen right
    array = np.zeros((48, 48, 8), np.float32)
    array[8:40, 8:40, :] = 100.0
    node = nodes.new_scalar_volume_node(Volume(array, (1.0, 1.0, 4.0), (0, 0, 0), np.eye(3), source="T2"), "T2")
    app.scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevelMinMax(0.0, 100.0)
    logic = JointSRSegLogic(app.scene)
    sr = logic.process(node, model="nearest", tasks=("sr",), scale=4, opacity=OPACITY)["sr"]
    sr_volume = nodes.volume_from_nodes([sr])
    uncertainty = np.zeros(sr_volume.shape, np.float32)
    uncertainty[24:, :, :] = HIGH  # i >= 24: patient-left half, drawn on the right of the screen
    out = logic.createOutputNodes(node, {"uncertainty_sr": sr_volume.with_array(uncertainty[None])}, scale=4,
                                  opacity=OPACITY)
    path = tmp_path_factory.mktemp("render") / "overlay.png"
    pixels = screenshots.render_slice_view(view, path)
    return pixels, path, out["uncertainty_sr"]


def test_png_written(rendered):
    pixels, path, _ = rendered
    assert path.stat().st_size > 500 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels.shape == (240, 240, 3)


def test_background_plain_where_uncertainty_is_zero(rendered):
    pixels, _, _ = rendered
    height, width, _ = pixels.shape
    square_left = pixels[height // 2 - 20 : height // 2 + 20, width // 2 - 60 : width // 2 - 20]
    assert np.all(square_left == 255), "zero uncertainty must leave the grey-level SR volume untouched"
    corner = pixels[4:12, 4:12]
    assert np.all(corner == 0)


def test_overlay_colour_where_uncertainty_is_high(rendered):
    pixels, _, _ = rendered
    height, width, _ = pixels.shape
    from JointSRSegModule import nodes

    square_right = pixels[height // 2 - 20 : height // 2 + 20, width // 2 + 20 : width // 2 + 60].reshape(-1, 3)
    expected = OPACITY * np.array(nodes.inferno_rgb(HIGH)) * 255 + (1 - OPACITY) * 255
    np.testing.assert_allclose(square_right.mean(axis=0), expected, atol=8)
    assert square_right.std(axis=0).max() < 3
    outside_right = pixels[4:12, width - 40 : width - 30].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(outside_right, OPACITY * np.array(nodes.inferno_rgb(HIGH)) * 255, atol=8)
