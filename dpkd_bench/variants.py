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
