"""Score against training cost: teacher forwards, optimiser steps and wall time of each unit,
as its metrics.json "train" recorded them."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from dpkd_bench.report.plots import COST_PLOT, Plot, png_bytes
from dpkd_bench.report.tables import NO_VALUE
from dpkd_bench.report.view import RunView
from dpkd_bench.results import METRICS, read_json, unit_key

COST_AXES = (
    ("teacher_forwards", "teacher forwards (sequences)"),
    ("steps", "student optimiser steps"),
    ("wall_s", "training wall time (s)"),
)
COST_COLUMNS = ["method", "seed", "steps", "wall_s", "teacher_forwards"]


def recorded(train: dict, key: str) -> float:
    """``train[key]`` as a float; NaN when the unit's metrics.json does not record it."""
    value = train.get(key)
    return math.nan if value is None else float(value)


def unit_cost(view: RunView, method: str, seed: int) -> dict | None:
    """Cost of one unit's training from its metrics.json "train"; None if it has none.

    ``teacher_forwards`` counts the sequences through the teacher's forward during training,
    as the training loop recorded them; NaN for a run made before it recorded them.
    """
    metrics = read_json(view.run.unit_dir(method, seed) / METRICS)
    train = metrics.get("train") if isinstance(metrics, dict) else None
    if not isinstance(train, dict) or "steps" not in train:
        return None
    return {
        "method": method,
        "seed": seed,
        "steps": float(train["steps"]),
        "wall_s": recorded(train, "wall_s"),
        "teacher_forwards": recorded(train, "teacher_forwards"),
    }


def training_costs(view: RunView) -> pd.DataFrame:
    rows = [unit_cost(view, method, seed) for method, seed in view.units]
    return pd.DataFrame([row for row in rows if row], columns=COST_COLUMNS)


def cost_plot(points: pd.DataFrame) -> bytes:
    """One panel per cost measure: mean ROUGE-L over eval sets against it, one point per method
    (none where the measure is unknown; a panel with no point says NO_VALUE)."""
    fig = Figure(figsize=(4.2 * len(COST_AXES), 3.6), layout="constrained")
    axes = fig.subplots(1, len(COST_AXES), squeeze=False).ravel()
    for ax, (column, label) in zip(axes, COST_AXES, strict=True):
        for i, row in enumerate(points.itertuples(index=False)):
            cost = getattr(row, column)
            if not math.isnan(cost):
                ax.scatter(cost, row.rougeL, color=f"C{i % 10}", label=row.method)
                ax.annotate(row.method, (cost, row.rougeL), fontsize=7)
        if points[column].isna().all():
            ax.text(0.5, 0.5, f"{NO_VALUE} not recorded", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("mean ROUGE-L over eval sets")
    return png_bytes(fig)


def cost_caption(costs: pd.DataFrame) -> str:
    text = (
        "Mean ROUGE-L over eval sets (mean over training seeds) against the training cost of "
        "each method: teacher forward passes, student optimiser steps and wall time, from "
        'metrics.json "train" (mean over seeds; references excluded).'
    )
    missing = costs[costs["teacher_forwards"].isna()]
    if not missing.empty:
        units = ", ".join(unit_key(row.method, row.seed) for row in missing.itertuples())
        text += (
            f" Teacher forwards not recorded ({NO_VALUE}; runs made before metrics.json held "
            f"the count): {units}."
        )
    return text


def cost_plots(view: RunView, board: pd.DataFrame) -> dict[str, Plot]:
    costs = training_costs(view)
    if costs.empty or board.empty:
        return {}
    scores = board.groupby("method", sort=False)["rougeL_mean"].mean().rename("rougeL")
    means = costs.groupby("method", sort=False)[[c for c, _ in COST_AXES]].mean()
    points = means.join(scores, how="inner").reset_index()
    if points.empty:
        return {}
    return {COST_PLOT: Plot(cost_plot(points), cost_caption(costs))}
