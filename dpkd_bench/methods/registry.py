"""The method registry: name -> method class, the built-in methods and the plugins.

A plugin is a :class:`Method` subclass written outside the package, registered from a Python
file (``--plugin path.py``, a recipe's ``plugins:`` list), an importable module
(``--plugin package.module``) or the entry-point group ``dpkd_bench.methods`` of an installed
distribution. Once registered it is a method like the others: ``ls``, recipes, variants,
sweeps, runs, resume, the planner and the report see no difference. The run's manifest records
where each plugin came from and a hash of its source (``plugin_sources``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dpkd_bench.config import build, did_you_mean
from dpkd_bench.errors import UserError
from dpkd_bench.methods import REFERENCE_METHOD
from dpkd_bench.methods.abkd import ABKD
from dpkd_bench.methods.akl import AKL
from dpkd_bench.methods.base import Method, check_corpus
from dpkd_bench.methods.distillm2 import DistiLLM2
from dpkd_bench.methods.dpkd import DPKD
from dpkd_bench.methods.dpkd_token import DPKDToken
from dpkd_bench.methods.gkd import GKD
from dpkd_bench.methods.kd import KD
from dpkd_bench.methods.minillm import MiniLLM
from dpkd_bench.methods.opd import OPD
from dpkd_bench.methods.rkl import RKL
from dpkd_bench.methods.seqkd import SeqKD
from dpkd_bench.methods.sft import SFT
from dpkd_bench.methods.skew_fkl import SkewFKL
from dpkd_bench.methods.skew_rkl import SkewRKL
from dpkd_bench.methods.taid import TAID
from dpkd_bench.methods.tvd import TVD
from dpkd_bench.results import file_sha256
from dpkd_bench.variants import parse_variant, split_train, variant_name


def _register(classes: list[type[Method]]) -> dict[str, type[Method]]:
    registry: dict[str, type[Method]] = {}
    for cls in classes:
        if cls.name in registry:
            raise RuntimeError(f"two methods are registered as '{cls.name}'")
        registry[cls.name] = cls
    return registry


BUILTIN: tuple[type[Method], ...] = (
    SFT,
    KD,
    SeqKD,
    RKL,
    MiniLLM,
    SkewFKL,
    SkewRKL,
    GKD,
    TVD,
    DPKD,
    DPKDToken,
    OPD,
    DistiLLM2,
    ABKD,
    AKL,
    TAID,
)
METHODS: dict[str, type[Method]] = _register(list(BUILTIN))
# The methods the teacher-logit cache can serve, with the settings that keep every one of
# their batches teacher-forced on the cached items (no on-policy or replayed student samples).
TEACHER_FORCED: dict[str, dict[str, Any]] = {
    name: dict(cls.teacher_forced)
    for name, cls in METHODS.items()
    if cls.teacher_forced is not None
}


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
    variant's values win. Training settings among them (a ``train`` block, ``train.<key>``
    items) are the recipe's business (:meth:`dpkd_bench.recipe.Recipe.unit_train`), not the
    method's, and are left out here.
    """
    base, variant = parse_variant(name)
    cls = method_class(base)
    settings = split_train({**overrides, **variant})[0]
    return cls(build(cls.Config, settings, where=f"method_args.{base}"))


