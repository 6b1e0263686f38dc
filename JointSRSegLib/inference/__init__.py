"""Inference engine: model packages over whole volumes (see ``engine.py``)."""

from .engine import run_model_package

__all__ = ["run_model_package"]
