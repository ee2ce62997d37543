"""Learning curves on the dev split, and every method's dev score at matched budgets.

Each unit's metrics.json keeps its dev curve (``train.dev.curve``, written during training by
:mod:`dpkd_bench.dev`): the dev score before training, every ``train.eval_every`` steps and
after the last, each point with the optimiser steps, teacher forwards and training wall time
spent to reach it. Student FLOPs are the planner's estimate per step
(``train.student_flops_per_step``) times the steps.

Budget-matched scores: for a budget measured in FLOPs or in wall time (the whole run of the
reference method, ``REFERENCE_METHOD``, and half of it), a method's score is what its unit
would have kept had it stopped at that budget: the best dev point within it with
``select: best_dev``, the last one with ``select: last`` (mean over seeds). A method whose
whole run costs less than the budget keeps its final choice (marked †); one whose first
evaluated step already costs more has no score there.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from dpkd_bench.methods import REFERENCE_METHOD
from dpkd_bench.report.plots import png_bytes
from dpkd_bench.report.protocol import Section, settings_section, unit_train
from dpkd_bench.report.view import RunView
from dpkd_bench.results import unit_training

CURVE_COLUMNS = [
    "method",
    "seed",
    "step",
    "score",
    "teacher_forwards",
    "student_flops",
    "wall_s",
    "select",
    "metric",
]
CURVE_AXES = (
    ("step", "optimiser steps"),
    ("teacher_forwards", "teacher forwards (sequences)"),
    ("student_flops", "student training FLOPs (estimate)"),
    ("wall_s", "training wall time (s)"),
)
BUDGET_MEASURES = (("student_flops", "FLOPs"), ("wall_s", "wall time"))
BUDGET_SHARES = (("full", 1.0), ("half", 0.5))
ENDED = "†"  # the method's whole run cost less than the budget


def unit_curve(view: RunView, method: str, seed: int) -> list[dict]:
    """One unit's dev curve as rows of CURVE_COLUMNS; [] for a unit without one."""
    train = unit_training(view.run, method, seed)
    dev = train.get("dev")
    if not isinstance(dev, dict) or not dev.get("curve"):
        return []
    per_step = train.get("student_flops_per_step")
    return [
        {
            "method": method,
            "seed": seed,
            "step": point["step"],
            "score": point["score"],
            "teacher_forwards": point.get("teacher_forwards", math.nan),
            "student_flops": math.nan if per_step is None else per_step * point["step"],
            "wall_s": point.get("elapsed_s", math.nan),
            "select": dev.get("select", "last"),
            "metric": dev.get("metric", "rougeL"),
        }
        for point in dev["curve"]
    ]


def dev_curves(view: RunView) -> pd.DataFrame:
    """Every unit's dev curve (long format, one row per point)."""
    rows = [row for method, seed in view.units for row in unit_curve(view, method, seed)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and step: the mean over seeds of the score and of each cost."""
    columns = ["score", *(axis for axis, _ in CURVE_AXES if axis != "step")]
    return curves.groupby(["method", "step"], sort=False)[columns].mean().reset_index()


def curves_plot(curves: pd.DataFrame) -> bytes:
    """One panel per cost measure: each method's mean dev score against it."""
    means = mean_curves(curves)
    metric = str(curves["metric"].iloc[0])
    fig = Figure(figsize=(4.0 * len(CURVE_AXES), 3.6), layout="constrained")
    axes = fig.subplots(1, len(CURVE_AXES), squeeze=False).ravel()
    for ax, (column, label) in zip(axes, CURVE_AXES, strict=True):
        for i, (method, group) in enumerate(means.groupby("method", sort=False)):
            style = "-" if i < 10 else "--"
            ax.plot(group[column], group["score"], style, marker=".", label=method, color=f"C{i}")
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"dev {metric} (mean over seeds)", fontsize=8)
    axes[-1].legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


def score_within(points: pd.DataFrame, column: str, budget: float, select: str) -> float:
    """The score one unit keeps when stopped at ``budget`` of ``column`` (module docstring)."""
    within = points[(points[column] <= budget) & (points["step"] > 0)]
    if within.empty:
        return math.nan
    return float(within["score"].max() if select == "best_dev" else within["score"].iloc[-1])


