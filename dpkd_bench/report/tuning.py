"""The report of a tuning run (``dpkd-bench tune``): trials table, plot and the tuned recipe.

Reads the run's ``tuning.json`` (each method's trials by stage, the recipe tuned, wall times)
and every trial's metrics.json (its dev curve and the score of the weights it kept). Writes
``trials.csv`` (one row per trial), ``tuning.md`` (the protocol, the chosen settings, every
trial), ``plots/trials.png`` (dev score against learning rate, one panel per method) and
``tuned.yaml``: the recipe with each method's best trial's settings and a ``tuned`` record of
how they were chosen, ready for ``dpkd-bench run --recipe tuned.yaml --seeds 1,2,3``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from dpkd_bench.recipe import dump_yaml, resolve_recipe
from dpkd_bench.report.markdown import markdown_grid
from dpkd_bench.report.plots import png_bytes
from dpkd_bench.results import (
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    unit_training,
)
from dpkd_bench.tune import PLAN, TUNED, TunedRecord, lr_grid, search_space
from dpkd_bench.variants import parse_variant, split_train

TRIAL_COLUMNS = [
    "method",
    "trial",
    "stage",
    "lr",
    "settings",
    "dev_score",
    "start_score",
    "selected_step",
    "wall_s",
    "chosen",
    "below_start",
]


def is_tuning_run(run: RunDir) -> bool:
    return (run.root / PLAN).is_file()


def plan_wall_s(plan: dict) -> float:
    """A tuning run's own wall time: its stages' times in the plan (``tuning.json``)."""
    return float(sum((plan.get("wall_s") or {}).values()))


def trial_row(run: RunDir, spec: str, name: str, stage: int, seed: int) -> dict[str, Any]:
    """One trial's row; NaN scores until it finished."""
    values = parse_variant(name)[1]
    fixed = parse_variant(spec)[1]
    own = {k: v for k, v in values.items() if k != "train.lr" and k not in fixed}
    train = unit_training(run, name, seed)
    dev = train.get("dev") or {}
    score, start = dev.get("selected_score"), dev.get("init_score")
    return {
        "method": spec,
        "trial": name,
        "stage": stage,
        "lr": float(values["train.lr"]),
        "settings": ", ".join(f"{k}={v}" for k, v in own.items()),
        "dev_score": math.nan if score is None else float(score),
        "start_score": math.nan if start is None else float(start),
        "selected_step": dev.get("selected_step"),
        "wall_s": train.get("wall_s", math.nan),
        "chosen": False,
        "below_start": bool(score is not None and start is not None and score < start),
    }


def trials_table(run: RunDir) -> tuple[pd.DataFrame, dict]:
    """Every trial's row (the chosen one of each method marked) and the tuning plan."""
    plan = read_json(run.root / PLAN)
    seed = plan["recipe"]["tune"]["seed"]
    rows = [
        trial_row(run, spec, name, stage, seed)
        for spec, stages in plan["methods"].items()
        for stage, key in ((1, "stage1"), (2, "stage2"))
        for name in stages[key]
    ]
    table = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    for _, group in table.groupby("method", sort=False):
        scored = group.dropna(subset=["dev_score"])
        if len(scored) == len(group) and len(group):  # a method is chosen once all its trials ran
            table.loc[scored["dev_score"].idxmax(), "chosen"] = True
    return table, plan


def tuned_recipe(table: pd.DataFrame, plan: dict, run: RunDir) -> dict:
    """The recipe tuned, with each method's chosen trial's settings and the tuned record."""
    data = copy.deepcopy(plan["recipe"])
    data["tuning_run"] = False
    chosen = {}
    for row in table[table["chosen"]].itertuples(index=False):
        base, fixed = parse_variant(row.method)
        values = parse_variant(row.trial)[1]
        if fixed:  # a variant keeps its own name, its tuned values join it
            data["methods"] = [row.trial if m == row.method else m for m in data["methods"]]
        else:
            own, train = split_train(values)
            args = data.setdefault("method_args", {}).setdefault(base, {})
            args.update(own)
            args["train"] = {**(args.get("train") or {}), **train}
        chosen[row.method] = {k: v for k, v in values.items() if k not in fixed}
    record = tuning_record(table, plan, run, chosen)
    before = data.get("tuned")
    if isinstance(before, dict) and before:  # a tuned recipe tuned for more methods
        earlier = TunedRecord(**before)
        if earlier.same_protocol(record):
            record = earlier.joined(record)
    data["tuned"] = dataclasses.asdict(record)
    return data


def tuning_record(table: pd.DataFrame, plan: dict, run: RunDir, chosen: dict) -> TunedRecord:
    from dpkd_bench.recipe import TrainConfig
    from dpkd_bench.tune import TuneConfig

    recipe = plan["recipe"]
    tune, train = TuneConfig(**recipe["tune"]), TrainConfig(**recipe["train"])
    manifest = run.load_manifest()
    return TunedRecord(
        trials=int(table.groupby("method").size().max()) if len(table) else tune.trials,
        lr_grid=lr_grid(tune),
        space={spec: search_space(parse_variant(spec)[0]) for spec in plan["methods"]},
        metric=train.dev_metric,
        select=train.select,
        seed=tune.seed,
        dev_examples=train.dev_examples,
        finished=str(manifest.get("finished") or ""),
        wall_s=round(plan_wall_s(plan), 1),
        run=str(run.root),
        commit=manifest.get("git_commit"),
        chosen=chosen,
    )


