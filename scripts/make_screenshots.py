"""Regenerate the README screenshots of the Slicer module into ``docs/images/`` (no Slicer needed).

Uses slicer-core's real MRML scene and slice-view pipeline (through trame-slicer) rendered
offscreen with OSMesa, the same renderer the rendering tests check pixel by pixel::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_screenshots.py

Needs ``libosmesa6`` (``apt-get install libosmesa6``).  The uncertainty shown is the spread of
three classical interpolators (bspline, linear, lanczos): an honest ensemble, not a trained model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OSMESA_NAMES = ("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")


def osmesa_problem() -> str | None:
    """``None`` when the OSMesa library loads, else why not (the tests' only skip reason)."""
    names = list(OSMESA_NAMES) + [n for n in [ctypes.util.find_library("OSMesa")] if n]
    for name in names:
        try:
            ctypes.CDLL(name)
            return None
        except OSError:
            continue
    return "OSMesa library (libOSMesa) cannot be loaded; install it with: apt-get install libosmesa6"


def use_offscreen_opengl() -> None:
    """Select VTK's OSMesa window; must run before the first render window is created."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")
    for path in (ROOT, ROOT / "JointSRSeg"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def new_application():
    """A Slicer-like application core: scene, colour/segmentation/subject-hierarchy logics."""
    use_offscreen_opengl()
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def new_slice_view(app, orientation: str = "Axial", size: tuple[int, int] = (320, 320), name: str = "Red"):
    """An offscreen slice view on the app's scene (creates its slice and composite nodes)."""
    from trame_slicer.views import SliceView
    from trame_slicer.views.render_scheduler import DirectRendering

    view = SliceView(app.scene, app.app_logic, name, scheduled_render_strategy=DirectRendering())
    view.render_window().SetOffScreenRendering(1)
    view.render_window().SetMultiSamples(0)
    view.render_window().SetSize(*size)
    view.set_orientation(orientation)
    return view


def render_slice_view(view, path: str | Path | None = None, offset_ras: float | None = None) -> np.ndarray:
    """Fit the view to its background, render and return RGB pixels (rows top to bottom); save PNG."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    window = view.render_window()
    view._logic.ResizeSliceNode(*window.GetSize())
    view._logic.FitSliceToBackground()
    if offset_ras is not None:
        view._logic.SetSliceOffset(offset_ras)
    view._logic.GetImageDataConnection()
    view._update_image_data_connection()
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)[::-1]
    if path is not None:
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
    return np.ascontiguousarray(pixels)


def _tissue_labels() -> list[dict]:
    """The GM/WM labels with their SNOMED CT codes, as the atropos baseline lists them."""
    from JointSRSegModule.checks import TISSUE_LABELS

    return [dict(label) for label in TISSUE_LABELS]


def _thick(app, path: Path, factor: int):
    """A 1 mm sample volume as a 4 mm thick-slice acquisition (slice profile of the sr protocol)."""
    from JointSRSegModule import nodes

    from JointSRSegLib.degradation import simulate_thick_slices
    from JointSRSegLib.io import read_volume

    volume = read_volume(path)
    thick = simulate_thick_slices(volume.with_array(volume.array.astype("float32")), factor, 2)
    node = nodes.new_scalar_volume_node(thick, path.name.split("_1mm")[0].replace("_", " ") + " 4 mm")
    app.scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node, thick


def make_screenshots(out_dir: Path, size: tuple[int, int] = (480, 480), factor: int = 4) -> list[Path]:
    """SR with the uncertainty overlay, and the segmentation node on the SR grid."""
    app = new_application()
    view = new_slice_view(app, "Axial", size)
    from JointSRSegModule import nodes
    from JointSRSegModule.logic import JointSRSegLogic

    from JointSRSegLib.api import predict
    from JointSRSegLib.uncertainty import sample_variance_map

    sample = ROOT / "Resources" / "SampleData"
    node, thick = _thick(app, sample / "MNI152_T1_1mm.nii.gz", factor)
    logic = JointSRSegLogic(app.scene)
    sr = logic.process(node, model="bspline", tasks=("sr",), scale=factor, opacity=0.6)["sr"]
    methods = ("bspline", "linear", "lanczos")
    runs = [predict(thick, model=m, tasks=("sr",), scale=factor).outputs["sr"] for m in methods]
    spread = sample_variance_map(np.stack([r.array[0] for r in runs]))
    unc = logic.createOutputNodes(node, {"uncertainty_sr": runs[0].with_array(spread[None])}, scale=factor,
                                  opacity=0.8)["uncertainty_sr"]
    unc.GetDisplayNode().SetThreshold(0.12, 1.0)  # show where the interpolators disagree, not the noise floor
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "slicer_sr_uncertainty.png"]
    render_slice_view(view, written[-1])

    labels_node, labels = _thick(app, sample / "MNI152_tissue_1mm.nii.gz", factor)
    label_sr = predict(labels.with_array(np.rint(labels.array).astype("uint8")), model="nearest", tasks=("sr",),
                       scale=factor).outputs["sr"]
    seg = logic.createOutputNodes(node, {"seg": label_sr}, scale=factor, labels=_tissue_labels())["seg"]
    seg.GetDisplayNode().SetOpacity2DFill(0.45)
    nodes.show_in_slice_views(app.scene, sr, None, 0.0)
    app.scene.RemoveNode(labels_node)
    written.append(out_dir / "slicer_segmentation.png")
    render_slice_view(view, written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    problem = osmesa_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    for path in make_screenshots(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
