"""Statistics for the leaderboard: spread over training seeds, intervals and paired tests.

Pure functions over numbers and tables (numpy, pandas); no file I/O and no models.

* **Spread over training seeds**: mean and *sample* standard deviation (ddof=1). With one seed
  the std is undefined: it is NaN here, written "n/a" in text tables and left empty in CSV,
  never 0.
* **95% bootstrap interval over examples** (:func:`bootstrap_ci`): percentile interval of the
  mean score, resampling examples with replacement ``n_resamples`` times (default 1,000) from a
  fixed seed, so that a report renders the same bytes every time. With several training
  seeds, each example's score is first averaged over the seeds (:func:`example_means`), so the
  interval is over examples of the seed-averaged model, not over (seed, example) pairs.
* **Paired test against a reference method** (:func:`paired_permutation_test`): a two-sided
  paired sign-flip permutation test (approximate randomisation) on the per-example differences
  ``method - reference`` over the examples both were scored on. Under the null hypothesis the
  sign of each difference is exchangeable; the p-value is
  ``(1 + #{resamples with |mean of sign-flipped differences| >= |observed mean|}) /
  (1 + n_resamples)``, so it is never 0, and it is exactly 1 when the two methods score every
  example the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

N_RESAMPLES = 1000
CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the table markers
SEED = 0
NOT_AVAILABLE = "n/a"
_TIE = 1e-9  # |statistic| within this of the observed one counts as "as extreme"


# ---- spread over training seeds ------------------------------------------------------------
def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1); NaN for fewer than two values, never 0."""
    array = np.asarray(values, dtype=float)
    return float(array.std(ddof=1)) if array.size >= 2 else math.nan


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"28.00 ± 2.83"``; a NaN std (one seed) is written ``"n/a"``."""
    spread = NOT_AVAILABLE if math.isnan(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread}"


def format_interval(low: float, high: float, digits: int = 1) -> str:
    """``"[25.1, 30.9]"``; ``"n/a"`` when the interval is unknown (NaN)."""
    if math.isnan(low) or math.isnan(high):
        return NOT_AVAILABLE
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


# ---- per-example scores --------------------------------------------------------------------
def example_means(scores: pd.DataFrame, key: str) -> pd.Series:
    """Each example's ``key`` score averaged over training seeds.

    ``scores`` has one row per (seed, example) with columns ``id`` and ``key``; returns a
    Series indexed by example id, in order of first appearance.
    """
    return scores.groupby("id", sort=False)[key].mean()


def bootstrap_ci(
    values: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values).

    Returns (NaN, NaN) for no values; a constant sample gives a zero-width interval.
    """
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, array.size, size=(n_resamples, array.size))
    means = array[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_permutation_test(
    scores: Sequence[float],
    reference: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> float:
    """Two-sided p-value of a paired sign-flip permutation test on ``scores - reference``.

    ``scores[i]`` and ``reference[i]`` belong to the same example. Different lengths raise
    ``ValueError``; no pairs give NaN.
    """
    a, b = np.asarray(scores, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"paired test needs one reference score per example: {a.size} scores but "
            f"{b.size} reference scores"
        )
    if a.size == 0:
        return math.nan
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    diffs = a - b
    observed = abs(diffs.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, diffs.size))
    flipped = np.abs((signs * diffs).mean(axis=1))
    extreme = int((flipped >= observed - _TIE).sum())
    return (1 + extreme) / (1 + n_resamples)


def is_significant(p_value: float, alpha: float = ALPHA) -> bool:
    """True for a p-value below ``alpha``; NaN (no test) is never significant."""
    return not math.isnan(p_value) and p_value < alpha


# ---- one table of intervals and tests ------------------------------------------------------
def pair_with_reference(method: pd.Series, reference: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the examples (ids) both Series hold, aligned by id."""
    common = method.index.intersection(reference.index, sort=False)
    return method.loc[common].to_numpy(float), reference.loc[common].to_numpy(float)


def group_statistics(
    group: pd.DataFrame,
    reference: pd.DataFrame | None,
    keys: Sequence[str],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict:
    """Intervals (and p-values against ``reference``, if given) of one (method, eval set).

    ``group`` and ``reference`` hold one row per (seed, example): columns id and ``keys``.
    """
    row: dict = {"n_examples": group["id"].nunique()}
    for key in keys:
        means = example_means(group, key).to_numpy(float)
        low, high = bootstrap_ci(means, n_resamples, seed=seed)
        row[f"{key}_ci_low"], row[f"{key}_ci_high"] = low, high
    for key in keys:
        p_value = math.nan
        if reference is not None:
            pairs = pair_with_reference(example_means(group, key), example_means(reference, key))
            p_value = paired_permutation_test(*pairs, n_resamples=n_resamples, seed=seed)
        row[f"{key}_p_vs_reference"] = p_value
    return row


def example_statistics(
    examples: pd.DataFrame,
    keys: Sequence[str],
    reference: str | None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Bootstrap intervals and paired p-values per (method, eval_set).

    ``examples`` has one row per (method, seed, eval_set, example): columns method, seed,
    eval_set, id and every name in ``keys``. Returns the columns of :func:`statistics_columns`:
    method, eval_set, n_examples, ``<key>_ci_low``, ``<key>_ci_high`` per key, ``reference``
    (the method tested against, "" when untested) and ``<key>_p_vs_reference`` (NaN for the
    reference itself, or when the reference has no scores on that eval set).
    """
    rows = []
    for (method, eval_set), group in examples.groupby(["method", "eval_set"], sort=False):
        same_set = examples[(examples["method"] == reference) & (examples["eval_set"] == eval_set)]
        tested = method != reference and not same_set.empty
        stats = group_statistics(group, same_set if tested else None, keys, n_resamples, seed)
        rows.append(
            {
                "method": method,
                "eval_set": eval_set,
                "reference": reference if tested else "",
                **stats,
            }
        )
    return pd.DataFrame(rows, columns=statistics_columns(keys))


def statistics_columns(keys: Sequence[str]) -> list[str]:
    """Column order of :func:`example_statistics`."""
    intervals = [f"{key}_ci_{end}" for key in keys for end in ("low", "high")]
    tests = [f"{key}_p_vs_reference" for key in keys]
    return ["method", "eval_set", "n_examples", *intervals, "reference", *tests]