def trials_plot(table: pd.DataFrame) -> bytes:
    """Dev score against learning rate, one panel per method: stage 1 joined by a line, stage 2
    as triangles, the chosen trial circled, the start's score dashed."""
    methods = list(dict.fromkeys(table["method"]))
    cols = min(4, max(1, len(methods)))
    rows = math.ceil(len(methods) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, method in zip(axes, methods, strict=False):
        group = table[table["method"] == method]
        first = group[group["stage"] == 1].sort_values("lr")
        ax.plot(first["lr"], first["dev_score"], "o-", color="C0", label="stage 1")
        second = group[group["stage"] == 2]
        ax.plot(second["lr"], second["dev_score"], "^", color="C1", label="stage 2")
        best = group[group["chosen"]]
        ax.plot(best["lr"], best["dev_score"], "o", mfc="none", mec="C3", ms=12, label="chosen")
        start = group["start_score"].dropna()
        if len(start):
            ax.axhline(float(start.iloc[0]), ls="--", color="grey", lw=1, label="start")
        ax.set_xscale("log")
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("learning rate", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(methods) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    axes[0].set_ylabel("dev score")
    return png_bytes(fig)


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def tuning_markdown(table: pd.DataFrame, plan: dict, record: TunedRecord) -> str:
    counts = table.groupby("method", sort=False).size()
    below = sorted(set(table[table["chosen"] & table["below_start"]]["method"]))
    joined = []
    if record.later:  # the recipe tuned was tuned before: this run's methods join its record
        between = "".join(
            f"; then {', '.join(r['methods'])} by {r['run']}" for r in record.later[:-1]
        )
        joined = [
            f"The recipe tuned was already tuned ({record.run}, finished {record.finished}"
            f"{between}); this run's methods join that record with the same protocol.",
            "",
        ]
    lines = [
        f"# Tuning: {plan['recipe']['name']}",
        "",
        f"{record.describe()}.",
        "",
        *joined,
        f"Trials per method: {', '.join(f'{m} {n}' for m, n in counts.items())}"
        f" (equal: {'yes' if counts.nunique() <= 1 else 'NO'}). Training seed {record.seed}; "
        f"wall time {plan_wall_s(plan):.0f} s (both stages; trial units "
        f"{table['wall_s'].sum():.0f} s of it).",
        "",
        "## Chosen settings",
        "",
        *markdown_grid(
            ["method", "lr", "own settings", "dev score", "start", "trial"],
            [
                [
                    r.method,
                    f"{r.lr:g}",
                    r.settings or "defaults",
                    _fmt(r.dev_score),
                    _fmt(r.start_score),
                    r.trial,
                ]
                for r in table[table["chosen"]].itertuples(index=False)
            ],
        ),
        "",
        "Below their start on the dev split even at their best: "
        + (", ".join(below) if below else "none")
        + ".",
        "",
        "## Every trial",
        "",
        *markdown_grid(
            ["method", "stage", "lr", "own settings", "dev score", "kept step", "wall s", ""],
            [
                [
                    r.method,
                    str(r.stage),
                    f"{r.lr:g}",
                    r.settings or "defaults",
                    _fmt(r.dev_score),
                    _fmt(r.selected_step),
                    _fmt(float(r.wall_s), 0),
                    ("chosen" if r.chosen else "") + (" below start" if r.below_start else ""),
                ]
                for r in table.itertuples(index=False)
            ],
        ),
        "",
        "![dev score against learning rate](plots/trials.png)",
        "",
    ]
    return "\n".join(lines)


def render_tuning(run_dir: str | Path) -> list[Path]:
    """Write trials.csv, tuning.md, plots/trials.png and (once every trial ran) tuned.yaml."""
    run = RunDir(run_dir)
    table, plan = trials_table(run)
    data = tuned_recipe(table, plan, run)
    record = TunedRecord(**data["tuned"])
    paths = {
        "trials.csv": table.to_csv(index=False, lineterminator="\n"),
        "tuning.md": tuning_markdown(table, plan, record),
    }
    written = []
    for name, text in paths.items():
        atomic_write_text(run.root / name, text)
        written.append(run.root / name)
    (run.root / "plots").mkdir(exist_ok=True)
    atomic_write_bytes(run.root / "plots" / "trials.png", trials_plot(table))
    written.append(run.root / "plots" / "trials.png")
    # a plan written before "planned" existed filled stage 2 only once it was known
    planned = plan.get("planned", any(m["stage2"] for m in plan["methods"].values()))
    if planned and table["chosen"].sum() == len(plan["methods"]):
        resolve_recipe(copy.deepcopy(data))  # the tuned recipe loads, or this fails here
        header = (
            f"# dpkd-bench run --recipe {run.root / 'tuned.yaml'} --seeds 1,2,3\n"
            f"# Written by `dpkd-bench tune` from {run.root}: {record.describe()}.\n"
            "# Each method's settings under method_args are its best trial's (tuning.md).\n"
        )
        atomic_write_text(run.root / TUNED, header + dump_yaml(data))
        written.append(run.root / TUNED)
    return written
