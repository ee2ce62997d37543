"""Scores: per seed from metrics.json, per example from the generation files, and the
leaderboard built from them, with bootstrap intervals, paired tests and the gap recovered."""

from __future__ import annotations

import pandas as pd

from dpkd_bench.errors import UserError
from dpkd_bench.methods import REFERENCE_METHOD
from dpkd_bench.report.view import RunView, display_order, load_run, unit_example_scores
from dpkd_bench.results import METRICS, REFERENCE_ROWS, RunDir, read_json
from dpkd_bench.stats import (
    N_RESAMPLES,
    StatsSettings,
    example_statistics,
    gap_columns,
    gap_recovered,
    gap_statistics,
    sample_std,
    statistics_columns,
)
from dpkd_bench.stats.board import blank

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
# Then, per score: the share of the teacher - reference gap closed and its 95% bootstrap
# interval.
GAP_COLUMNS = gap_columns(SCORE_KEYS)
SEED_COLUMNS = ["method", "seed", "eval_set", "rougeL", "exact_match", "n"]
EXAMPLE_COLUMNS = ["method", "seed", "eval_set", "id", *SCORE_KEYS]
# REFERENCE_METHOD (dpkd_bench.methods): paired tests compare every other method with it,
# when it ran.
TEACHER = "teacher"  # with REFERENCE_METHOD, bounds the gap that "gap recovered" measures
PRIMARY = SCORE_KEYS[0]  # the score the gap-closed tables show


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


def leaderboard(run: RunDir | RunView) -> pd.DataFrame:
    """One row per (method, eval_set): reference rows first, then the manifest's methods
    (the leaderboard's score columns, before its statistics)."""
    return aggregate(seed_scores(run if isinstance(run, RunView) else load_run(run)))


def _example_rows(method: str, seed: int, records: list[dict]) -> list[dict]:
    rows = []
    for index, record in enumerate(records):
        if all(isinstance(record.get(key), (int, float)) for key in SCORE_KEYS):
            example_id = str(record.get("id", index))
            rows.append(
                {"method": method, "seed": seed, "eval_set": record["eval_set"], "id": example_id}
            )
            rows[-1].update({key: float(record[key]) for key in SCORE_KEYS})
    return rows


def example_scores(view: RunView) -> pd.DataFrame:
    """Per-example scores of every finished unit, from its scores.csv.gz (or, in runs made
    before that file, its generations/<eval_set>.jsonl).

    Columns: method, seed, eval_set, id, rougeL, exact_match (each already the mean over
    generation seeds). Records without numeric scores are skipped; missing files give no rows.
    """
    rows = [
        row
        for method, seed in view.units
        for row in _example_rows(
            method, seed, unit_example_scores(view.run.unit_dir(method, seed), view.eval_sets)
        )
    ]
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)


def reference_method(board: pd.DataFrame) -> str | None:
    """The method the paired tests compare against: REFERENCE_METHOD when it was scored, else
    None."""
    return REFERENCE_METHOD if REFERENCE_METHOD in set(board["method"]) else None


def ranked_methods(board: pd.DataFrame) -> list[str]:
    """The methods that get ranks and tiers: every trained one (not the reference rows)."""
    return [m for m in dict.fromkeys(board["method"]) if m not in REFERENCE_ROWS]


def with_statistics(
    board: pd.DataFrame, examples: pd.DataFrame, settings: StatsSettings | None = None
) -> pd.DataFrame:
    """The leaderboard with two-level intervals, tests against the reference (raw and
    corrected p-values), rank intervals and tiers appended (NaN or "" where none apply)."""
    statistics = example_statistics(
        examples, SCORE_KEYS, reference_method(board), ranked_methods(board), settings
    )
    merged = board.merge(statistics, on=["method", "eval_set"], how="left", sort=False)
    for column in ("reference", *(f"{k}_{end}" for k in SCORE_KEYS for end in ("test", "tier"))):
        merged[column] = blank(merged[column])
    merged["n_examples"] = merged["n_examples"].astype("Int64")
    return merged[[*LEADERBOARD_COLUMNS, *STATISTICS_COLUMNS]]


def bound_means(board: pd.DataFrame, method: str, key: str) -> pd.Series:
    """Each row's eval-set mean ``key`` score of ``method`` (NaN where it has none)."""
    means = board[board["method"] == method].set_index("eval_set")[f"{key}_mean"]
    return board["eval_set"].map(means).astype(float)


def with_gap_recovered(
    board: pd.DataFrame, examples: pd.DataFrame, n_resamples: int = N_RESAMPLES
) -> pd.DataFrame:
    """The board with GAP_COLUMNS appended: (mean - reference mean) / (teacher mean - reference
    mean) per score, with REFERENCE_METHOD as the reference, and its bootstrap interval over
    examples; NaN where the reference or the teacher has no score on the eval set or the two
    are equal."""
    intervals = gap_statistics(examples, SCORE_KEYS, REFERENCE_METHOD, TEACHER, n_resamples)
    merged = board.merge(intervals, on=["method", "eval_set"], how="left", sort=False)
    for key in SCORE_KEYS:
        bounds = (bound_means(merged, name, key) for name in (REFERENCE_METHOD, TEACHER))
        merged[f"{key}_gap_recovered"] = gap_recovered(merged[f"{key}_mean"], *bounds)
    return merged[[*board.columns, *GAP_COLUMNS]]
