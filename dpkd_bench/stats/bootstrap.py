"""Spread over training seeds, bootstrap intervals over examples, the paired permutation test
and the gap recovered.

Pure functions over numbers and tables (numpy, pandas); no file I/O and no models.

* **Spread over training seeds**: mean and *sample* standard deviation (ddof=1). With one seed
  the std is undefined: it is NaN here, written "n/a" in text tables and left empty in CSV,
  never 0.
* **95% bootstrap interval over examples** (:func:`bootstrap_ci`): percentile interval of the
  mean score, resampling examples with replacement ``n_resamples`` times (default 1,000) from a
  fixed seed, so that a report renders the same bytes every time. (The leaderboard's intervals
  resample training seeds too: :mod:`dpkd_bench.stats.ranks`.)
* **Paired sign-flip permutation test** (:func:`paired_permutation_test`) on per-example
  differences: ``(1 + #{resamples as extreme}) / (1 + n_resamples)``, so never below
  ``1 / (1 + n_resamples)``. It covers example noise only; the leaderboard uses
  :func:`dpkd_bench.stats.significance.two_level_test` instead.
* **Gap recovered** (:func:`gap_recovered`, :func:`gap_recovered_ci`): the share of the
  ``ceiling - floor`` gap (teacher minus sft) a method closes, ``(method - floor) / (ceiling -
  floor)`` on mean scores: 1 reaches the ceiling, 0 is no better than the floor, negative is
  worse. NaN when the gap is zero, never inf. :func:`gap_recovered_ci` is its percentile
  bootstrap over examples, resampled jointly for the three; the leaderboard's interval
  (:func:`dpkd_bench.stats.board.gap_statistics`) resamples training seeds too.
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


def gap_columns(keys: Sequence[str]) -> list[str]:
    """``<key>_gap_recovered``, ``..._lo``, ``..._hi`` per key (leaderboard order)."""
    return [f"{key}_gap_recovered{end}" for key in keys for end in ("", "_lo", "_hi")]
