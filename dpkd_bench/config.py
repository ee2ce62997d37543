"""Strict building of typed configs from plain mappings (recipes, method settings).

Every config is a dataclass of values; :func:`build` checks a mapping against it: an unknown key,
a wrong type or an out-of-range value (``require`` in ``__post_init__``) is a
:class:`RecipeError` that names the key's full path.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

from dpkd_bench.errors import RecipeError


class FieldError(ValueError):
    """Raised by a config's ``__post_init__``; the loader adds the key's full path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """Range check for ``__post_init__``: raise :class:`FieldError` unless ``condition``."""
    if not condition:
        raise FieldError(key, message)


def did_you_mean(name: str, known: typing.Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when ``name`` is close to a known one."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce_union(value: Any, options: tuple, key: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _coerce(value, option, key)
        except RecipeError as err:
            errors.append(err)
    raise errors[0]


_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads "3e-3" (no dot) as a string
    if tp is bool and not isinstance(value, bool):
        raise RecipeError(f"recipe key '{key}' must be true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise RecipeError(f"recipe key '{key}' must be an integer, got {value!r}")
    if not isinstance(value, tp):
        raise RecipeError(
            f"recipe key '{key}' must be of type {_type_name(tp)}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), key)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"recipe key '{key}' must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{key}' must be a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    return _coerce_scalar(value, tp, key)


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    prefix = f"{where}." if where else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"recipe key '{where or '<top>'}' must be a mapping of keys to values, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            suggestion = did_you_mean(str(key), names).replace(" '", f" '{prefix}", 1)
            raise RecipeError(
                f"unknown recipe key '{prefix}{key}'{suggestion}; "
                f"known keys here: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except FieldError as err:
        value = kwargs.get(err.key, getattr(cls, err.key, None))
        got = "" if "(got " in err.message else f"; got {value!r}"
        raise RecipeError(
            f"recipe key '{prefix}{err.key}' {err.message}{got}; "
            f"fix it in the recipe or override it with {prefix}{err.key}=VALUE"
        ) from None
