"""The method registry: one plain dict, built at import, name -> method class."""

from __future__ import annotations

from typing import Any

from dpkd_bench.errors import UserError
from dpkd_bench.methods.base import Method, TrainContext
from dpkd_bench.methods.dpkd import DPKD
from dpkd_bench.methods.dpkd_token import DPKDToken
from dpkd_bench.methods.gkd import GKD
from dpkd_bench.methods.kd import KD
from dpkd_bench.methods.rkl import RKL
from dpkd_bench.methods.seqkd import SeqKD
from dpkd_bench.methods.sft import SFT
from dpkd_bench.methods.skew_fkl import SkewFKL
from dpkd_bench.methods.skew_rkl import SkewRKL
from dpkd_bench.methods.tvd import TVD
from dpkd_bench.recipe import build, did_you_mean


def _register(classes: list[type[Method]]) -> dict[str, type[Method]]:
    registry: dict[str, type[Method]] = {}
    for cls in classes:
        if cls.name in registry:
            raise RuntimeError(f"two methods are registered as '{cls.name}'")
        registry[cls.name] = cls
    return registry


METHODS: dict[str, type[Method]] = _register(
    [SFT, KD, SeqKD, RKL, SkewFKL, SkewRKL, GKD, TVD, DPKD, DPKDToken]
)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(
            f"unknown method '{name}'{did_you_mean(name, METHODS)}; "
            f"known methods: {', '.join(METHODS)} (see `dpkd-bench ls`)"
        )
    return METHODS[name]


def get_method(name: str, **overrides: Any) -> Method:
    """Instantiate a registered method; ``overrides`` are checked against its Config."""
    cls = method_class(name)
    return cls(build(cls.Config, overrides, where=f"method_args.{name}"))


def validate_method_args(method_args: dict[str, dict[str, Any]]) -> None:
    """Every ``method_args`` section must name a method and fit its Config."""
    for name, args in method_args.items():
        get_method(name, **args)


__all__ = [
    "METHODS",
    "Method",
    "TrainContext",
    "get_method",
    "method_class",
    "validate_method_args",
]
