"""PNG plots (matplotlib, no display): scores per eval set, training curves, ablations; and
writing them to the run's plots directory."""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dpkd_bench.report.scores import SCORE_KEYS, SCORES
from dpkd_bench.report.tables import float_value
from dpkd_bench.report.view import RunView
from dpkd_bench.results import REFERENCE_ROWS, TRAIN_LOG, RunDir, atomic_write_bytes, read_jsonl

NOT_LOSS_TERMS = {"method", "seed", "step", "lr", "tokens_per_s", "elapsed_s"}
TRAINING_PLOT = "training_curves.png"
COST_PLOT = "score_vs_cost.png"  # drawn by dpkd_bench.report.cost


@dataclass(frozen=True)
class Plot:
    png: bytes
    caption: str


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()


def file_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "eval"


def error_bars(rows: pd.DataFrame, key: str) -> tuple[list[float], list[float], list[bool]]:
    """(below, above, from_interval) per row: the sample std over training seeds when a row
    has two or more seeds, else its 95% bootstrap interval over examples (0 when unknown)."""
    below, above, from_interval = [], [], []
    for _, row in rows.iterrows():
        mean, std = row[f"{key}_mean"], row[f"{key}_std"]
        if row["n_seeds"] >= 2 and not math.isnan(std):
            below.append(std), above.append(std), from_interval.append(False)
            continue
        low, high = float_value(row, f"{key}_ci_low"), float_value(row, f"{key}_ci_high")
        known = not (math.isnan(low) or math.isnan(high))
        below.append(max(mean - low, 0.0) if known else 0.0)
        above.append(max(high - mean, 0.0) if known else 0.0)
        from_interval.append(known)
    return below, above, from_interval


def score_plot(rows: pd.DataFrame, title: str) -> bytes:
    """Grouped bars, one group per method; error bars as described by :func:`error_bars`."""
    methods = list(rows["method"])
    fig = Figure(figsize=(max(5.0, 1.1 * len(methods) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    handles = []
    for i, (key, label) in enumerate(SCORES):
        x = [j + (i - 0.5) * width for j in range(len(methods))]
        below, above, _ = error_bars(rows, key)
        bars = ax.bar(x, rows[f"{key}_mean"], width, color=f"C{i}", yerr=[below, above], capsize=3)
        for bar, method in zip(bars, methods, strict=True):
            if method in REFERENCE_ROWS:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
        handles.append(Patch(color=f"C{i}", label=label))
    if any(m in REFERENCE_ROWS for m in methods):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="reference"))
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(handles=handles, fontsize="small")
    return png_bytes(fig)


def score_caption(eval_set: str, rows: pd.DataFrame) -> str:
    """Which error bars the score plot of ``eval_set`` shows, method by method."""
    _, _, from_interval = error_bars(rows, SCORE_KEYS[0])
    by_interval = [m for m, ci in zip(rows["method"], from_interval, strict=True) if ci]
    by_std = [m for m, n in zip(rows["method"], rows["n_seeds"], strict=True) if n >= 2]
    parts = []
    if by_std:
        parts.append(f"sample std over training seeds ({', '.join(by_std)})")
    if by_interval:
        parts.append(
            f"95% bootstrap interval over examples, one training seed ({', '.join(by_interval)})"
        )
    bars = "; ".join(parts) if parts else "none (no spread available)"
    return f"{eval_set}: mean ROUGE-L and exact match per method. Error bars: {bars}."


def score_plots(view: RunView, board: pd.DataFrame) -> dict[str, Plot]:
    return {
        f"scores_{file_slug(eval_set)}.png": Plot(
            score_plot(rows, f"{view.recipe_name}: {eval_set}"), score_caption(eval_set, rows)
        )
        for eval_set, rows in board.groupby("eval_set", sort=False)
    }


def train_logs(view: RunView) -> pd.DataFrame:
    """Every finished unit's train log, with method and seed columns (empty if none)."""
    frames = []
    for method, seed in view.units:
        path = view.run.unit_dir(method, seed) / TRAIN_LOG
        records = read_jsonl(path) if path.is_file() else []
        if records:
            frames.append(pd.DataFrame(records).assign(method=method, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_terms(logs: pd.DataFrame) -> list[str]:
    """Numeric logged columns other than bookkeeping; "loss" (the weighted total) first."""
    numeric = logs.select_dtypes("number").columns
    terms = [c for c in logs.columns if c in numeric and c not in NOT_LOSS_TERMS]
    return sorted(terms, key=lambda t: t != "loss")


def training_plot(logs: pd.DataFrame, methods: list[str], terms: list[str]) -> bytes:
    """One panel per loss term: value vs step, one line per method (mean over seeds)."""
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, term in zip(axes, terms, strict=False):
        for i, method in enumerate(methods):  # one colour per method across panels
            curve = logs[logs["method"] == method].groupby("step")[term].mean().dropna()
            if not curve.empty:
                ax.plot(curve.index, curve.values, color=f"C{i % 10}", label=method, marker=".")
        ax.set_title(term)
        ax.set_xlabel("step")
    for ax in axes[len(terms) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=f"C{i % 10}", label=m) for i, m in enumerate(methods)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(methods) or 1))
    return png_bytes(fig)


TRAINING_CAPTION = (
    "Training curves: each logged loss term against the optimiser step, one line per method "
    "(mean over training seeds); 'loss' is the weighted total the optimiser minimised."
)


def training_plots(view: RunView) -> dict[str, Plot]:
    logs = train_logs(view)
    terms = loss_terms(logs) if "step" in logs else []
    if not terms:
        return {}
    methods = [m for m in view.methods if m in set(logs["method"])]
    return {TRAINING_PLOT: Plot(training_plot(logs, methods, terms), TRAINING_CAPTION)}


def ablation_plot(base: str, table: pd.DataFrame) -> bytes:
    """Grouped bars: one group per eval-set score, one bar per variant."""
    columns = [c for c in table.columns if c.endswith(tuple(f" {label}" for _, label in SCORES))]
    fig = Figure(figsize=(max(6, 1.2 * len(columns) + 2), 4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(table), 1)
    for i, row in enumerate(table.itertuples(index=False)):
        values = [table.iloc[i][c] for c in columns]
        ax.bar([x + i * width for x in range(len(columns))], values, width, label=str(row[0]))
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(columns))], columns, rotation=20, ha="right"
    )
    ax.set_ylabel("score (%)")
    ax.set_title(f"Ablation: {base}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def ablation_plots(tables: dict[str, pd.DataFrame]) -> dict[str, Plot]:
    return {
        f"ablation_{file_slug(base)}.png": Plot(
            ablation_plot(base, table),
            f"Ablation of {base}: mean score over training seeds of each variant.",
        )
        for base, table in tables.items()
    }


def write_plots(run: RunDir, plots: dict[str, Plot]) -> list[Path]:
    """Write the plots and remove report plots of an earlier render that are now stale."""
    stale = [
        *run.plots_dir.glob("scores_*.png"),
        *run.plots_dir.glob("ablation_*.png"),
        run.plots_dir / TRAINING_PLOT,
        run.plots_dir / COST_PLOT,
        run.plots_dir / "dev_curves.png",
    ]
    for path in stale:
        if path.name not in plots:
            path.unlink(missing_ok=True)
    paths = []
    for name, plot in plots.items():
        atomic_write_bytes(run.plots_dir / name, plot.png)
        paths.append(run.plots_dir / name)
    return paths
