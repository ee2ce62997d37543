"""Published baselines: the numbers of the setting a run's recipe replicates
(``recipe.replicates: <file stem>/<setting>``), beside the measured ones.

The files are ``baselines/*.yaml`` at the top of the repository, installed as the package
data of ``dpkd_bench.baselines``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from dpkd_bench.errors import UserError
from dpkd_bench.report.scores import SCORES
from dpkd_bench.report.tables import NO_VALUE
from dpkd_bench.report.view import RunView
from dpkd_bench.results import is_safe_name
from dpkd_bench.stats import format_mean_std

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

BASELINES_DIR = resources.files("dpkd_bench.baselines")


@dataclass(frozen=True)
class Comparison:
    """Published numbers beside the measured ones, as text cells."""

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def replicated_setting(manifest: dict) -> str | None:
    """``recipe.replicates`` of the run's resolved recipe ("<file stem>/<setting>")."""
    recipe = manifest.get("recipe")
    value = recipe.get("replicates") if isinstance(recipe, dict) else None
    return str(value) if value else None


def load_baseline(reference: str, root: Traversable = BASELINES_DIR) -> tuple[dict, dict] | None:
    """(the file's top level, the named setting) for "<file stem>/<setting>", else None."""
    stem, _, setting = reference.partition("/")
    path = root / f"{stem}.yaml"
    if not is_safe_name(stem) or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); repair the baselines file") from None
    settings = data.get("settings") if isinstance(data, dict) else None
    entry = settings.get(setting) if isinstance(settings, dict) else None
    return (data, entry) if isinstance(entry, dict) else None


def baseline_source(data: dict) -> str:
    source = data.get("source") or {}
    parts = [source.get(k) for k in ("citation", "version", "table", "url")]
    return "; ".join(str(p) for p in parts if p)


def measured_text(board: pd.DataFrame, method: str, eval_set: str, metric: str) -> str:
    rows = board[(board["method"] == method) & (board["eval_set"] == eval_set)]
    if rows.empty or f"{metric}_mean" not in rows:
        return NO_VALUE
    row = rows.iloc[0]
    return format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], digits=1)


def metric_label(metric: str) -> str:
    return dict(SCORES).get(metric, metric)


def published_text(value: object) -> str:
    return f"{float(value):.1f}" if isinstance(value, (int, float)) else "not reported"


def comparison_rows(data: dict, entry: dict, board: pd.DataFrame) -> list[list[str]]:
    columns = data.get("columns") or {}
    metric = str(data.get("metric", "rougeL"))
    rows = []
    for method, scores in (entry.get("scores") or {}).items():
        scores = scores if isinstance(scores, dict) else {}
        row = [str(method)]
        for label, eval_set in columns.items():
            row += [
                published_text(scores.get(label)),
                measured_text(board, method, eval_set, metric),
            ]
        rows.append(row)
    return rows


def published_comparison(view: RunView, board: pd.DataFrame) -> Comparison | None:
    """The published table of the setting the recipe replicates; None when it names none."""
    reference = replicated_setting(view.manifest)
    if reference is None:
        return None
    title = f"Published results: {reference}"
    found = load_baseline(reference)
    if found is None:
        caption = (
            f"The recipe replicates '{reference}', but no baselines/<file>.yaml holds that "
            "setting; nothing to compare."
        )
        return Comparison(title, caption, [], [])
    data, entry = found
    header = ["method"]
    for label, eval_set in (data.get("columns") or {}).items():
        header += [f"{label} published", f"{eval_set} measured"]
    caption = (
        f"{metric_label(str(data.get('metric', 'rougeL')))} as published "
        f"({baseline_source(data)}) beside this "
        "run's mean ± sample std over training seeds. "
        + " ".join(str(n) for n in (entry.get("notes") or data.get("notes") or []))
    ).strip()
    return Comparison(title, caption, header, comparison_rows(data, entry, board))
