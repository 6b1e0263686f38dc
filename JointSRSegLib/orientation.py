"""Exact voxel reorientation: the same scan in another voxel order, by axis permutation and flips only.

Why: a network sees voxel arrays, not anatomy.  A package trained on RAS-ordered volumes sees an
LIA-stored scan as a rotated, mirrored head.  The engine therefore permutes/flips every input to the
voxel orientation recorded in the package (``inference.orientation`` in model.json) and applies the
exact inverse to every output -- no resampling, so nothing is interpolated and the outputs land on the
input's own grids.

Orientation codes are those of :func:`JointSRSegLib.geometry.orientation_code`: one letter per voxel
axis, the anatomical direction the axis points *towards* (``"RAS"``: i towards Right, j Anterior,
k Superior).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import orientation_code
from .volume import Grid, Volume

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
_AXIS_OF_LETTER = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}


def check_orientation_code(code: str) -> str:
    """``"ras"`` -> ``"RAS"``; refuses codes that do not name each anatomical axis once."""
    text = str(code).upper()
    if len(text) != 3 or any(c not in _AXIS_OF_LETTER for c in text):
        raise ValueError(f"orientation code {code!r} must be three of L/R, P/A, S/I, e.g. 'RAS'")
    if sorted(_AXIS_OF_LETTER[c] for c in text) != [0, 1, 2]:
        raise ValueError(f"orientation code {code!r} names one anatomical axis twice")
    return text


@dataclass(frozen=True)
class Reorientation:
    """Voxel axis ``k`` of the target frame is input axis ``perm[k]``, reversed where ``flips[k]``."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @staticmethod
    def between(source: str, target: str) -> Reorientation:
        source, target = check_orientation_code(source), check_orientation_code(target)
        perm, flips = [], []
        for letter in target:
            j = next(i for i, c in enumerate(source) if _AXIS_OF_LETTER[c] == _AXIS_OF_LETTER[letter])
            perm.append(j)
            flips.append(source[j] != letter)
        return Reorientation(tuple(perm), tuple(flips))

    @staticmethod
    def to_code(grid_or_direction, target: str) -> Reorientation:
        """From a volume's grid (or direction matrix) to the voxel orientation ``target``."""
        direction = grid_or_direction.direction_matrix if isinstance(grid_or_direction, Grid) else grid_or_direction
        return Reorientation.between(orientation_code(direction), target)

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)

    def frame_axis(self, input_axis: int) -> int:
        """Where input voxel axis ``input_axis`` lies in the target frame."""
        return self.perm.index(int(input_axis))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``(..., I, J, K)`` in input voxel order -> the same array in target voxel order."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        for k, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=lead + k)
        return np.ascontiguousarray(out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Exact inverse of :meth:`apply` (``(..., X, Y, Z)`` in target order -> input order)."""
        lead = array.ndim - 3
        out = array
        for k, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=lead + k)
        inverse = tuple(int(np.argsort(self.perm)[i]) for i in range(3))
        return np.ascontiguousarray(np.transpose(out, tuple(range(lead)) + tuple(lead + p for p in inverse)))

    def apply_grid(self, grid: Grid) -> Grid:
        """The grid of :meth:`apply`'s output: same voxel centres in physical space, new voxel order."""
        direction = grid.direction_matrix
        spacing = np.asarray(grid.spacing)
        size = np.asarray(grid.size)
        first = np.zeros(3)  # input index of the target frame's voxel (0, 0, 0)
        new_dir = np.zeros((3, 3))
        for k, (j, flip) in enumerate(zip(self.perm, self.flips)):
            new_dir[:, k] = -direction[:, j] if flip else direction[:, j]
            first[j] = size[j] - 1 if flip else 0
        origin = grid.physical_points(first[None])[0]
        return Grid.create(size[list(self.perm)], spacing[list(self.perm)], origin, new_dir)


def reorient_volume(volume: Volume, target: str) -> Volume:
    """``volume`` stored in voxel orientation ``target`` (exact: permutation and flips only)."""
    reo = Reorientation.to_code(volume.grid, target)
    return Volume.from_grid(
        reo.apply(volume.array), reo.apply_grid(volume.grid), source=volume.source, channel_names=volume.channel_names
    )
