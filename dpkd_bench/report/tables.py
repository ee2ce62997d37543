"""One table model (``Cell``, ``Row``) for the Markdown, HTML and LaTeX leaderboards, their
legends, the gap-closed table and the ablation tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from dpkd_bench.report.scores import PRIMARY, REFERENCE_METHOD, SCORES, TEACHER, reference_method
from dpkd_bench.report.view import RunView
from dpkd_bench.results import REFERENCE_ROWS
from dpkd_bench.stats import (
    CORRECTION_NAMES,
    StatsSettings,
    format_interval,
    format_mean_std,
    is_significant,
)
from dpkd_bench.stats.significance import EXAMPLES_ONLY
from dpkd_bench.variants import parse_variant

MARKER = "†"  # significant difference from the reference method
NO_VALUE = "—"


@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False
    marker: bool = False  # differs from the reference method (corrected p-value)
    interval: str = ""  # 95% two-level bootstrap interval, as text


@dataclass(frozen=True)
class Row:
    method: str
    reference: bool
    seeds: str
    cells: list[Cell]


def format_score(mean: float, std: float) -> str:
    return format_mean_std(mean, std)


def winners(board: pd.DataFrame) -> dict[tuple[str, str], str | None]:
    """The bolded student per (eval_set, score): the one alone in the top tier (letter "a"),
    else None (nothing bold). Without tiers (no per-example scores), the best mean."""
    students = board[~board["method"].isin(REFERENCE_ROWS)]
    found = {}
    for key, _ in SCORES:
        tier_column = f"{key}_tier"
        for eval_set, group in students.groupby("eval_set", sort=False):
            letters = (
                group[tier_column].fillna("").astype(str)
                if tier_column in group.columns
                else pd.Series("", index=group.index)
            )
            if (letters != "").any():
                top = group.loc[letters.str.contains("a"), "method"]
                found[(eval_set, key)] = top.iloc[0] if len(top) == 1 else None
            else:
                found[(eval_set, key)] = group.loc[group[f"{key}_mean"].idxmax(), "method"]
    return found


def table_header(eval_sets: list[str]) -> list[str]:
    return ["method", "seeds"] + [f"{e} {label}" for e in eval_sets for _, label in SCORES]


def float_value(record: pd.Series, column: str) -> float:
    """``record[column]`` as a float; NaN when the column is missing, None or NA."""
    value = record.get(column, math.nan)
    return math.nan if value is None or pd.isna(value) else float(value)


def seed_counts(group: pd.DataFrame) -> str:
    """The seeds column of a method's rows: its distinct seed counts, e.g. ``"2"`` or ``"1/2"``."""
    return "/".join(str(n) for n in sorted(set(group["n_seeds"])))


def score_cell(record: pd.Series, key: str, best: bool, reference: bool, alpha: float) -> Cell:
    """One table cell: mean ± std, best flag, significance marker and bootstrap interval."""
    mean = record[f"{key}_mean"]
    low, high = (float_value(record, f"{key}_ci_{end}") for end in ("low", "high"))
    return Cell(
        format_score(mean, record[f"{key}_std"]),
        best=not reference and best,
        marker=is_significant(float_value(record, f"{key}_p_adjusted"), alpha),
        interval=format_interval(low, high),
    )


def table_rows(board: pd.DataFrame, eval_sets: list[str], alpha: float) -> list[Row]:
    best = winners(board)
    rows = []
    for method, group in board.groupby("method", sort=False):
        by_set = group.set_index("eval_set")
        reference = method in REFERENCE_ROWS
        cells = []
        for eval_set in eval_sets:
            for key, _ in SCORES:
                if eval_set not in by_set.index:
                    cells.append(Cell(NO_VALUE))
                    continue
                record = by_set.loc[eval_set]
                winner = best.get((eval_set, key)) == method
                cells.append(score_cell(record, key, winner, reference, alpha))
        rows.append(Row(method, reference, seed_counts(group), cells))
    return rows


def board_eval_sets(board: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(board["eval_set"]))


LEGEND = (
    "Mean ± sample std over training seeds (n/a: one seed). Higher is better. The best "
    "student of a column is in bold only when it is alone in the top tier (see Ranks and "
    "tiers); teacher and student_init are references (italic, not ranked)."
)


def settings_of(view: RunView) -> StatsSettings:
    """The run's ``stats`` settings (its manifest's recipe; the defaults for older runs)."""
    return StatsSettings.from_recipe(view.manifest.get("recipe"))


