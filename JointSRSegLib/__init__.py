"""JointSRSegLib: joint super-resolution, slice interpolation and segmentation of MRI/CT volumes.

The library behind the ``jointsrseg`` CLI, the training package and the 3D Slicer module
(no Slicer imports here).  Start with :func:`read_volume` and :func:`predict`.
"""

from .api import CancelToken, Prediction, predict
from .errors import InputError
from .geometry import insert_grid, subdivide_grid, through_plane_axis
from .io import read_volume, read_volumes, write_volume
from .volume import Grid, Volume

__all__ = [
    "CancelToken",
    "Grid",
    "InputError",
    "Prediction",
    "Volume",
    "insert_grid",
    "predict",
    "read_volume",
    "read_volumes",
    "subdivide_grid",
    "through_plane_axis",
    "write_volume",
]
