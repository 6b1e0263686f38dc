"""The JointSRSeg module's helpers (no Qt): logic, node conversion, pre-run checks, worker runs,
first-run installs and sample data.

A package, not top-level files: Slicer loads every ``.py`` file at the top of a scripted-modules
folder as a module, so only ``JointSRSeg.py`` sits there.  Console use::

    from JointSRSegModule.logic import JointSRSegLogic
"""