def count_tests(board: pd.DataFrame) -> tuple[int, int]:
    """(tests against the reference, of which over examples only) in the board."""
    values = []
    for key, _ in SCORES:
        if f"{key}_test" in board.columns:
            tested = board[board[f"{key}_p_vs_reference"].notna()]  # the corrected family
            values += [str(v) for v in tested[f"{key}_test"]]
    return len(values), sum(v == EXAMPLES_ONLY for v in values)


def significance_legend(view: RunView, board: pd.DataFrame) -> str:
    """What the marker means (test, correction, number of comparisons), or why there is none."""
    reference = reference_method(board)
    if reference is None:
        return (
            f"No significance markers: the reference method '{REFERENCE_METHOD}' has no "
            "scores in this run."
        )
    settings = settings_of(view)
    total, examples_only = count_tests(board)
    correction = CORRECTION_NAMES[settings.correction]
    if settings.correction == "none":
        level = f"unadjusted p < {settings.alpha:g} (no correction for the {total} comparisons"
    else:
        level = (
            f"{correction}-adjusted p < {settings.alpha:g} ({correction} over the {total} "
            "comparisons"
        )
    text = (
        f"{MARKER} differs from {reference} at {level} of this table: methods × eval sets × "
        "scores against the reference). Test: two-level t-test over training seeds and "
        "examples (seeds paired when both ran the same seeds; Welch-Satterthwaite degrees of "
        "freedom); leaderboard.csv has raw and adjusted p-values and the test of each."
    )
    if examples_only:
        text += (
            f" {examples_only} of the {total} tests cover example noise only (one training "
            "seed on both sides)."
        )
    return text


def interval_legend(view: RunView) -> str:
    return (
        "Brackets: 95% percentile interval of the mean from a two-level bootstrap "
        f"({settings_of(view).n_resamples} resamples, fixed seed): examples drawn with "
        "replacement, and each method's training seeds drawn with replacement."
    )


def provenance(view: RunView) -> str:
    """One line: where the numbers come from (commit and tree state, threads, seeds, times,
    decoding, correction)."""
    manifest = view.manifest
    commit = str(manifest.get("git_commit") or "unknown")
    modified = commit.endswith("+dirty")
    tree = "from a MODIFIED tree (uncommitted changes)" if modified else "clean tree"
    threads = manifest.get("threads") or {}
    thread_text = (
        f"{threads.get('torch')} torch threads (OMP_NUM_THREADS={threads.get('OMP_NUM_THREADS')})"
        if threads
        else "threads not recorded"
    )
    machine = manifest.get("machine") or {}
    if machine:
        capability = f", {machine['cpu_capability']}" if machine.get("cpu_capability") else ""
        thread_text += f" on {machine.get('gpu') or machine.get('cpu')}{capability}"
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    decoding = (recipe.get("eval") or {}).get("decoding", "?")
    student = recipe.get("student") or {}
    per_seed = student.get("init_per_seed", False) and bool(
        (student.get("init_train") or {}).get("steps")
        or not (student.get("model") or {}).get("name_or_path")
    )
    init = "one student_init per seed" if per_seed else "one student_init shared by all seeds"
    seeds = ", ".join(str(s) for s in manifest.get("seeds", []))
    seeds += f" ({init})" if len(manifest.get("seeds", [])) > 1 else ""
    return (
        f"Run at commit {commit.removesuffix('+dirty')[:12]}, {tree}; {thread_text}; seeds "
        f"{seeds or '?'}; {decoding} decoding; started {manifest.get('started')}, "
        f"finished {manifest.get('finished') or 'not finished'}."
    )


def rank_header(eval_sets: list[str]) -> list[str]:
    return ["method"] + [f"{e} {label}" for e in eval_sets for _, label in SCORES]


def rank_rows(board: pd.DataFrame, eval_sets: list[str]) -> list[list[str]]:
    """Per ranked method: ``"rank [low-high] letters"`` per (eval set, score)."""
    rows = []
    students = board[~board["method"].isin(REFERENCE_ROWS)]
    for method, group in students.groupby("method", sort=False):
        by_set = group.set_index("eval_set")
        cells = [method]
        for eval_set in eval_sets:
            for key, _ in SCORES:
                record = by_set.loc[eval_set] if eval_set in by_set.index else None
                cells.append(rank_text(record, key))
        rows.append(cells)
    return rows


def rank_text(record: pd.Series | None, key: str) -> str:
    if record is None or pd.isna(record.get(f"{key}_rank")):
        return NO_VALUE
    rank, low, high = (int(record[f"{key}_rank{end}"]) for end in ("", "_low", "_high"))
    return f"{rank} [{low}–{high}] {record.get(f'{key}_tier') or ''}".strip()


