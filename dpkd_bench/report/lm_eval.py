"""lm-evaluation-harness scores (``eval.lm_eval``): the ``lm_eval`` section of each unit's
metrics.json as one table of means over training seeds, and as leaderboard columns."""

from __future__ import annotations

import pandas as pd

from dpkd_bench.report.view import RunView
from dpkd_bench.results import METRICS, read_json

LM_EVAL_LEGEND = (
    "lm-evaluation-harness task metrics (0-1, as the harness reports them) of each model, "
    "scored in memory after training; mean over training seeds. The dpkd_synthetic_* tasks are "
    "the synthetic suite's own (held-out facts: multiple choice by log-likelihood, and greedy "
    "generation)."
)


def lm_eval_figures(view: RunView) -> pd.DataFrame:
    """One row per (unit, task, metric): method, seed, column (``task/metric``), value."""
    rows = []
    for method, seed in view.units:
        metrics = read_json(view.run.unit_dir(method, seed) / METRICS)
        tasks = metrics.get("lm_eval") if isinstance(metrics, dict) else None
        for task, figures in (tasks or {}).items():
            for metric, value in (figures or {}).items():
                if isinstance(value, int | float):
                    column = f"{task}/{metric}"
                    rows.append({"method": method, "seed": seed, "column": column, "value": value})
    return pd.DataFrame(rows, columns=["method", "seed", "column", "value"])


def lm_eval_table(view: RunView) -> pd.DataFrame:
    """Rows methods (display order), columns ``task/metric``, cells the mean over seeds."""
    scores = lm_eval_figures(view)
    if scores.empty:
        return pd.DataFrame()
    table = scores.pivot_table(index="method", columns="column", values="value", aggfunc="mean")
    order = [m for m in dict.fromkeys(scores["method"]) if m in table.index]
    return table.reindex(order)


def with_lm_eval(board: pd.DataFrame, view: RunView) -> pd.DataFrame:
    """The leaderboard with a column ``lm_eval:<task>/<metric>`` per lm-eval figure (the
    method's mean over seeds, the same on each of its eval-set rows)."""
    table = lm_eval_table(view)
    if table.empty or board.empty:
        return board
    table = table.add_prefix("lm_eval:")
    return board.merge(table, left_on="method", right_index=True, how="left")


def lm_eval_rows(view: RunView) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of the table, for Markdown and HTML; ([], []) without scores."""
    table = lm_eval_table(view)
    if table.empty:
        return [], []
    rows = [
        [method, *("-" if pd.isna(v) else f"{v:.3f}" for v in values)]
        for method, values in zip(table.index, table.values, strict=True)
    ]
    return ["method", *table.columns], rows
