"""The one image type of the library: a channels-first array with its physical geometry.

Convention (the one ITK and 3D Slicer use): ``array`` has shape ``(C, I, J, K)`` where
``I, J, K`` are the voxel index axes in ITK order (``I`` is the fastest-varying axis in the file).
The physical position (LPS, millimetres) of voxel ``(i, j, k)`` is
``origin + direction @ (spacing * (i, j, k))``; the columns of ``direction`` are the unit
vectors of the three voxel axes.  Every function that changes the grid returns a new
``Volume`` whose geometry is computed explicitly; nothing is reoriented behind the user's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3D voxel grid: size, spacing (mm), origin (LPS mm) and direction (3x3)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]

    @staticmethod
    def create(size, spacing, origin, direction) -> Grid:
        d = np.asarray(direction, dtype=float).reshape(3, 3)
        return Grid(
            size=tuple(int(s) for s in size),
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in origin),
            direction=tuple(tuple(float(v) for v in row) for row in d),
        )

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction, dtype=float)

    def index_to_physical_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping voxel indices (i, j, k, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    def physical_points(self, indices: np.ndarray) -> np.ndarray:
        """LPS coordinates of an ``(N, 3)`` array of (possibly fractional) voxel indices."""
        m = self.index_to_physical_matrix()
        return np.asarray(indices, dtype=float) @ m[:3, :3].T + m[:3, 3]

    def all_physical_points(self) -> np.ndarray:
        """LPS coordinates of every voxel centre, shape ``(I, J, K, 3)``."""
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.size], indexing="ij"), axis=-1)
        return self.physical_points(idx.reshape(-1, 3)).reshape(*self.size, 3)

    def almost_equal(self, other: Grid, tol: float = 1e-6) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, atol=tol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=tol * max(1.0, np.abs(self.origin).max()), rtol=0)
            and np.allclose(self.direction_matrix, other.direction_matrix, atol=tol, rtol=0)
        )


@dataclass(frozen=True)
class Volume:
    """A 3D image with channels: ``array`` is ``(C, I, J, K)``; see the module docstring."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str | None = None
    channel_names: tuple[str, ...] | None = None

    def __post_init__(self):
        arr = self.array
        if arr.ndim == 3:
            object.__setattr__(self, "array", arr[None])
        elif arr.ndim != 4:
            raise ValueError(f"Volume array must be (C, I, J, K) or (I, J, K); got shape {arr.shape}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=float).reshape(3, 3))

    @staticmethod
    def from_grid(array: np.ndarray, grid: Grid, **kwargs) -> Volume:
        return Volume(array, grid.spacing, grid.origin, grid.direction_matrix, **kwargs)

    @property
    def grid(self) -> Grid:
        return Grid.create(self.shape, self.spacing, self.origin, self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial size ``(I, J, K)`` (without the channel axis)."""
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    def with_array(self, array: np.ndarray, **kwargs) -> Volume:
        """Same geometry, new voxel values (shape must match spatially)."""
        out = replace(self, array=array, **kwargs)
        if out.shape != self.shape:
            raise ValueError(f"with_array keeps the grid: expected spatial shape {self.shape}, got {out.shape}")
        return out

    def with_grid(self, array: np.ndarray, grid: Grid, **kwargs) -> Volume:
        """New voxel values on a new grid (geometry taken from ``grid``)."""
        out = replace(
            self, array=array, spacing=grid.spacing, origin=grid.origin, direction=grid.direction_matrix, **kwargs
        )
        if out.shape != grid.size:
            raise ValueError(f"array shape {out.shape} does not match grid size {grid.size}")
        return out

    def channel(self, c: int) -> Volume:
        return replace(self, array=self.array[c : c + 1], channel_names=None)
