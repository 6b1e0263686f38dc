"""A thin stand-in for the Qt-only names ``JointSRSeg.py`` touches, on top of slicer-core's real MRML.

The desktop application cannot run here.  :func:`install` puts in ``sys.modules``: ``qt`` (a timer,
enums), ``slicer.ScriptedLoadableModule`` (module, widget, logic and test base classes; ``runTest`` and
``delayDisplay`` as in Slicer's ``Base/Python/slicer/ScriptedLoadableModule.py``), and
``slicer.parameterNodeWrapper`` (fields only, no GUI binding); it adds ``slicer.mrmlScene``, ``slicer.app``
and the ``slicer.util`` GUI helpers (``loadUI``, ``childWidgetVariables``, dialogs, ``delayDisplay``).
The ``ui`` answers only the widget names found in the .ui file, so the widget cannot use a name the
.ui lacks.  Meant for a fresh interpreter (tests run it in a subprocess): it replaces modules globally.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ERRORS: list[str] = []  # every errorDisplay text
MESSAGES: list[str] = []  # every delayDisplay text


class Signal:
    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)


class Widget:
    """A .ui widget: any property can be set and read; signals are recorded."""

    def __init__(self, name: str) -> None:
        self.__dict__.update(name=name, items=[], _signals={}, currentIndex=0, currentText="auto", text="")

    def __getattr__(self, attr: str) -> Any:
        if attr.endswith("Changed") or attr in ("clicked", "timeout"):
            return self._signals.setdefault(attr, Signal())
        raise AttributeError(f"{self.name}.{attr}")

    def connect(self, signal, slot) -> None:
        self._signals.setdefault(signal, Signal()).connect(slot)

    def blockSignals(self, on) -> None:
        pass

    def clear(self) -> None:
        self.items.clear()

    def addItem(self, text, data=None) -> None:
        self.items.append((text, data))

    def setItemData(self, index, value, role) -> None:
        pass

    def findData(self, data) -> int:
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index) -> None:
        self.__dict__["currentIndex"] = index

    def itemData(self, index):
        return self.items[index][1]

    def setMRMLScene(self, scene) -> None:
        pass


class UI:
    def __init__(self, names: set[str]) -> None:
        self.__dict__["_w"] = {n: Widget(n) for n in names}

    def __getattr__(self, name: str) -> Widget:
        if name not in self._w:
            raise AssertionError(f"the widget uses ui.{name}, which JointSRSeg.ui does not have")
        return self._w[name]


class NodeModify:
    def __init__(self, node) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


class VTKObservationMixin:
    def __init__(self) -> None:
        self.observed: list = []

    def addObserver(self, obj, event, method) -> None:
        self.observed.append((obj, event, method))

    def removeObserver(self, obj, event, method) -> None:
        pass

    def removeObservers(self) -> None:
        self.observed = []


def _qt() -> types.ModuleType:
    qt = types.ModuleType("qt")

    class QTimer:
        def __init__(self) -> None:
            self.timeout = Signal()
            self.active = False

        def setInterval(self, ms) -> None:
            pass

        def start(self) -> None:
            self.active = True

        def stop(self) -> None:
            self.active = False

    qt.QTimer = QTimer
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=3)
    qt.QEventLoop = types.SimpleNamespace(ExcludeUserInputEvents=1)
    qt.QApplication = types.SimpleNamespace(setOverrideCursor=lambda c: None, restoreOverrideCursor=lambda: None)
    return qt


def _scripted_loadable_module(root: Path, slicer) -> types.ModuleType:
    from JointSRSegModule._compat import ScriptedLoadableModuleLogic

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        """Slicer's: moduleName from the class, the self-test registered in ``slicer.selfTests``."""

        def __init__(self, parent) -> None:
            self.parent = parent
            self.moduleName = self.__class__.__name__
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def runTest(self, msec: int = 100, **kwargs) -> None:
            """As in Slicer: instantiate ``<ModuleName>Test`` from the module's file and call its runTest."""
            module = importlib.import_module(self.__module__)
            className = self.moduleName + "Test"
            try:
                TestCaseClass = getattr(module, className)
            except AttributeError:
                raise AssertionError(f"Test case class not found: {self.__module__}.{className} ") from None
            testCase = TestCaseClass()
            testCase.messageDelay = msec
            testCase.runTest(**kwargs)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = types.SimpleNamespace(addWidget=lambda w: None)

        def setup(self) -> None:
            pass

        def resourcePath(self, name: str) -> str:
            return str(root / "JointSRSeg" / "Resources" / name)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """Slicer's: a TestCase constructed without a method name, ``delayDisplay`` to slicer.util."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0

        def delayDisplay(self, message, requestedDelay=None, msec=None) -> None:
            if hasattr(self, "messageDelay"):
                msec = self.messageDelay
            slicer.util.delayDisplay(message, msec if msec is not None else (requestedDelay or 100))

        def runTest(self) -> None:
            raise AssertionError("No test is defined in " + self.__class__.__name__)

    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    return slm


def _parameter_node_wrapper() -> types.ModuleType:
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.Choice = lambda values: ("choice", tuple(values))
    pnw.WithinRange = lambda lo, hi: ("range", lo, hi)

    def parameterNodeWrapper(cls):
        fields = dict(cls.__annotations__)

        class Wrapper:
            def __init__(self, node) -> None:
                object.__setattr__(self, "parameterNode", node)
                for name in fields:
                    object.__setattr__(self, name, getattr(cls, name, None))

            def __setattr__(self, name, value) -> None:
                assert name in fields, f"no parameter {name}"
                object.__setattr__(self, name, value)

            def connectGui(self, ui) -> str:
                return "tag"

            def disconnectGui(self, tag) -> None:
                pass

        Wrapper.fields = fields
        return Wrapper

    pnw.parameterNodeWrapper = parameterNodeWrapper
    return pnw


def install(root: Path):
    """Install the stand-ins; returns the ``slicer`` package with a fresh ``slicer.mrmlScene``."""
    root = Path(root)
    sys.path[:0] = [str(root), str(root / "JointSRSeg")]
    import slicer

    sys.modules["qt"] = _qt()
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.app = types.SimpleNamespace(connect=lambda *a: None, processEvents=lambda *a: None)
    names = {w.get("name") for w in ET.parse(root / "JointSRSeg/Resources/UI/JointSRSeg.ui").iter("widget")}
    util = slicer.util
    util.loadUI = lambda path: Widget("JointSRSeg")
    util.childWidgetVariables = lambda widget: UI(names)
    util.errorDisplay = lambda text, **kw: ERRORS.append(text)
    util.confirmOkCancelDisplay = lambda *a, **k: False
    util.delayDisplay = lambda message, msec=None, **kw: MESSAGES.append(str(message))
    util.NodeModify = NodeModify
    util.VTKObservationMixin = VTKObservationMixin
    sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule = _scripted_loadable_module(
        root, slicer)
    sys.modules["slicer.parameterNodeWrapper"] = slicer.parameterNodeWrapper = _parameter_node_wrapper()
    return slicer
