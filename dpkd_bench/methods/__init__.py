"""Distillation methods: one file each, behind one interface (``methods/base.py``).

The registry (``methods/registry.py``: ``METHODS``, ``get_method``, plugins) loads on first
use, so that importing the names below costs nothing (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

# The reference row of paired tests and of "gap recovered", and the method that trains the
# teacher and student_init: supervised fine-tuning.
REFERENCE_METHOD = "sft"
# The embedded default's methods: the reference, word-level KD, and the two DPKD forms.
DEFAULT_METHODS = (REFERENCE_METHOD, "kd", "dpkd_token", "dpkd")

_REGISTRY = (
    "ENTRY_POINT_GROUP",
    "METHODS",
    "PLUGIN_SOURCES",
    "TEACHER_FORCED",
    "expand_sweeps",
    "get_method",
    "load_plugins",
    "method_class",
    "plugin_files",
    "plugin_sources",
    "supervised_method",
    "validate_methods",
)
_BASE = ("Method", "MethodConfig", "TrainContext")


def __getattr__(name: str) -> Any:
    if name in _REGISTRY:
        return getattr(importlib.import_module("dpkd_bench.methods.registry"), name)
    if name in _BASE:
        return getattr(importlib.import_module("dpkd_bench.methods.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_METHODS", "REFERENCE_METHOD", *_REGISTRY, *_BASE]
