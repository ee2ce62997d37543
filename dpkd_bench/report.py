"""Tables, plots and one HTML page from a run directory alone (never loads a model).

``render(DIR)`` (re)writes DIR/leaderboard.csv, DIR/leaderboard.md, DIR/leaderboard.tex,
DIR/families.csv, DIR/report.html and DIR/plots/*.png. Only units whose metrics.json exists and
whose manifest state is "done" (or absent) are scored; failed, running and pending units are
listed under the table instead. The per-seed score table (``seed_scores``) is the single source
for the leaderboard, the Markdown/HTML/LaTeX tables and the score plots; the per-example scores
of the generation files give the bootstrap intervals and the paired tests against the reference
method (``dpkd_bench.stats``), and the share of the teacher-minus-sft gap each method closes
("gap recovered", with its own bootstrap interval). Teacher-fidelity figures come from each
unit's fidelity.json (written by ``dpkd_bench.fidelity``) and published numbers from
``baselines/*.yaml`` when the run's recipe names the setting it replicates. A run of a
smoke-test recipe (named ``synthetic-quick``, or whose resolved recipe says ``smoke: true``)
is flagged at the top of leaderboard.md, report.html and the LaTeX caption.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dpkd_bench.errors import UserError
from dpkd_bench.results import (
    GENERATIONS,
    METRICS,
    REFERENCE_ROWS,
    TRAIN_LOG,
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    is_safe_name,
    read_json,
    read_jsonl,
    unit_key,
)
from dpkd_bench.stats import (
    ALPHA,
    N_RESAMPLES,
    example_statistics,
    format_interval,
    format_mean_std,
    gap_columns,
    gap_recovered,
    gap_statistics,
    is_significant,
    sample_std,
    statistics_columns,
)
from dpkd_bench.variants import parse_variant

SCORES = (("rougeL", "ROUGE-L"), ("exact_match", "EM"))  # both higher-is-better, 0-100
LEADERBOARD_COLUMNS = [
    "method",
    "eval_set",
    "n_seeds",
    "rougeL_mean",
    "rougeL_std",
    "exact_match_mean",
    "exact_match_std",
]
SCORE_KEYS = [key for key, _ in SCORES]
# Appended after the contract columns of leaderboard.csv (never before or between them).
STATISTICS_COLUMNS = statistics_columns(SCORE_KEYS)[2:]
# Then, per score: the share of the teacher - sft gap closed and its 95% bootstrap interval.
GAP_COLUMNS = gap_columns(SCORE_KEYS)
SEED_COLUMNS = ["method", "seed", "eval_set", "rougeL", "exact_match", "n"]
EXAMPLE_COLUMNS = ["method", "seed", "eval_set", "id", *SCORE_KEYS]
NOT_LOSS_TERMS = {"method", "seed", "step", "lr", "tokens_per_s", "elapsed_s"}
REFERENCE_METHOD = "sft"  # paired tests compare every other method with this one, when it ran
TEACHER = "teacher"  # with REFERENCE_METHOD, bounds the gap that "gap recovered" measures
PRIMARY = SCORE_KEYS[0]  # the score the gap-closed tables show
SMOKE_RECIPES = ("synthetic-quick",)  # flagged even when their manifest predates `smoke`
MARKER = "†"  # significant difference from the reference method
SAMPLES_PER_SET = 5
TRAINING_PLOT = "training_curves.png"
COST_PLOT = "score_vs_cost.png"
NO_VALUE = "—"
FIDELITY = "fidelity.json"  # per unit; written by dpkd_bench.fidelity.write_fidelity
BASELINES_DIR = Path(__file__).resolve().parent.parent / "baselines"


# ---- what is in the run directory ---------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """A run directory's manifest and its finished units, in display order."""

    run: RunDir
    manifest: dict
    units: list[tuple[str, int]]

    @property
    def recipe_name(self) -> str:
        return str(self.manifest.get("recipe_name") or self.run.root.name)

    @property
    def smoke(self) -> bool:
        """A smoke-test recipe: its resolved recipe says ``smoke: true``, or it is named
        as one of SMOKE_RECIPES."""
        recipe = self.manifest.get("recipe")
        recipe = recipe if isinstance(recipe, dict) else {}
        names = {self.recipe_name, str(recipe.get("name"))}
        return recipe.get("smoke") is True or any(name in names for name in SMOKE_RECIPES)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _ in self.units))

    @property
    def eval_sets(self) -> list[str]:
        return [str(name) for name in self.manifest.get("eval_sets", [])]

    def not_scored(self) -> dict[str, dict]:
        """Manifest units that are not "done" (failed, running, pending)."""
        units = self.manifest.get("units") or {}
        return {k: v for k, v in units.items() if _state(v) != "done"}


def _state(entry: object) -> str:
    return entry.get("state", "done") if isinstance(entry, dict) else "done"


def display_order(found, preferred) -> list[str]:
    """``preferred`` names that were found, in that order, then the other found names sorted."""
    found = set(found)
    first = [name for name in dict.fromkeys(preferred) if name in found]
    return first + sorted(found - set(first))