def budget_table(view: RunView, curves: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean dev score at the reference method's full and half cost, in FLOPs
    and in wall time; empty when the reference has no curve."""
    reference = curves[curves["method"] == REFERENCE_METHOD]
    if reference.empty:
        return pd.DataFrame()
    records = []
    for method, group in curves.groupby("method", sort=False):
        select = unit_train(view, method).get("select", "last")
        record = {"method": method}
        for column, label in BUDGET_MEASURES:
            full = reference.groupby("seed")[column].max().mean()
            for share_name, share in BUDGET_SHARES:
                budget = share * full
                scores = [
                    score_within(points, column, budget, select)
                    for _, points in group.groupby("seed")
                ]
                ended = group.groupby("seed")[column].max().max() < budget
                # a seed without a point within the budget leaves the mean undefined (a mean
                # over the other seeds alone would compare other starting points)
                missing = any(math.isnan(score) for score in scores)
                record[f"{label} {share_name}"] = math.nan if missing else pd.Series(scores).mean()
                record[f"{label} {share_name} ended"] = bool(ended)
        records.append(record)
    return pd.DataFrame(records)


def budget_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and text rows of the budget-matched table."""
    header = ["method"] + [
        f"at {share} of {REFERENCE_METHOD}'s {label}"
        for _, label in BUDGET_MEASURES
        for share, _ in (("all", 1.0), ("half", 0.5))
    ]
    rows = []
    for record in table.to_dict("records"):
        cells = [record["method"]]
        for _, label in BUDGET_MEASURES:
            for share_name, _ in BUDGET_SHARES:
                value = record[f"{label} {share_name}"]
                mark = ENDED if record[f"{label} {share_name} ended"] else ""
                cells.append("—" if pd.isna(value) else f"{value:.2f}{mark}")
        rows.append(cells)
    return header, rows


def budget_ranking_changes(table: pd.DataFrame) -> str:
    """One sentence: whether the order of the methods (those scored at every budget) differs
    between the budgets."""
    columns = [c for c in table.columns if not c.endswith("ended") and c != "method"]
    complete = table.dropna(subset=columns)
    if len(complete) < 2:
        return "Fewer than two methods have a dev score at every budget: no order to compare."
    orders = {
        column: tuple(
            complete.assign(_score=complete[column].round(2)).sort_values(
                "_score", ascending=False, kind="stable"
            )["method"]
        )
        for column in columns
    }
    if len(set(orders.values())) == 1:
        return (
            "The order of the methods on dev is the same at every budget in this table: "
            + " > ".join(next(iter(orders.values())))
            + "."
        )
    return (
        "The order of the methods on dev changes with the budget: "
        + "; ".join(f"{column}: {' > '.join(order)}" for column, order in orders.items())
        + "."
    )


BUDGET_LEGEND = (
    "Dev score each method's unit would keep when stopped at a matched budget: "
    f"{REFERENCE_METHOD}'s whole run and half of it, in estimated student training FLOPs and "
    f"in training wall time (mean over seeds; {ENDED}: the method's whole run costs less, so "
    "it keeps its final choice; —: the first evaluated step of one of its seeds already costs "
    "more)."
)


CURVES_PLOT = "dev_curves.png"
CURVES_CAPTION = (
    "Learning curves on the dev split: each method's dev score (mean over training seeds) "
    "against optimiser steps, teacher forwards, estimated student training FLOPs and training "
    "wall time (validation time left out); the first point is the untrained start."
)


def curve_sections(view: RunView, curves: pd.DataFrame) -> list[Section]:
    """The budget-matched section; [] for a run without dev curves."""
    if curves.empty:
        return []
    table = budget_table(view, curves)
    notes = [f"See {CURVES_PLOT} (plots): {CURVES_CAPTION}"]
    if table.empty:
        return [Section("Learning curves on dev", [], [], notes)]
    header, rows = budget_rows(table)
    notes = [BUDGET_LEGEND, budget_ranking_changes(table), *notes]
    return [Section("Dev score at matched budgets", header, rows, notes)]


def report_sections(view: RunView) -> list[Section]:
    """The protocol sections after the leaderboard: training settings, then the budgets."""
    return [settings_section(view), *curve_sections(view, dev_curves(view))]
