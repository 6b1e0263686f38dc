"""Regenerate the screenshots of the Slicer module into ``docs/images/`` (no Slicer desktop needed).

The module runs on the bundled real thick-slice sample (OpenNeuro ds000011, T2 with 5 mm axial
slices, loaded through Slicer's own volume reader as the Sample Data entry loads it): SR and its
uncertainty by the shipped package ``swinsr-unetr-brain-small`` (the panel's default for SR x4), GM/WM
segmentation and its uncertainty by ``atropos`` on that SR output ("Segment SR output with: atropos";
Atropos is the default for segmentation, no shipped package beats it on real scans), all through
``JointSRSegLogic.process`` on slicer-core's real MRML scene.  Each
image is rendered by Slicer's slice pipeline (vtkMRMLSliceLogic and its displayable managers, through
trame-slicer) offscreen with OSMesa -- the renderer the rendering tests check pixel by pixel::

    OMP_NUM_THREADS=2 .venv/bin/python scripts/make_screenshots.py      # about 90 s on two CPU cores

Views are coronal: the thick slices are axial, so the through-plane resolution shows across the rows.
The module's Qt panel itself cannot be rendered on machines without the Slicer desktop application;
no image here shows or imitates it.  Needs ``libosmesa6`` (``apt-get install libosmesa6``).
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


SAMPLE_MODEL = "swinsr-unetr-brain-small"
SEG_MODEL = "atropos"
FACTOR = 4
IMAGES = ("slicer_input_sr.png", "slicer_sr_uncertainty.png", "slicer_segmentation.png")


def write_png(pixels: np.ndarray, path: str | Path) -> None:
    """RGB pixels (rows top to bottom) as a PNG, through VTK's writer."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkIOImage import vtkPNGWriter

    height, width, _ = pixels.shape
    image = vtkImageData()
    image.SetDimensions(width, height, 1)
    flat = np.ascontiguousarray(pixels[::-1]).reshape(-1, 3)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    writer = vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()


def run_on_sample(app, model: str = SAMPLE_MODEL, factor: int = FACTOR, seg_model: str | None = SEG_MODEL
                  ) -> tuple[object, dict]:
    """The bundled 5 mm T2, read by Slicer's volume reader, through the module's logic."""
    from JointSRSegModule import sample_data
    from JointSRSegModule.logic import JointSRSegLogic

    sample = sample_data.THICK_SAMPLE
    node = app.io_manager.load_volumes(str(sample_data.sample_dir() / sample.file))[0]
    node.SetName(sample.node)
    outputs = JointSRSegLogic(app.scene).process(node, model=model, tasks=("sr", "seg"), scale=factor,
                                                 uncertainty=True, device="cpu", opacity=0.6,
                                                 segModel=seg_model)
    return node, outputs


def _coronal_centre(node) -> float:
    """The A coordinate of the volume's centre: the coronal slice through the middle of the head."""
    bounds = [0.0] * 6
    node.GetRASBounds(bounds)
    return 0.5 * (bounds[2] + bounds[3])


def make_screenshots(out_dir: Path, size: tuple[int, int] = (400, 400)) -> list[Path]:
    """Coronal slice views: input | SR; SR with the SR uncertainty overlay (what the module shows after a
    run); segmentation overlay | segmentation uncertainty overlay."""
    app = new_application()  # also puts the module's folder on sys.path
    view = new_slice_view(app, "Coronal", size)
    from JointSRSegModule import nodes

    node, outputs = run_on_sample(app)
    sr, seg = outputs["sr"], outputs["seg"]
    offset = _coronal_centre(node)
    seg.GetDisplayNode().SetVisibility(False)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / name for name in IMAGES]

    def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.concatenate([left, np.full((left.shape[0], 6, 3), 255, np.uint8), right], axis=1)

    for volume in (node, sr):  # nearest-neighbour display: every voxel as acquired or computed
        volume.GetDisplayNode().SetInterpolate(False)
    nodes.show_in_slice_views(app.scene, node, None, 0.0)
    thick = render_slice_view(view, offset_ras=offset)
    nodes.show_in_slice_views(app.scene, sr, None, 0.0)
    write_png(side_by_side(thick, render_slice_view(view, offset_ras=offset)), written[0])

    nodes.show_in_slice_views(app.scene, sr, outputs["uncertainty_sr"], 0.6)
    render_slice_view(view, written[1], offset_ras=offset)

    seg.GetDisplayNode().SetVisibility(True)
    seg.GetDisplayNode().SetOpacity2DFill(0.45)
    nodes.show_in_slice_views(app.scene, sr, None, 0.0)
    segments = render_slice_view(view, offset_ras=offset)
    seg.GetDisplayNode().SetVisibility(False)
    nodes.show_in_slice_views(app.scene, sr, outputs["uncertainty_seg"], 0.6)
    write_png(side_by_side(segments, render_slice_view(view, offset_ras=offset)), written[2])
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