def load_run(run: RunDir) -> RunView:
    manifest = run.load_manifest()
    states = manifest.get("units") or {}
    done = [u for u in run.completed_units() if _state(states.get(unit_key(*u))) == "done"]
    order = display_order({m for m, _ in done}, [*REFERENCE_ROWS, *manifest.get("methods", [])])
    rank = {method: i for i, method in enumerate(order)}
    return RunView(run, manifest, sorted(done, key=lambda u: (rank[u[0]], u[1])))


# ---- scores -------------------------------------------------------------------------------
def _unit_scores(run: RunDir, method: str, seed: int) -> list[dict]:
    path = run.unit_dir(method, seed) / METRICS
    metrics = read_json(path)
    try:
        return [
            {
                "method": method,
                "seed": seed,
                "eval_set": str(name),
                **{key: float(scores[key]) for key, _ in SCORES},
                "n": int(scores.get("n", 0)),
            }
            for name, scores in metrics["eval"].items()
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(
            f"{path} does not follow the metrics schema ({type(err).__name__}: {err}); expected "
            '{"eval": {"<eval_set>": {"exact_match": ..., "rougeL": ..., "n": ...}}}'
        ) from None


def seed_scores(view: RunView) -> pd.DataFrame:
    """One row per (finished unit, eval set): method, seed, eval_set, rougeL, exact_match, n;
    sorted by method (display order), eval set (manifest order), seed."""
    rows = [row for unit in view.units for row in _unit_scores(view.run, *unit)]
    table = pd.DataFrame(rows, columns=SEED_COLUMNS)
    eval_order = display_order(table["eval_set"], view.manifest.get("eval_sets", []))
    method_rank = {m: i for i, m in enumerate(view.methods)}
    eval_rank = {e: i for i, e in enumerate(eval_order)}
    keys = pd.DataFrame(
        {"m": table["method"].map(method_rank), "e": table["eval_set"].map(eval_rank)}
    )
    order = keys.assign(s=table["seed"]).sort_values(["m", "e", "s"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


def aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    """Leaderboard rows from per-seed scores; std is the sample std (NaN for one seed)."""
    spec = {"n_seeds": ("seed", "count")}
    for key, _ in SCORES:
        spec[f"{key}_mean"] = (key, "mean")
        spec[f"{key}_std"] = (key, sample_std)
    board = scores.groupby(["method", "eval_set"], sort=False).agg(**spec).reset_index()
    board = board.astype({"n_seeds": int})
    for column in LEADERBOARD_COLUMNS[3:]:
        board[column] = board[column].astype(float)
    return board[LEADERBOARD_COLUMNS]


def leaderboard(run: RunDir) -> pd.DataFrame:
    """One row per (method, eval_set): reference rows first, then the manifest's methods."""
    return aggregate(seed_scores(load_run(run)))


def _example_rows(method: str, seed: int, eval_set: str, records: list[dict]) -> list[dict]:
    rows = []
    for index, record in enumerate(records):
        if all(isinstance(record.get(key), (int, float)) for key in SCORE_KEYS):
            example_id = str(record.get("id", index))
            rows.append({"method": method, "seed": seed, "eval_set": eval_set, "id": example_id})
            rows[-1].update({key: float(record[key]) for key in SCORE_KEYS})
    return rows


def example_scores(view: RunView) -> pd.DataFrame:
    """Per-example scores of every finished unit, from its generations/<eval_set>.jsonl.

    Columns: method, seed, eval_set, id, rougeL, exact_match (each already the mean over
    generation seeds). Records without numeric scores are skipped; missing files give no rows.
    """
    rows = [
        row
        for method, seed in view.units
        for eval_set in view.eval_sets
        for row in _example_rows(
            method, seed, eval_set, read_generations(view.run.unit_dir(method, seed), eval_set)
        )
    ]
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def reference_method(board: pd.DataFrame) -> str | None:
    """The method the paired tests compare against: ``sft`` when it was scored, else None."""
    return REFERENCE_METHOD if REFERENCE_METHOD in set(board["method"]) else None


def with_statistics(
    board: pd.DataFrame, examples: pd.DataFrame, n_resamples: int = N_RESAMPLES
) -> pd.DataFrame:
    """The leaderboard with bootstrap intervals and paired p-values appended (NaN if none)."""
    statistics = example_statistics(examples, SCORE_KEYS, reference_method(board), n_resamples)
    merged = board.merge(statistics, on=["method", "eval_set"], how="left", sort=False)
    merged["reference"] = merged["reference"].fillna("")
    merged["n_examples"] = merged["n_examples"].astype("Int64")
    return merged[[*LEADERBOARD_COLUMNS, *STATISTICS_COLUMNS]]


def bound_means(board: pd.DataFrame, method: str, key: str) -> pd.Series:
    """Each row's eval-set mean ``key`` score of ``method`` (NaN where it has none)."""
    means = board[board["method"] == method].set_index("eval_set")[f"{key}_mean"]
    return board["eval_set"].map(means).astype(float)


def with_gap_recovered(
    board: pd.DataFrame, examples: pd.DataFrame, n_resamples: int = N_RESAMPLES
) -> pd.DataFrame:
    """The board with GAP_COLUMNS appended: (mean - sft mean) / (teacher mean - sft mean) per
    score, and its bootstrap interval over examples; NaN where sft or teacher has no score on
    the eval set or the two are equal."""
    intervals = gap_statistics(examples, SCORE_KEYS, REFERENCE_METHOD, TEACHER, n_resamples)
    merged = board.merge(intervals, on=["method", "eval_set"], how="left", sort=False)
    for key in SCORE_KEYS:
        bounds = (bound_means(merged, name, key) for name in (REFERENCE_METHOD, TEACHER))
        merged[f"{key}_gap_recovered"] = gap_recovered(merged[f"{key}_mean"], *bounds)
    return merged[[*board.columns, *GAP_COLUMNS]]


# ---- one table model for Markdown and HTML ------------------------------------------------
@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False
    marker: bool = False  # significantly different from the reference method
    interval: str = ""  # 95% bootstrap interval over examples, as text


@dataclass(frozen=True)
class Row:
    method: str
    reference: bool
    seeds: str
    cells: list[Cell]


def format_score(mean: float, std: float) -> str:
    return format_mean_std(mean, std)


def best_means(board: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Best student mean (rounded as shown) per (eval_set, score); references excluded."""
    students = board[~board["method"].isin(REFERENCE_ROWS)]
    best = {}
    for key, _ in SCORES:
        for eval_set, values in students.groupby("eval_set", sort=False)[f"{key}_mean"]:
            best[(eval_set, key)] = round(values.max(), 2)
    return best


def table_header(eval_sets: list[str]) -> list[str]:
    return ["method", "seeds"] + [f"{e} {label}" for e in eval_sets for _, label in SCORES]


def _value(record: pd.Series, column: str) -> float:
    value = record.get(column, math.nan)
    return math.nan if value is None or pd.isna(value) else float(value)


def score_cell(record: pd.Series, key: str, best: float | None, reference: bool) -> Cell:
    """One table cell: mean ± std, best flag, significance marker and bootstrap interval."""
    mean = record[f"{key}_mean"]
    interval = format_interval(_value(record, f"{key}_ci_low"), _value(record, f"{key}_ci_high"))
    return Cell(
        format_score(mean, record[f"{key}_std"]),
        best=not reference and round(mean, 2) == best,
        marker=is_significant(_value(record, f"{key}_p_vs_reference")),
        interval=interval,
    )


def table_rows(board: pd.DataFrame, eval_sets: list[str]) -> list[Row]:
    best = best_means(board)
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
                cells.append(score_cell(record, key, best.get((eval_set, key)), reference))
        seeds = "/".join(str(n) for n in sorted(set(group["n_seeds"])))
        rows.append(Row(method, reference, seeds, cells))
    return rows


def board_eval_sets(board: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(board["eval_set"]))


LEGEND = (
    "Mean ± sample std over training seeds (n/a: one seed). Higher is better. Best student "
    "per column in bold; teacher and student_init are references (italic, not ranked)."
)


def significance_legend(board: pd.DataFrame) -> str:
    """What the marker means, or why there is none."""
    reference = reference_method(board)
    if reference is None:
        return (
            f"No significance markers: the reference method '{REFERENCE_METHOD}' has no "
            "scores in this run."
        )
    return (
        f"{MARKER} differs from {reference} at p < {ALPHA:g}: two-sided paired sign-flip "
        f"permutation test over the examples both were scored on ({N_RESAMPLES} resamples; "
        "each example's score averaged over training seeds first)."
    )


def interval_legend() -> str:
    return (
        f"Brackets: 95% percentile bootstrap interval of the mean over examples ({N_RESAMPLES} "
        "resamples, fixed seed; per-example scores averaged over training seeds first)."
    )


def smoke_banner(view: RunView) -> str:
    """One line for the top of the report when the recipe is a smoke test, else ""."""
    if not view.smoke:
        return ""
    return (
        f"Smoke test: recipe '{view.recipe_name}' is a smoke-test recipe, too small to rank "
        "methods; its numbers carry no meaning."
    )


# ---- gap recovered: the share of the teacher - sft gap each method closes --------------------
GAP_TITLE = f"Gap closed ({dict(SCORES)[PRIMARY]})"
GAP_LEGEND = (
    f"Gap closed = (method − {REFERENCE_METHOD}) / ({TEACHER} − {REFERENCE_METHOD}) in mean "
    f"{dict(SCORES)[PRIMARY]}, in %: 100% reaches the teacher, 0% is no better than "
    f"{REFERENCE_METHOD}, negative is worse ({NO_VALUE}: teacher equals {REFERENCE_METHOD}, or a "
    "score is missing). Brackets: 95% percentile bootstrap interval, resampling examples "
    f"jointly for the method, {REFERENCE_METHOD} and the teacher (none when a resampled gap "
    "reaches zero)."
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
    point = math.nan if record is None else _value(record, f"{PRIMARY}_gap_recovered")
    if math.isnan(point):
        return Cell(NO_VALUE)
    low, high = (_value(record, f"{PRIMARY}_gap_recovered_{end}") for end in ("lo", "hi"))
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
        seeds = "/".join(str(n) for n in sorted(set(group["n_seeds"])))
        rows.append(Row(method, method in REFERENCE_ROWS, seeds, cells))
    return rows


# ---- ablations: variants of one method side by side ------------------------------------------
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


def markdown_ablations(tables: dict[str, pd.DataFrame]) -> list[str]:
    lines = []
    for base, table in tables.items():
        lines += ["", f"## Ablation: {md_text(base)}", ""]
        header = [md_text(c) for c in table.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + " --- |" * len(header))
        for row in table.itertuples(index=False):
            lines.append("| " + " | ".join(md_text(v) for v in row) + " |")
    return lines


def html_ablations(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for base, table in tables.items():
        head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
            for row in table.itertuples(index=False)
        )
        parts.append(f"<h2>Ablation: {esc(base)}</h2>\n<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


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


# ---- Markdown ------------------------------------------------------------------------------
def md_text(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def md_cell(cell: Cell, reference: bool) -> str:
    text = md_text(cell.text)
    marker = MARKER if cell.marker else ""
    if cell.best:
        return f"**{text}**{marker}"
    return f"*{text}*{marker}" if reference and cell.text != NO_VALUE else f"{text}{marker}"


def markdown_table(header: list[str], rows: list[Row]) -> list[str]:
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "| --- | ---: |" + " ---: |" * (len(header) - 2),
    ]
    for row in rows:
        name = f"*{md_text(row.method)}*" if row.reference else md_text(row.method)
        cells = [md_cell(c, row.reference) for c in row.cells]
        lines.append("| " + " | ".join([name, row.seeds, *cells]) + " |")
    return lines


def not_scored_lines(view: RunView) -> list[str]:
    """One line per unit left out of the table: key, state and error."""
    lines = []
    for key, entry in view.not_scored().items():
        error = entry.get("error") if isinstance(entry, dict) else None
        detail = f" ({' '.join(str(error).split())})" if error else ""
        lines.append(f"{key}: {_state(entry)}{detail}")
    return lines


def markdown_grid(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A plain Markdown table: the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "|" + " --- |" * left + " ---: |" * (len(header) - left),
    ]
    return lines + ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]


def markdown_gap(board: pd.DataFrame) -> list[str]:
    if board.empty:
        return []
    note = gap_note(board)
    if note:
        return ["", note]
    eval_sets = board_eval_sets(board)
    header = ["method", "seeds", *eval_sets]
    table = markdown_table(header, gap_rows(board, eval_sets, inline=True))
    return ["", f"## {GAP_TITLE}", "", GAP_LEGEND, "", *table]


def render_markdown(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    lines = [f"# dpkd-bench leaderboard: {md_text(view.recipe_name)}", ""]
    banner = smoke_banner(view)
    lines += [f"> **{md_text(banner)}**", ""] if banner else []
    lines += [LEGEND, ""]
    if board.empty:
        lines.append("No finished units yet.")
    else:
        lines += markdown_table(table_header(eval_sets), table_rows(board, eval_sets))
        lines += ["", significance_legend(board)]
    lines += markdown_gap(board)
    lines += markdown_ablations(ablation_tables(board)) if not board.empty else []
    fidelity = fidelity_table(fidelity_scores(view))
    if not fidelity.empty:
        lines += ["", "## Teacher fidelity", "", FIDELITY_LEGEND, ""]
        lines += markdown_grid(list(fidelity.columns), fidelity.values.tolist(), left=2)
    lines += markdown_baselines(published_comparison(view, board))
    lines += markdown_families(family_scores(view))
    left_out = not_scored_lines(view)
    if left_out:
        lines += ["", "Units not in the table:", ""] + [f"- {md_text(line)}" for line in left_out]
    return "\n".join(lines) + "\n"


# ---- plots ---------------------------------------------------------------------------------
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
        low, high = _value(row, f"{key}_ci_low"), _value(row, f"{key}_ci_high")
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


def write_plots(run: RunDir, plots: dict[str, Plot]) -> list[Path]:
    """Write the plots and remove report plots of an earlier render that are now stale."""
    stale = [
        *run.plots_dir.glob("scores_*.png"),
        *run.plots_dir.glob("ablation_*.png"),
        run.plots_dir / TRAINING_PLOT,
        run.plots_dir / COST_PLOT,
    ]
    for path in stale:
        if path.name not in plots:
            path.unlink(missing_ok=True)
    paths = []
    for name, plot in plots.items():
        atomic_write_bytes(run.plots_dir / name, plot.png)
        paths.append(run.plots_dir / name)
    return paths


# ---- score against training cost -----------------------------------------------------------
COST_AXES = (
    ("teacher_forwards", "teacher forwards (sequences)"),
    ("steps", "student optimiser steps"),
    ("wall_s", "training wall time (s)"),
)


def _unit_config(unit: Path) -> dict:
    path = unit / "config.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def sequences_per_step(manifest: dict) -> float:
    """Training sequences per optimiser step (batch_size x grad_accum), NaN when unknown."""
    train = (manifest.get("recipe") or {}).get("train") or {}
    try:
        return float(train["batch_size"]) * float(train.get("grad_accum", 1))
    except (KeyError, TypeError, ValueError):
        return math.nan


def unit_cost(view: RunView, method: str, seed: int) -> dict | None:
    """Cost of one unit's training from metrics.json "train" and config.yaml; None if absent.

    ``teacher_forwards`` is the recorded count when metrics.json has one; otherwise it is
    estimated as steps x batch_size x grad_accum for a method whose config says
    ``uses_teacher`` (one teacher forward per training sequence), 0 for one that does not.
    """
    unit = view.run.unit_dir(method, seed)
    metrics = read_json(unit / METRICS)
    train = metrics.get("train") if isinstance(metrics, dict) else None
    if not isinstance(train, dict) or "steps" not in train:
        return None
    steps = float(train["steps"])
    recorded = train.get("teacher_forwards")
    uses_teacher = bool(_unit_config(unit).get("uses_teacher", True))
    estimate = steps * sequences_per_step(view.manifest) if uses_teacher else 0.0
    return {
        "method": method,
        "seed": seed,
        "steps": steps,
        "wall_s": float(train.get("wall_s", math.nan)),
        "teacher_forwards": float(recorded) if recorded is not None else estimate,
        "estimated": recorded is None and uses_teacher,
    }


def training_costs(view: RunView) -> pd.DataFrame:
    rows = [unit_cost(view, method, seed) for method, seed in view.units]
    columns = ["method", "seed", "steps", "wall_s", "teacher_forwards", "estimated"]
    return pd.DataFrame([row for row in rows if row], columns=columns)


def cost_plot(points: pd.DataFrame) -> bytes:
    """One panel per cost measure: mean ROUGE-L over eval sets against it, one point per method."""
    fig = Figure(figsize=(4.2 * len(COST_AXES), 3.6), layout="constrained")
    axes = fig.subplots(1, len(COST_AXES), squeeze=False).ravel()
    for ax, (column, label) in zip(axes, COST_AXES, strict=True):
        for i, row in enumerate(points.itertuples(index=False)):
            ax.scatter(getattr(row, column), row.rougeL, color=f"C{i % 10}", label=row.method)
            ax.annotate(row.method, (getattr(row, column), row.rougeL), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("mean ROUGE-L over eval sets")
    return png_bytes(fig)


def cost_caption(costs: pd.DataFrame) -> str:
    text = (
        "Mean ROUGE-L over eval sets (mean over training seeds) against the training cost of "
        "each method: teacher forward passes, student optimiser steps and wall time, from "
        'metrics.json "train" (mean over seeds; references excluded).'
    )
    estimated = sorted(set(costs.loc[costs["estimated"], "method"]))
    if estimated:
        text += (
            " Teacher forwards are not recorded by the runner: for "
            f"{', '.join(estimated)} they are computed as steps x batch_size x grad_accum "
            "(one teacher forward per training sequence; methods that score several sequences "
            "per prompt, such as dpkd or minillm, make more, and teacher samples cached once "
            "per run are not counted)."
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


# ---- sample generations --------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    references: list[str]
    predictions: dict[str, str | None]  # method -> first prediction (None: not found)


def first_seed_units(view: RunView) -> dict[str, Path]:
    """Each method's unit directory with the lowest finished seed."""
    dirs: dict[str, Path] = {}
    for method, seed in view.units:
        dirs.setdefault(method, view.run.unit_dir(method, seed))
    return dirs


def read_generations(unit: Path, eval_set: str) -> list[dict]:
    path = unit / GENERATIONS / f"{eval_set}.jsonl"
    if not is_safe_name(eval_set) or not path.is_file():
        return []
    return [r for r in read_jsonl(path) if isinstance(r, dict)]


def family_scores(view: RunView) -> pd.DataFrame:
    """Exact match per task family (records with a ``family``), mean over every finished seed.

    Columns: method, eval_set, family, n, exact_match, rougeL. Empty when no record has one.
    """
    rows = []
    for method, seed in view.units:
        unit = view.run.unit_dir(method, seed)
        for eval_set in view.eval_sets:
            for record in read_generations(unit, eval_set):
                if record.get("family"):
                    rows.append(
                        {
                            "method": method,
                            "eval_set": eval_set,
                            "family": record["family"],
                            "exact_match": float(record.get("exact_match", 0.0)),
                            "rougeL": float(record.get("rougeL", 0.0)),
                        }
                    )
    if not rows:
        return pd.DataFrame(columns=["method", "eval_set", "family", "n", "exact_match", "rougeL"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["method", "eval_set", "family"], sort=False)
    table = grouped.agg(
        n=("exact_match", "size"), exact_match=("exact_match", "mean"), rougeL=("rougeL", "mean")
    )
    return table.reset_index().round(2)


def markdown_families(families: pd.DataFrame) -> list[str]:
    """One table per eval set: rows methods, columns families, cells exact match (%)."""
    lines = []
    for eval_set, group in families.groupby("eval_set", sort=False):
        wide = group.pivot(index="method", columns="family", values="exact_match")
        wide = wide.reindex(list(dict.fromkeys(group["method"])))
        lines += ["", f"## Exact match per family: {md_text(eval_set)}", ""]
        lines.append("| method | " + " | ".join(md_text(c) for c in wide.columns) + " |")
        lines.append("| --- |" + " ---: |" * len(wide.columns))
        for method, row in wide.iterrows():
            lines.append(f"| {md_text(method)} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    return lines


def first_prediction(record: dict | None) -> str | None:
    predictions = (record or {}).get("predictions") or []
    return str(predictions[0]) if predictions else None


def eval_samples(view: RunView, eval_set: str, k: int = SAMPLES_PER_SET) -> list[Sample]:
    """The first ``k`` examples of ``eval_set`` and every method's first prediction on them."""
    by_method = {
        method: {str(r.get("id")): r for r in read_generations(unit, eval_set)}
        for method, unit in first_seed_units(view).items()
    }
    source = next((records for records in by_method.values() if records), {})
    return [
        Sample(
            id=example_id,
            prompt=str(record.get("prompt", "")),
            references=[str(r) for r in record.get("references") or []],
            predictions={m: first_prediction(rs.get(example_id)) for m, rs in by_method.items()},
        )
        for example_id, record in list(source.items())[:k]
    ]


# ---- HTML ----------------------------------------------------------------------------------
def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
tr.ref td { font-style: italic; color: #555; background: #f6f6f6; }
td.best { font-weight: bold; }
pre, td.text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace,
       monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 8px; }
figure { margin: 1em 0; }
img { max-width: 100%; }
.sample { border-left: 3px solid #ccc; padding-left: 1em; margin: 1.5em 0; }
.ci { color: #666; font-size: 0.85em; font-weight: normal; }
.sig { color: #a00; }
p.smoke { border: 2px solid #c60; background: #fff4e5; padding: 8px; font-weight: bold; }
table.fidelity td:nth-child(n+3), table.baselines td:nth-child(n+2) { text-align: right; }
"""


# The page is self-contained: no scripts, no requests; images are data: URIs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def html_score_cell(cell: Cell) -> str:
    classes = "num best" if cell.best else "num"
    marker = f'<span class="sig">{MARKER}</span>' if cell.marker else ""
    interval = f'<br><span class="ci">{esc(cell.interval)}</span>' if cell.interval else ""
    return f'<td class="{classes}">{esc(cell.text)}{marker}{interval}</td>'


def html_table(header: list[str], rows: list[Row], css_class: str = "leaderboard") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(html_score_cell(c) for c in row.cells)
        attr = ' class="ref"' if row.reference else ""
        body.append(
            f'<tr{attr}><td>{esc(row.method)}</td><td class="num">{esc(row.seeds)}</td>{cells}</tr>'
        )
    return (
        f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def html_grid(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """A plain HTML table of text cells (escaped)."""
    attr = f' class="{esc(css_class)}"' if css_class else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_leaderboard(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    parts = ["<h2>Leaderboard</h2>", f"<p>{esc(LEGEND)}</p>"]
    if board.empty:
        parts.append("<p>No finished units yet.</p>")
    else:
        parts.append(html_table(table_header(eval_sets), table_rows(board, eval_sets)))
        parts.append(f"<p>{esc(significance_legend(board))} {esc(interval_legend())}</p>")
    left_out = not_scored_lines(view)
    if left_out:
        items = "".join(f"<li>{esc(line)}</li>" for line in left_out)
        parts.append(f"<p>Units not in the table:</p><ul>{items}</ul>")
    return "\n".join(parts)


def html_gap(board: pd.DataFrame) -> str:
    if board.empty:
        return ""
    note = gap_note(board)
    if note:
        return f"<p>{esc(note)}</p>"
    eval_sets = board_eval_sets(board)
    table = html_table(["method", "seeds", *eval_sets], gap_rows(board, eval_sets, False), "gap")
    return f"<h2>{esc(GAP_TITLE)}</h2>\n<p>{esc(GAP_LEGEND)}</p>\n{table}"


def html_fidelity(view: RunView) -> str:
    table = fidelity_table(fidelity_scores(view))
    if table.empty:
        return ""
    grid = html_grid(list(table.columns), table.astype(str).values.tolist(), "fidelity")
    return f"<h2>Teacher fidelity</h2>\n<p>{esc(FIDELITY_LEGEND)}</p>\n{grid}"


def html_baselines(comparison: Comparison | None) -> str:
    if comparison is None:
        return ""
    parts = [f"<h2>{esc(comparison.title)}</h2>", f"<p>{esc(comparison.caption)}</p>"]
    if comparison.rows:
        parts.append(html_grid(comparison.header, comparison.rows, "baselines"))
    return "\n".join(parts)


def html_plots(plots: dict[str, Plot]) -> str:
    if not plots:
        return ""
    figures = [
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(plot.png).decode("ascii")}">'
        f"<figcaption>{esc(plot.caption)} ({esc(name)})</figcaption></figure>"
        for name, plot in plots.items()
    ]
    return "<h2>Plots</h2>\n" + "\n".join(figures)


def html_sample(sample: Sample) -> str:
    """The prompt, then references and every method's first prediction in one column."""
    references = [
        (f"reference {i + 1}", r, ' class="ref"') for i, r in enumerate(sample.references)
    ]
    outputs = [(m, NO_VALUE if p is None else p, "") for m, p in sample.predictions.items()]
    rows = "".join(
        f'<tr{attr}><td>{esc(source)}</td><td class="text">{esc(text)}</td></tr>'
        for source, text, attr in [*references, *outputs]
    )
    return (
        f'<div class="sample"><h4>example {esc(sample.id)}</h4>'
        f"<p>Prompt</p><pre>{esc(sample.prompt)}</pre>"
        f'<table class="samples"><thead><tr><th>source</th><th>text</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def html_samples(view: RunView, eval_sets: list[str]) -> str:
    parts = [
        "<h2>Sample generations</h2>",
        f"<p>The first {SAMPLES_PER_SET} examples of each eval set: the references, then the "
        "first prediction (first generation seed) of each method's lowest training seed.</p>",
    ]
    for eval_set in eval_sets:
        samples = eval_samples(view, eval_set)
        if samples:
            parts.append(f"<h3>{esc(eval_set)}</h3>")
            parts += [html_sample(s) for s in samples]
    return "\n".join(parts)


def render_html(view: RunView, board: pd.DataFrame, plots: dict[str, Plot]) -> str:
    title = f"dpkd-bench report: {view.recipe_name}"
    manifest = json.dumps(view.manifest, indent=2, ensure_ascii=False, sort_keys=False)
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="smoke">{esc(smoke_banner(view))}</p>' if view.smoke else "",
        f"<p>Recipe: <b>{esc(view.recipe_name)}</b></p>",
        html_leaderboard(view, board),
        html_gap(board),
        html_ablations(ablation_tables(board)) if not board.empty else "",
        html_fidelity(view),
        html_baselines(published_comparison(view, board)),
        html_plots(plots),
        html_samples(view, board_eval_sets(board)),
        f"<h2>Manifest</h2>\n<pre>{esc(manifest)}</pre>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


# ---- teacher fidelity ----------------------------------------------------------------------
# fidelity.json key, column label, which way is closer to the teacher
FIDELITY_FIELDS = (
    ("kl_teacher_student", "KL(teacher‖student)", "lower"),
    ("kl_student_teacher", "KL(student‖teacher)", "lower"),
    ("top1_agreement", "top-1 agreement", "higher"),
    ("length_ratio", "length ratio", "1 is closest"),
)
FIDELITY_LEGEND = (
    "Teacher-forced on each eval prompt with its first reference: mean over response tokens of "
    "KL(teacher‖student) and KL(student‖teacher) in nats (lower is closer to the teacher) and "
    "the fraction of response positions where the two argmax tokens agree (higher is closer); "
    "length ratio = mean generated length of the method / of the teacher, in words, over every "
    "generation seed (1 is closest). Mean over training seeds."
)


def _fidelity_rows(path: Path, method: str, seed: int) -> list[dict]:
    data = read_json(path)
    evals = data.get("eval") if isinstance(data, dict) else None
    if not isinstance(evals, dict):
        raise UserError(
            f'{path} does not follow the fidelity schema; expected {{"eval": {{"<eval_set>": '
            '{"kl_teacher_student": ..., ...}}}}; delete it or rewrite it with '
            "dpkd_bench.fidelity.write_fidelity"
        )
    rows = []
    for eval_set, values in evals.items():
        values = values if isinstance(values, dict) else {}
        row = {"method": method, "seed": seed, "eval_set": str(eval_set)}
        for key, _, _ in FIDELITY_FIELDS:
            value = values.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) else math.nan
        rows.append(row)
    return rows


def fidelity_scores(view: RunView) -> pd.DataFrame:
    """One row per (unit with a fidelity.json, eval set): method, seed, eval_set, figures."""
    rows = []
    for method, seed in view.units:
        path = view.run.unit_dir(method, seed) / FIDELITY
        if path.is_file():
            rows += _fidelity_rows(path, method, seed)
    columns = ["method", "seed", "eval_set", *(key for key, _, _ in FIDELITY_FIELDS)]
    return pd.DataFrame(rows, columns=columns)


def _fixed(value: float, digits: int = 3) -> str:
    return NO_VALUE if math.isnan(value) else f"{value:.{digits}f}"


def fidelity_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Display table (text cells): method, eval set, seeds, then each figure's mean over seeds."""
    keys = [key for key, _, _ in FIDELITY_FIELDS]
    labels = [label for _, label, _ in FIDELITY_FIELDS]
    header = ["method", "eval set", "seeds", *labels]
    if scores.empty:
        return pd.DataFrame(columns=header)
    grouped = scores.groupby(["method", "eval_set"], sort=False)
    means = grouped[keys].mean()
    seeds = grouped["seed"].count()
    rows = [
        [method, eval_set, str(seeds.loc[(method, eval_set)])]
        + [_fixed(float(means.at[(method, eval_set), key])) for key in keys]
        for method, eval_set in means.index
    ]
    return pd.DataFrame(rows, columns=header)


# ---- published baselines -------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """Published numbers beside the measured ones, as text cells."""

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def replicated_setting(manifest: dict) -> str | None:
    """``recipe.replicates`` of the run's resolved recipe (e.g. "dpkd-2024/gpt2-1.5b-to-120m")."""
    recipe = manifest.get("recipe")
    value = recipe.get("replicates") if isinstance(recipe, dict) else None
    return str(value) if value else None


def load_baseline(reference: str, root: Path = BASELINES_DIR) -> tuple[dict, dict] | None:
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


def markdown_baselines(comparison: Comparison | None) -> list[str]:
    if comparison is None:
        return []
    lines = ["", f"## {md_text(comparison.title)}", "", md_text(comparison.caption)]
    if comparison.rows:
        lines += [""] + markdown_grid(comparison.header, comparison.rows)
    return lines


# ---- LaTeX ---------------------------------------------------------------------------------
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "[": "{[}",  # a row that starts with "[" would be read as \\[<length>]
    "]": "{]}",
    "<": r"$<$",
    ">": r"$>$",
    NO_VALUE: "---",
    MARKER: r"$^{\dagger}$",
    "±": r"$\pm$",
    "−": r"$-$",
    "‖": r"$\|$",
}


def latex_text(text: object) -> str:
    """Plain text -> LaTeX: special characters escaped, whitespace collapsed."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in " ".join(str(text).split()))


def latex_cell(cell: Cell, reference: bool) -> str:
    text = latex_text(cell.text)
    if cell.best:
        text = rf"\textbf{{{text}}}"
    elif reference and cell.text != NO_VALUE:
        text = rf"\textit{{{text}}}"
    return text + (latex_text(MARKER) if cell.marker else "")


def latex_table(board: pd.DataFrame, eval_sets: list[str]) -> list[str]:
    width = len(SCORES)
    groups = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_text(e)}}}" for e in eval_sets)
    rules = " ".join(
        rf"\cmidrule(lr){{{3 + i * width}-{2 + (i + 1) * width}}}" for i in range(len(eval_sets))
    )
    labels = " & ".join(latex_text(label) for _ in eval_sets for _, label in SCORES)
    lines = [
        r"\begin{tabular}{lr" + "r" * (width * len(eval_sets)) + "}",
        r"\toprule",
        rf" & & {groups} \\",
        rules,
        rf"Method & Seeds & {labels} \\",
        r"\midrule",
    ]
    return lines + latex_rows(table_rows(board, eval_sets))


def latex_rows(rows: list[Row]) -> list[str]:
    """The body rows and the closing rules of a tabular of Method, Seeds and ``Cell`` columns."""
    lines = []
    for row in rows:
        name = latex_text(row.method)
        name = rf"\textit{{{name}}}" if row.reference else name
        cells = " & ".join(latex_cell(c, row.reference) for c in row.cells)
        lines.append(rf"{name} & {row.seeds} & {cells} \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def latex_gap(board: pd.DataFrame) -> list[str]:
    """A second table: the gap closed per eval set (none without sft and teacher scores)."""
    if board.empty or gap_note(board):
        return []
    eval_sets = board_eval_sets(board)
    labels = " & ".join(latex_text(e) for e in eval_sets)
    return [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{lr" + "r" * len(eval_sets) + "}",
        r"\toprule",
        rf"Method & Seeds & {labels} \\",
        r"\midrule",
        *latex_rows(gap_rows(board, eval_sets, inline=True)),
        rf"\caption{{{latex_text(GAP_TITLE + '. ' + GAP_LEGEND)}}}",
        r"\end{table}",
    ]


def render_latex(view: RunView, board: pd.DataFrame) -> str:
    """A booktabs table of the leaderboard (needs \\usepackage{booktabs})."""
    caption = f"{view.recipe_name}: {LEGEND}"
    if not board.empty:
        caption += " " + significance_legend(board)
    if view.smoke:
        caption = f"{smoke_banner(view)} {caption}"
    lines = [
        f"% dpkd-bench leaderboard: {' '.join(view.recipe_name.split())}",
        r"% needs \usepackage{booktabs} in the preamble",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
    ]
    if board.empty:
        lines.append(r"No finished units yet.")
    else:
        lines += latex_table(board, board_eval_sets(board))
    lines += [rf"\caption{{{latex_text(caption)}}}", r"\end{table}", *latex_gap(board)]
    return "\n".join(lines) + "\n"


# ---- entry point ---------------------------------------------------------------------------
def all_plots(view: RunView, board: pd.DataFrame) -> dict[str, Plot]:
    plots = {**score_plots(view, board), **training_plots(view), **cost_plots(view, board)}
    if not board.empty:
        for base, table in ablation_tables(board).items():
            caption = f"Ablation of {base}: mean score over training seeds of each variant."
            plots[f"ablation_{file_slug(base)}.png"] = Plot(ablation_plot(base, table), caption)
    return plots


def render(run_dir: str | Path, n_resamples: int = N_RESAMPLES) -> list[Path]:
    """(Re)write leaderboard.csv/.md/.tex, families.csv, report.html and plots/*.png."""
    run = RunDir(run_dir)
    view = load_run(run)
    examples = example_scores(view)
    board = with_statistics(aggregate(seed_scores(view)), examples, n_resamples)
    board = with_gap_recovered(board, examples, n_resamples)
    plots = all_plots(view, board)
    texts = {
        "leaderboard.csv": board.to_csv(index=False, lineterminator="\n"),
        "leaderboard.md": render_markdown(view, board),
        "leaderboard.tex": render_latex(view, board),
        "families.csv": family_scores(view).to_csv(index=False, lineterminator="\n"),
    }
    paths = []
    for name, text in texts.items():
        atomic_write_text(run.root / name, text)
        paths.append(run.root / name)
    plot_paths = write_plots(run, plots)
    atomic_write_text(run.root / "report.html", render_html(view, board, plots))
    return [*paths, run.root / "report.html", *plot_paths]
