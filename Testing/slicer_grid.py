"""The grid of a Slicer volume node read straight from its IJK-to-RAS matrix, for the Slicer tests.

Why independent of the module's own converter (``JointSRSegModule.nodes``): the tests check that converter.
"""

from __future__ import annotations

import numpy as np
import vtk

from JointSRSegLib.volume import Grid


def grid_from_slicer(node) -> Grid:
    """The node's grid (LPS) from Slicer's IJK-to-RAS."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.array(node.GetSpacing())
    return Grid.create(node.GetImageData().GetDimensions(), spacing, lps[:3, 3], lps[:3, :3] / spacing)
