"""The statistics of one leaderboard: per (method, eval set) a two-level bootstrap interval,
the test against the reference method with its p-value raw and corrected across the
leaderboard's family, and per (eval set, score) each ranked method's rank interval and tier.

The family of the tests against the reference is every (method, eval set, score) the
leaderboard tests: one correction over all of them. The tiers of one (eval set, score) come
from the pairwise tests of its ranked methods, corrected within that column.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dpkd_bench.config import require
from dpkd_bench.stats.bootstrap import (
    _ZERO_GAP,
    ALPHA,
    CONFIDENCE,
    N_RESAMPLES,
    SEED,
    gap_columns,
    gap_recovered,
    percentile_interval,
)
from dpkd_bench.stats.ranks import letter_display, rank_intervals, two_level_means
from dpkd_bench.stats.significance import CORRECTIONS, adjust, two_level_test


@dataclass
class StatsSettings:
    """How a leaderboard tests (the recipe's ``stats`` section; the report reads it from the
    run's manifest)."""

    correction: str = "holm"  # holm | bh | none, across the leaderboard's family of tests
    alpha: float = ALPHA  # level of the markers and of the tiers, after correction
    n_resamples: int = N_RESAMPLES  # of the two-level bootstrap (intervals, ranks)

    def __post_init__(self):
        require(self.correction in CORRECTIONS, "correction", f"must be one of {CORRECTIONS}")
        require(0 < self.alpha < 1, "alpha", "must be in (0, 1)")
        require(self.n_resamples >= 100, "n_resamples", "must be >= 100")

    @classmethod
    def from_recipe(cls, recipe: dict | None) -> StatsSettings:
        """The settings of a manifest's recipe; the defaults when it has none (older runs)."""
        section = (recipe or {}).get("stats") if isinstance(recipe, dict) else None
        return cls(**section) if isinstance(section, dict) else cls()


def key_columns(key: str) -> dict[str, list[str]]:
    """The columns one score adds: its interval, its test, its rank and tier."""
    return {
        "interval": [f"{key}_ci_low", f"{key}_ci_high"],
        "test": [f"{key}_p_vs_reference", f"{key}_p_adjusted", f"{key}_test"],
        "rank": [f"{key}_rank", f"{key}_rank_low", f"{key}_rank_high", f"{key}_tier"],
    }


def statistics_columns(keys: Sequence[str]) -> list[str]:
    """Column order of :func:`example_statistics`."""
    columns = ["method", "eval_set", "n_examples"]
    columns += [c for key in keys for c in key_columns(key)["interval"]]
    columns += ["reference"]
    columns += [c for key in keys for c in key_columns(key)["test"]]
    return columns + [c for key in keys for c in key_columns(key)["rank"]]


def seed_matrices(group: pd.DataFrame, key: str) -> tuple[pd.Index, np.ndarray]:
    """Example ids (first-appearance order, those every seed scored) and ``[S, n]`` scores,
    one row per seed in ascending order (the seeds with scores)."""
    ids = pd.Index(pd.unique(group["id"]))
    wide = group.pivot_table(index="seed", columns="id", values=key, aggfunc="mean")
    wide = wide.reindex(columns=ids).dropna(axis=1)
    return wide.columns, wide.to_numpy(float)


def scored_seeds(group: pd.DataFrame, key: str) -> list:
    """The seeds that have ``key`` scores, ascending (the rows of :func:`seed_matrices`)."""
    return sorted(set(group.loc[group[key].notna(), "seed"]))


Shaped = tuple[pd.Index, np.ndarray, list]  # a method's example ids, [S, n] scores, seeds


def shaped(group: pd.DataFrame, key: str) -> Shaped:
    """A method's example ids, ``[S, n]`` scores (:func:`seed_matrices`) and seeds: shaped once
    per (eval set, score) for all the tests, intervals and tiers that read them."""
    return (*seed_matrices(group, key), scored_seeds(group, key))


def compare(method: Shaped, reference: Shaped):
    """:func:`two_level_test` of ``method`` against ``reference`` (each :func:`shaped`) on the
    examples both hold; seeds paired when both ran the same two seeds or more."""
    ids_a, a, seeds_a = method
    ids_b, b, seeds_b = reference
    common = ids_a.intersection(ids_b, sort=False)
    a = a[:, ids_a.get_indexer(common)]
    b = b[:, ids_b.get_indexer(common)]
    return two_level_test(a, b, paired_seeds=seeds_a == seeds_b)


def common_matrices(groups: dict[str, pd.DataFrame], key: str) -> dict[str, np.ndarray]:
    """One (eval set, score): every method's ``[S, n]`` scores on the examples all hold."""
    return common_of({m: shaped(g, key) for m, g in groups.items()})


def common_of(shapes: dict[str, Shaped]) -> dict[str, np.ndarray]:
    """:func:`common_matrices` of methods already :func:`shaped`."""
    common = None
    for ids, _, _ in shapes.values():
        common = ids if common is None else common.intersection(ids, sort=False)
    return {m: s[:, ids.get_indexer(common)] for m, (ids, s, _) in shapes.items()}


def column_statistics(
    shapes: dict[str, Shaped],
    key: str,
    ranked: list[str],
    settings: StatsSettings,
    seed: int,
) -> dict[str, dict]:
    """Interval, rank interval and tier of every method of one (eval set, score), its methods
    :func:`shaped`."""
    matrices = common_of(shapes)
    out: dict[str, dict] = {m: {} for m in shapes}
    if not matrices or next(iter(matrices.values())).shape[1] < 2:
        return out  # no examples every method holds: no intervals, ranks or tiers
    resampled = two_level_means(matrices, settings.n_resamples, seed)
    for method, means in resampled.items():
        low, high = percentile_interval(means, CONFIDENCE)
        out[method] = {f"{key}_ci_low": low, f"{key}_ci_high": high}
    ranked = [m for m in ranked if m in matrices]
    observed = {m: float(matrices[m].mean()) for m in ranked}
    ranks = rank_intervals(observed, {m: resampled[m] for m in ranked}, CONFIDENCE)
    for row in ranks.itertuples(index=False):
        out[row.method].update(
            {
                f"{key}_rank": row.rank,
                f"{key}_rank_low": row.rank_low,
                f"{key}_rank_high": row.rank_high,
            }
        )
    for method, letters in tiers(shapes, observed, settings).items():
        out[method][f"{key}_tier"] = letters
    return out


def tiers(
    shapes: dict[str, Shaped], observed: dict[str, float], settings: StatsSettings
) -> dict[str, str]:
    """Letters of the ranked methods: pairwise tests, corrected within the column."""
    pairs = list(itertools.combinations(observed, 2))
    p_values = [compare(shapes[a], shapes[b]).p_value for a, b in pairs]
    adjusted = adjust(p_values, settings.correction)
    different = [pair for pair, p in zip(pairs, adjusted, strict=True) if p < settings.alpha]
    return letter_display(observed, different)


def blank(column: pd.Series) -> pd.Series:
    """A text column with "" where values are missing (whatever dtype it had)."""
    return column.astype(object).where(column.notna(), "")


def example_statistics(
    examples: pd.DataFrame,
    keys: Sequence[str],
    reference: str | None,
    ranked: Sequence[str] | None = None,
    settings: StatsSettings | None = None,
    seed: int = SEED,
) -> pd.DataFrame:
    """Intervals, tests, ranks and tiers per (method, eval_set).

    ``examples`` has one row per (method, seed, eval_set, example): columns method, seed,
    eval_set, id and every name in ``keys``. ``reference``: the method every other is tested
    against (None: no tests). ``ranked``: the methods that get ranks and tiers (the others,
    e.g. the teacher, get intervals and tests only; None: all). Returns the columns of
    :func:`statistics_columns`; NaN or "" where a value does not apply.
    """
    settings = settings or StatsSettings()
    if examples.empty:
        return pd.DataFrame(columns=statistics_columns(keys))
    rows: dict[tuple[str, str], dict] = {}
    for eval_set, in_set in examples.groupby("eval_set", sort=False):
        groups = {m: g for m, g in in_set.groupby("method", sort=False)}
        chosen = list(groups) if ranked is None else [m for m in ranked if m in groups]
        shapes = {key: {m: shaped(g, key) for m, g in groups.items()} for key in keys}
        for method, group in groups.items():
            tested = reference in groups and method != reference
            row = {"method": method, "eval_set": eval_set, "n_examples": group["id"].nunique()}
            row["reference"] = reference if tested else ""
            for key in keys:
                by_method = shapes[key]
                result = compare(by_method[method], by_method[reference]) if tested else None
                row[f"{key}_p_vs_reference"] = result.p_value if result else np.nan
                row[f"{key}_test"] = result.how if result else ""
            rows[(method, eval_set)] = row
        for key in keys:
            for method, values in column_statistics(
                shapes[key], key, chosen, settings, seed
            ).items():
                rows[(method, eval_set)].update(values)
    table = pd.DataFrame(list(rows.values())).reindex(columns=statistics_columns(keys))
    family = [f"{key}_p_vs_reference" for key in keys]
    adjusted = adjust(table[family].to_numpy(float).ravel(), settings.correction)
    table[[f"{key}_p_adjusted" for key in keys]] = adjusted.reshape(len(table), len(keys))
    for key in keys:
        for column in (f"{key}_tier", f"{key}_test"):
            table[column] = blank(table[column])
        for end in ("", "_low", "_high"):
            table[f"{key}_rank{end}"] = table[f"{key}_rank{end}"].astype("Int64")
    return table


def gap_statistics(
    examples: pd.DataFrame,
    keys: Sequence[str],
    floor: str,
    ceiling: str,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Two-level bootstrap intervals of the gap recovered per (method, eval_set).

    ``examples`` as for :func:`example_statistics`; ``floor`` and ``ceiling`` name the methods
    whose scores bound the gap (sft and teacher). Each resample draws the examples once for
    every method and each method's seeds (:func:`two_level_means`); the interval is the
    central 95% of ``gap_recovered`` of the resampled means. NaN where either bound has no
    scores on that eval set, and where some resample's gap is zero or of the other sign than
    the observed one (the ratio is unbounded there).
    """
    columns = ["method", "eval_set", *(c for c in gap_columns(keys) if c.endswith(("lo", "hi")))]
    if examples.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for eval_set, in_set in examples.groupby("eval_set", sort=False):
        groups = {m: g for m, g in in_set.groupby("method", sort=False)}
        intervals = {m: {"method": m, "eval_set": eval_set} for m in groups}
        for key in keys:
            found = gap_intervals(groups, key, floor, ceiling, n_resamples, seed)
            for method, (low, high) in found.items():
                intervals[method][f"{key}_gap_recovered_lo"] = low
                intervals[method][f"{key}_gap_recovered_hi"] = high
        rows += intervals.values()
    return pd.DataFrame(rows).reindex(columns=columns)


def gap_intervals(
    groups: dict[str, pd.DataFrame], key: str, floor: str, ceiling: str, n: int, seed: int
) -> dict[str, tuple[float, float]]:
    """(low, high) of every method's gap recovered on one (eval set, score); NaN when
    undefined (module doc of :func:`gap_statistics`)."""
    undefined = (np.nan, np.nan)
    if floor not in groups or ceiling not in groups:
        return dict.fromkeys(groups, undefined)
    matrices = common_matrices(groups, key)
    if next(iter(matrices.values())).shape[1] == 0:
        return dict.fromkeys(groups, undefined)
    observed = matrices[ceiling].mean() - matrices[floor].mean()
    if abs(observed) <= _ZERO_GAP:
        return dict.fromkeys(groups, undefined)
    means = two_level_means(matrices, n, seed)
    gaps = means[ceiling] - means[floor]
    if np.any(gaps * np.sign(observed) <= _ZERO_GAP):
        return dict.fromkeys(groups, undefined)
    return {
        method: percentile_interval(
            gap_recovered(means[method], means[floor], means[ceiling]), CONFIDENCE
        )
        for method in groups
    }
