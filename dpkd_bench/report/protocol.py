"""How a leaderboard was obtained: tuned or not, each method's training settings, evaluation
decoding, checkpoint selection, and the students that end below their own start on dev.

Everything here reads the run's manifest (its recipe, each unit's recorded settings) and the
units' metrics.json; nothing needs the command line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dpkd_bench.report.view import RunView
from dpkd_bench.results import REFERENCE_ROWS, unit_training
from dpkd_bench.variants import parse_variant, split_train

# The training settings the settings table shows, with their column titles.
SETTING_COLUMNS = (
    ("lr", "lr"),
    ("schedule", "schedule"),
    ("warmup_ratio", "warm-up"),
    ("steps", "steps"),
    ("sequences", "sequences / step"),
    ("select", "weights kept"),
)
DEV_COLUMNS = ["dev_below_start_seeds"]  # leaderboard.csv's last column (render: with_dev_flags)
BELOW_START = "▽"  # the marker of a method whose student ends below its start on dev


def recipe_of(view: RunView) -> dict[str, Any]:
    recipe = view.manifest.get("recipe")
    return recipe if isinstance(recipe, dict) else {}


def unit_train(view: RunView, method: str) -> dict[str, Any]:
    """Method ``method``'s training settings in the run: as its units recorded them, else the
    recipe's ``train`` with the method's own block and variant values over it."""
    for key, entry in (view.manifest.get("units") or {}).items():
        if key.rsplit("/seed-", 1)[0] == method and isinstance(entry.get("train"), dict):
            return entry["train"]
    recipe = recipe_of(view)
    base, variant = parse_variant(method)
    own = split_train({**(recipe.get("method_args") or {}).get(base, {}), **variant})[1]
    return {**(recipe.get("train") or {}), **own}


def setting_text(train: dict[str, Any], key: str) -> str:
    if key == "sequences":
        return str(train.get("batch_size", 0) * train.get("grad_accum", 1))
    if key == "schedule":
        return str(train.get("schedule", "cosine"))
    if key == "select":
        select = train.get("select", "last")
        every = train.get("eval_every", 0)
        return f"best dev (every {every})" if select == "best_dev" else "last"
    value = train.get(key)
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_rows(view: RunView) -> list[list[str]]:
    """One row per trained method: its effective training settings."""
    return [
        [method, *(setting_text(unit_train(view, method), key) for key, _ in SETTING_COLUMNS)]
        for method in view.methods
        if method not in ("teacher", "student_init")
    ]


def settings_header() -> list[str]:
    return ["method", *(title for _, title in SETTING_COLUMNS)]


def decoding_text(recipe: dict[str, Any]) -> str:
    """The evaluation's decoding in words."""
    cfg = recipe.get("eval") or {}
    if cfg.get("decoding", "sample") == "greedy":
        return "greedy decoding (one decode per prompt)"
    seeds = cfg.get("gen_seeds") or []
    return (
        f"sampling at temperature {cfg.get('temperature', 1.0):g} (top-k {cfg.get('top_k', 0)}, "
        f"top-p {cfg.get('top_p', 1.0):g}), each prompt's scores averaged over {len(seeds)} "
        "generation seeds"
    )


def protocol_line(view: RunView) -> str:
    """One line: tuned or not (and how), the evaluation's decoding."""
    recipe = recipe_of(view)
    tuned = recipe.get("tuned")
    if isinstance(tuned, dict) and tuned:
        from dpkd_bench.tune import TunedRecord

        record = TunedRecord(**tuned)
        when = f", tuning finished {record.finished}" if record.finished else ""
        how = f"Protocol: {record.describe()}{when}"
        for later in record.later:  # methods tuned into the recipe by a later tuning run
            shown = [m for m in view.methods if parse_variant(m)[0] in later["methods"]]
            if shown:
                how += (
                    f"; {', '.join(shown)} tuned the same way later (finished "
                    f"{later.get('finished') or 'unknown'})"
                )
        untuned = [
            m
            for m in view.methods
            if m not in REFERENCE_ROWS and parse_variant(m)[0] not in record.space
        ]
        if untuned:
            how += (
                f"; not in that tuning, so trained with the settings the recipe gives them: "
                f"{', '.join(untuned)}"
            )
    else:
        how = (
            "Protocol: untuned: every method trains with the settings the recipe gives it "
            "(see Training settings); nothing was selected per method on a dev split"
        )
    return f"{how}. Evaluation: {decoding_text(recipe)}."


def below_start(view: RunView) -> dict[str, list[int]]:
    """Method -> the seeds whose kept student scores below its own start on the dev split."""
    found: dict[str, list[int]] = {}
    for method, seed in view.units:
        dev = unit_training(view.run, method, seed).get("dev")
        if not isinstance(dev, dict):
            continue
        score, start = dev.get("selected_score"), dev.get("init_score")
        if score is not None and start is not None and score < start and not math.isnan(score):
            found.setdefault(method, []).append(seed)
    return found


def below_start_note(view: RunView) -> str:
    """The legend of the ▽ marker; "" when no student ends below its start."""
    found = below_start(view)
    if not found:
        return ""
    metric = next((unit_train(view, m).get("dev_metric", "rougeL") for m in found), "rougeL")
    listed = "; ".join(
        f"{method} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
        for method, seeds in found.items()
    )
    return (
        f"{BELOW_START} the student this method keeps scores below its own starting point "
        f"(its student_init, or its train.init_from) on the dev split ({metric}): {listed}. "
        "Training made it worse."
    )


@dataclass(frozen=True)
class Section:
    """A report section every format renders the same way: a title, a table, notes."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]


def settings_section(view: RunView) -> Section:
    rows = settings_rows(view)
    note = (
        "Each method's training settings as its units ran them (the recipe's train section, "
        "the method's own train block, the variant's values; `dpkd-bench run --dry-run` "
        "prints them before a run)."
    )
    return Section("Training settings", settings_header(), rows, [note])


def flag_rows(rows: list, flagged: dict[str, list[int]]) -> list:
    """Leaderboard rows with the BELOW_START marker after each flagged method's name."""
    return [
        dataclasses.replace(row, method=f"{row.method} {BELOW_START}")
        if row.method in flagged
        else row
        for row in rows
    ]
