"""The method registry: one plain dict, built at import, name -> method class."""

from __future__ import annotations

import itertools
from typing import Any

import yaml

from dpkd_bench.errors import UserError
from dpkd_bench.methods.base import Method, TrainContext, check_corpus
from dpkd_bench.methods.dpkd import DPKD
from dpkd_bench.methods.dpkd_token import DPKDToken
from dpkd_bench.methods.gkd import GKD
from dpkd_bench.methods.kd import KD
from dpkd_bench.methods.minillm import MiniLLM
from dpkd_bench.methods.rkl import RKL
from dpkd_bench.methods.seqkd import SeqKD
from dpkd_bench.methods.sft import SFT
from dpkd_bench.methods.skew_fkl import SkewFKL
from dpkd_bench.methods.skew_rkl import SkewRKL
from dpkd_bench.methods.tvd import TVD
from dpkd_bench.recipe import build, did_you_mean
from dpkd_bench.variants import parse_variant, variant_name


def _register(classes: list[type[Method]]) -> dict[str, type[Method]]:
    registry: dict[str, type[Method]] = {}
    for cls in classes:
        if cls.name in registry:
            raise RuntimeError(f"two methods are registered as '{cls.name}'")
        registry[cls.name] = cls
    return registry


METHODS: dict[str, type[Method]] = _register(
    [SFT, KD, SeqKD, RKL, MiniLLM, SkewFKL, SkewRKL, GKD, TVD, DPKD, DPKDToken]
)
# The reference row of paired tests and of "gap recovered", and the method that trains the
# teacher and student_init: supervised fine-tuning.
REFERENCE_METHOD = SFT.name
# The embedded default's methods: the reference, word-level KD, and the two DPKD forms.
DEFAULT_METHODS = [SFT.name, KD.name, DPKDToken.name, DPKD.name]


def supervised_method(**overrides: Any) -> Method:
    """The supervised fine-tuning method (``REFERENCE_METHOD``) that trains the teacher and
    student_init, with ``overrides`` of its Config."""
    return get_method(REFERENCE_METHOD, **overrides)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(
            f"unknown method '{name}'{did_you_mean(name, METHODS)}; "
            f"known methods: {', '.join(METHODS)} (see `dpkd-bench ls`)"
        )
    return METHODS[name]


def get_method(name: str, **overrides: Any) -> Method:
    """Instantiate a registered method (or a ``name[key=value,...]`` variant of one).

    ``overrides`` and the variant's values are checked against the method's Config; the
    variant's values win.
    """
    base, variant = parse_variant(name)
    cls = method_class(base)
    return cls(build(cls.Config, {**overrides, **variant}, where=f"method_args.{base}"))


def expand_sweeps(methods: list[str], sweeps: list[str]) -> list[str]:
    """Expand ``method.key=v1,v2`` sweeps into the grid of named variants of that method."""
    grids: dict[str, list[tuple[str, list[Any]]]] = {}
    for sweep in sweeps:
        target, sep, values = sweep.partition("=")
        base, dot, key = target.partition(".")
        if not (sep and dot and key and values):
            raise UserError(
                f"bad --sweep '{sweep}': expected method.key=v1,v2 (e.g. dpkd.beta=0.05,0.1)"
            )
        method_class(base)
        grids.setdefault(base, []).append((key, [yaml.safe_load(v) for v in values.split(",")]))
    expanded: list[str] = []
    for spec in methods:
        base, fixed = parse_variant(spec)
        axes = grids.get(base)
        if not axes:
            expanded.append(spec)
            continue
        for combo in itertools.product(*(values for _, values in axes)):
            overrides = {**fixed, **dict(zip((k for k, _ in axes), combo, strict=True))}
            expanded.append(variant_name(base, overrides))
    unknown = set(grids) - {parse_variant(m)[0] for m in methods}
    if unknown:
        raise UserError(
            f"--sweep names {sorted(unknown)} but --methods does not include them; add them"
        )
    return expanded


def validate_methods(
    methods: list[str], method_args: dict[str, dict[str, Any]], has_corpus: bool = True
) -> None:
    """Every listed method (or variant) and every ``method_args`` section must resolve, and a
    listed method with a pre-training term needs a corpus (``has_corpus``)."""
    for name, args in method_args.items():
        get_method(name, **args)
    for spec in methods:
        check_corpus(get_method(spec, **method_args.get(parse_variant(spec)[0], {})), has_corpus)


__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "REFERENCE_METHOD",
    "Method",
    "TrainContext",
    "get_method",
    "method_class",
    "supervised_method",
    "validate_methods",
]