def rank_legend(view: RunView, board: pd.DataFrame) -> str:
    settings = settings_of(view)
    count = len(set(board[~board["method"].isin(REFERENCE_ROWS)]["method"]))
    pairs = count * (count - 1) // 2
    pairs_text = f"{pairs} pair{'s' if pairs != 1 else ''}"
    return (
        "Rank of the mean (1 = best) and its 95% interval over the two-level bootstrap "
        f"({settings.n_resamples} resamples), then the tier letters: methods that share a letter "
        f"are not separated by the pairwise two-level tests ({pairs_text} per column, "
        f"{CORRECTION_NAMES[settings.correction]}-corrected within the column, adjusted p < "
        f"{settings.alpha:g}); letter a holds the best mean."
    )


def smoke_banner(view: RunView) -> str:
    """One line for the top of the report when the recipe is a smoke test, else ""."""
    if not view.smoke:
        return ""
    return (
        f"Smoke test: recipe '{view.recipe_name}' is a smoke-test recipe, too small to rank "
        "methods; its numbers carry no meaning."
    )


# The share of the teacher - REFERENCE_METHOD gap each method closes.
GAP_TITLE = f"Gap closed ({dict(SCORES)[PRIMARY]})"
GAP_LEGEND = (
    f"Gap closed = (method − {REFERENCE_METHOD}) / ({TEACHER} − {REFERENCE_METHOD}) in mean "
    f"{dict(SCORES)[PRIMARY]}, in %: 100% reaches the teacher, 0% is no better than "
    f"{REFERENCE_METHOD}, negative is worse ({NO_VALUE}: teacher equals {REFERENCE_METHOD}, or a "
    "score is missing). Brackets: 95% percentile interval of the two-level bootstrap: "
    f"examples drawn jointly for the method, {REFERENCE_METHOD} and the teacher, each one's "
    "training seeds drawn with replacement (none when a resampled gap reaches zero)."
)


def gap_note(board: pd.DataFrame) -> str:
    """Why there is no gap-closed table, or "" when there is one."""
    missing = [m for m in (REFERENCE_METHOD, TEACHER) if m not in set(board["method"])]
    if not missing:
        return ""
    names = " and ".join(f"'{m}'" for m in missing)
    return f"No gap-closed table: this run has no {names} scores, which bound the gap."


def gap_cell(record: pd.Series | None, inline: bool) -> Cell:
    """``"33% [30, 36]"`` (interval inline) or ``Cell("33%", interval="[30, 36]")``."""
    point = math.nan if record is None else float_value(record, f"{PRIMARY}_gap_recovered")
    if math.isnan(point):
        return Cell(NO_VALUE)
    low, high = (float_value(record, f"{PRIMARY}_gap_recovered_{end}") for end in ("lo", "hi"))
    interval = "" if math.isnan(low) else format_interval(100 * low, 100 * high, digits=0)
    text = f"{100 * point:.0f}%"
    if inline:
        return Cell(f"{text} {interval}".strip())
    return Cell(text, interval=interval)


def gap_rows(board: pd.DataFrame, eval_sets: list[str], inline: bool) -> list[Row]:
    """Every method but the two bounds (100% and 0% by definition); student_init a reference."""
    rows = []
    shown = board[~board["method"].isin([REFERENCE_METHOD, TEACHER])]
    for method, group in shown.groupby("method", sort=False):
        by_set = group.set_index("eval_set")
        cells = [gap_cell(by_set.loc[e] if e in by_set.index else None, inline) for e in eval_sets]
        rows.append(Row(method, method in REFERENCE_ROWS, seed_counts(group), cells))
    return rows


def ablation_tables(board: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per base method with named variants: rows variants, columns the varied keys + scores."""
    tables = {}
    methods = [m for m in dict.fromkeys(board["method"]) if m not in REFERENCE_ROWS]
    parsed = {m: parse_variant(m) for m in methods}
    for base in dict.fromkeys(b for b, o in parsed.values() if o):
        members = [m for m, (b, _) in parsed.items() if b == base]
        keys = list(dict.fromkeys(k for m in members for k in parsed[m][1]))
        rows = []
        for method in members:
            overrides = parsed[method][1]
            row = {"variant": method, **{k: overrides.get(k, "default") for k in keys}}
            for record in board[board["method"] == method].itertuples():
                for key, label in SCORES:
                    row[f"{record.eval_set} {label}"] = round(getattr(record, f"{key}_mean"), 2)
            rows.append(row)
        tables[base] = pd.DataFrame(rows)
    return tables
