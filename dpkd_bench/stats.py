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
* **Gap recovered** (:func:`gap_recovered`, :func:`gap_recovered_ci`): the share of the
  ``ceiling - floor`` gap (teacher minus sft) a method closes, ``(method - floor) / (ceiling -
  floor)`` on mean scores: 1 reaches the ceiling, 0 is no better than the floor, negative is
  worse. NaN when the gap is zero, never inf. Its interval is the same percentile bootstrap,
  resampling examples jointly for the three (paired on the examples all three were scored on,
  seed-averaged first); it is NaN when some resample's gap is zero or of the other sign, where
  the ratio is unbounded.
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
_ZERO_GAP = 1e-9  # a ceiling - floor gap this small counts as no gap


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
    picks = resample_indices(array.size, n_resamples, confidence, seed)
    return percentile_interval(array[picks].mean(axis=1), confidence)


def resample_indices(n: int, n_resamples: int, confidence: float, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` example indices drawn with replacement from a fixed seed.

    Index the per-example score arrays of several methods with the same result to resample
    examples jointly (paired).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of a statistic's resampled values."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(statistics, [tail, 1 - tail])
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


# ---- gap recovered -------------------------------------------------------------------------
def gap_recovered(score, floor, ceiling) -> np.ndarray:
    """``(score - floor) / (ceiling - floor)``, elementwise on numbers or arrays of mean scores.

    NaN where the gap ``ceiling - floor`` is zero (within 1e-9) or any input is NaN; never inf.
    """
    score, floor, ceiling = (np.asarray(v, dtype=float) for v in (score, floor, ceiling))
    gap = ceiling - floor
    defined = np.abs(gap) > _ZERO_GAP  # False for NaN too
    return np.where(defined, (score - floor) / np.where(defined, gap, 1.0), math.nan)


def gap_recovered_ci(
    scores: Sequence[float],
    floor: Sequence[float],
    ceiling: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`gap_recovered` of the three means.

    ``scores[i]``, ``floor[i]`` and ``ceiling[i]`` belong to the same example; each resample
    draws the same examples for the three. (NaN, NaN) for no examples, for a zero observed gap,
    and when some resample's gap is zero or of the other sign than the observed one (the
    ratio is unbounded there).
    """
    arrays = [np.asarray(v, dtype=float) for v in (scores, floor, ceiling)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(
            "gap recovered needs one floor and one ceiling score per example: "
            + ", ".join(str(a.size) for a in arrays)
            + " scores, floor and ceiling scores"
        )
    if arrays[0].size == 0:
        return math.nan, math.nan
    observed = arrays[2].mean() - arrays[1].mean()
    if abs(observed) <= _ZERO_GAP:
        return math.nan, math.nan
    picks = resample_indices(arrays[0].size, n_resamples, confidence, seed)
    means = [a[picks].mean(axis=1) for a in arrays]
    if np.any((means[2] - means[1]) * np.sign(observed) <= _ZERO_GAP):
        return math.nan, math.nan
    return percentile_interval(gap_recovered(*means), confidence)


# ---- one table of intervals and tests ------------------------------------------------------
def align_examples(*series: pd.Series) -> list[np.ndarray]:
    """Scores of the examples (ids) every Series holds, aligned by id (first one's order)."""
    common = series[0].index
    for other in series[1:]:
        common = common.intersection(other.index, sort=False)
    return [s.loc[common].to_numpy(float) for s in series]


def pair_with_reference(method: pd.Series, reference: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the examples (ids) both Series hold, aligned by id."""
    scores, reference_scores = align_examples(method, reference)
    return scores, reference_scores


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


def gap_columns(keys: Sequence[str]) -> list[str]:
    """``<key>_gap_recovered``, ``..._lo``, ``..._hi`` per key (leaderboard order)."""
    return [f"{key}_gap_recovered{end}" for key in keys for end in ("", "_lo", "_hi")]


def gap_statistics(
    examples: pd.DataFrame,
    keys: Sequence[str],
    floor: str,
    ceiling: str,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Bootstrap intervals of the gap recovered per (method, eval_set).

    ``examples`` as for :func:`example_statistics`; ``floor`` and ``ceiling`` name the methods
    whose scores bound the gap (sft and teacher). Returns method, eval_set and
    ``<key>_gap_recovered_lo``/``_hi`` per key: NaN where either bound has no scores on that
    eval set (see :func:`gap_recovered_ci` for the other NaN cases).
    """
    columns = ["method", "eval_set", *(c for c in gap_columns(keys) if c.endswith(("lo", "hi")))]
    rows = []
    for (method, eval_set), group in examples.groupby(["method", "eval_set"], sort=False):
        same_set = examples[examples["eval_set"] == eval_set]
        bounds = [same_set[same_set["method"] == name] for name in (floor, ceiling)]
        row = {"method": method, "eval_set": eval_set}
        for key in keys:
            aligned = align_examples(*(example_means(g, key) for g in (group, *bounds)))
            interval = gap_recovered_ci(*aligned, n_resamples=n_resamples, seed=seed)
            row[f"{key}_gap_recovered_lo"], row[f"{key}_gap_recovered_hi"] = interval
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
