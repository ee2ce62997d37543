"""Method variants: ``name[key=value,...]`` names for sweeps and ablations (no torch here)."""

from __future__ import annotations

from typing import Any

import yaml

from dpkd_bench.errors import UserError


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"dpkd[beta=0.05,rkl_weight=0]"`` -> ("dpkd", {"beta": 0.05, "rkl_weight": 0})."""
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    name, _, rest = spec.partition("[")
    if not rest.endswith("]"):
        raise UserError(f"method variant '{spec}' must look like name[key=value,...]")
    overrides: dict[str, Any] = {}
    for item in filter(None, rest[:-1].split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"method variant '{spec}': '{item}' is not key=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    return name.strip(), overrides


def variant_name(name: str, overrides: dict[str, Any]) -> str:
    if not overrides:
        return name
    return f"{name}[{','.join(f'{k}={_fmt(v)}' for k, v in overrides.items())}]"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


TRAIN_BLOCK = "train"  # a method's own training settings: `train:` block, `train.<key>` items


def split_train(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A method's settings (its recipe block, or a variant's values) as (its Config's values,
    its training settings): the ``train`` block and any ``train.<key>`` item (variants and
    sweeps, e.g. ``minillm[train.lr=1e-5]``), the item winning over the block."""
    method: dict[str, Any] = {}
    block = settings.get(TRAIN_BLOCK) or {}
    if not isinstance(block, dict):
        raise UserError(
            f"a method's `{TRAIN_BLOCK}` block must map training keys to values (e.g. "
            f"minillm: {{train: {{lr: 5.0e-6}}}}), got {block!r}"
        )
    train = dict(block)
    for key, value in settings.items():
        if key == TRAIN_BLOCK:
            continue
        if key.startswith(f"{TRAIN_BLOCK}."):
            train[key.removeprefix(f"{TRAIN_BLOCK}.")] = value
        else:
            method[key] = value
    return method, train
