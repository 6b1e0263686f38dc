"""Stand-ins for the Slicer application classes the logic uses, for slicer-core without Slicer's Qt layer.

``slicer.ScriptedLoadableModule`` exists in Slicer and PythonSlicer; slicer-core (the MRML wheels the
tests run on) lacks it.  This keeps the same contract: ``moduleName`` is the class name without its
``Logic`` suffix and the parameter node is a singleton ``vtkMRMLScriptedModuleNode`` tagged with it
(``JointSRSegLogic.getParameterNode`` implements that on the logic's own scene).
"""

from __future__ import annotations


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[: -len("Logic")]
        self.isSingletonParameterNode = True