def _sweep_value(sweep: str, value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise UserError(
            f"bad --sweep '{sweep}': value '{value}' is not a number, word or YAML literal; "
            "write values like 0.05 or true, separated by commas"
        ) from None


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
        grids.setdefault(base, []).append(
            (key, [_sweep_value(sweep, v) for v in values.split(",")])
        )
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


# ---- plugins ------------------------------------------------------------------------------
ENTRY_POINT_GROUP = "dpkd_bench.methods"
# name -> {"source": where it was loaded from, "sha256": hash of its source file}
PLUGIN_SOURCES: dict[str, dict[str, str]] = {}
_LOADED: set[str] = set()  # plugin specs (and entry points) already loaded
HOW = "see the README, 'Add your own method'"


def _file_hash(path: str | None) -> str:
    return file_sha256(path)[:16] if path and Path(path).is_file() else ""


def register_method(cls: type[Method], source: str, path: str | None = None) -> None:
    """Add a plugin method class; its name must not be taken by another method."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise UserError(f"plugin {source}: {cls.__name__} has no `name`; {HOW}")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise UserError(
            f"plugin {source}: method '{name}' has no `Config` dataclass (derive it from "
            f"MethodConfig); {HOW}"
        )
    taken = METHODS.get(name)
    if taken is not None and taken is not cls:
        where = PLUGIN_SOURCES.get(name, {}).get("source", "a built-in method")
        raise UserError(
            f"plugin {source}: method name '{name}' is taken by {where}; rename the plugin's "
            "method (its class attribute `name`)"
        )
    METHODS[name] = cls
    PLUGIN_SOURCES[name] = {"source": source, "sha256": _file_hash(path)}


def _methods_of(module: types.ModuleType) -> list[type[Method]]:
    """The Method subclasses ``module`` defines with a ``name`` of their own."""
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Method)
        and obj.__module__ == module.__name__
        and "name" in vars(obj)
    ]


def _import(spec: str, base: Path | None) -> tuple[types.ModuleType, str | None]:
    """The module of a plugin spec (a .py file, relative to ``base`` or the working
    directory, or a module name) and its source file."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_absolute() and base is not None and (base / path).is_file():
            path = base / path
        if not path.is_file():
            raise UserError(f"plugin file {spec} not found; give the path of a .py file")
        path = path.resolve()
        module_name = f"dpkd_bench_plugin_{path.stem}_{hashlib.sha256(bytes(path)).hexdigest()[:8]}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise UserError(
                f"plugin {spec} failed to import ({type(err).__name__}: {err}); fix the file"
            ) from None
        return module, str(path)
    try:
        module = importlib.import_module(spec)
    except Exception as err:
        raise UserError(
            f"plugin {spec} failed to import ({type(err).__name__}: {err}); install it, or give "
            "the path of a .py file"
        ) from None
    return module, getattr(module, "__file__", None)


def load_plugin(spec: str, base: Path | None = None) -> list[str]:
    """Register the methods a plugin file or module defines; their names."""
    module, path = _import(spec, base)
    classes = _methods_of(module)
    if not classes:
        raise UserError(
            f"plugin {spec} defines no Method subclass with a `name` of its own; subclass "
            f"dpkd_bench.methods.Method; {HOW}"
        )
    for cls in classes:
        register_method(cls, path or spec, path)
    return [cls.name for cls in classes]


def load_entry_points() -> None:
    """Register the methods of installed distributions (entry-point group
    ``dpkd_bench.methods``: a Method subclass, or a module defining some)."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {point.name} = {point.value}"
        if source in _LOADED:
            continue
        try:
            obj = point.load()
        except Exception as err:
            raise UserError(
                f"plugin {source} failed to import ({type(err).__name__}: {err}); reinstall or "
                "uninstall its package"
            ) from None
        classes = _methods_of(obj) if isinstance(obj, types.ModuleType) else [obj]
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Method)):
                raise UserError(f"plugin {source} is not a Method subclass; {HOW}")
            register_method(cls, source, inspect.getsourcefile(cls))
        _LOADED.add(source)


def load_plugins(specs: Sequence[str] = (), base: Path | None = None) -> None:
    """Installed plugins, then each of ``specs`` (loaded once each)."""
    load_entry_points()
    for spec in specs:
        if spec not in _LOADED:
            load_plugin(spec, base)
            _LOADED.add(spec)


def plugin_files(names: Sequence[str]) -> list[str]:
    """The files the plugin methods among ``names`` were loaded from, for another process
    (a launcher's worker) to load; installed entry points load there by themselves."""
    sources = (entry["source"] for entry in plugin_sources(names).values())
    return sorted({source for source in sources if Path(source).is_file()})


def plugin_sources(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Where the plugin methods among ``names`` (or their variants) came from, for the
    manifest."""
    bases = {parse_variant(name)[0] for name in names}
    return {name: PLUGIN_SOURCES[name] for name in sorted(bases) if name in PLUGIN_SOURCES}
