"""Uncertainty of means and of ranks over training seeds and examples, and tiers of methods
that the tests cannot tell apart.

**Two-level bootstrap** (:func:`two_level_means`). Each resample draws the examples with
replacement (the same draw for every method: they were scored on the same examples) and, for
each method independently, its training seeds with replacement; a method's resampled mean is
the mean over the drawn seeds of its mean over the drawn examples. A method with one seed
resamples examples only. With three seeds the seed draw has only ten distinct outcomes and
under-states the seed variance by a third (a bootstrap's ``(S - 1) / S``): the intervals are
the optimistic side of the truth; the tests (:mod:`dpkd_bench.stats.significance`) are the
conservative side.

**Rank intervals** (:func:`rank_intervals`): each method's rank (1 = best) in every resample;
the interval is the central 95% of those ranks.

**Tiers** (:func:`letter_display`): a compact letter display (Piepho 2004, insert-absorb).
Methods that share a letter are not separated by the corrected pairwise tests; letter ``a`` is
the group holding the best mean. A method can carry several letters (it is tied with two
groups that differ from each other).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd


def two_level_means(
    matrices: Mapping[str, np.ndarray], n_resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Each method's resampled grand means ``[n_resamples]`` (module doc).

    ``matrices``: method -> ``[S, n]`` scores, every matrix with the same ``n`` examples in the
    same order.
    """
    sizes = {m.shape[1] for m in matrices.values()}
    if len(sizes) > 1:
        raise ValueError(f"every method needs the same examples; got counts {sorted(sizes)}")
    if not matrices:
        return {}
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    examples = rng.integers(0, n, size=(n_resamples, n))
    means = {}
    for method, matrix in matrices.items():
        per_seed = matrix[:, examples].mean(axis=2)  # [S, B]: each seed over the drawn examples
        picks = rng.integers(0, matrix.shape[0], size=(n_resamples, matrix.shape[0]))
        means[method] = per_seed[picks, np.arange(n_resamples)[:, None]].mean(axis=1)
    return means


def rank_intervals(
    observed: Mapping[str, float], resampled: Mapping[str, np.ndarray], confidence: float = 0.95
) -> pd.DataFrame:
    """Rank of every method's observed mean (1 = best; ties share the better rank) and the
    central ``confidence`` interval of its ranks over the resamples.

    Columns: method, rank, rank_low, rank_high (integers), in the order of ``observed``.
    """
    methods = list(observed)
    if not methods:
        return pd.DataFrame(columns=["method", "rank", "rank_low", "rank_high"])
    point = _ranks(np.array([[observed[m] for m in methods]]))[0]
    ranks = _ranks(np.stack([resampled[m] for m in methods], axis=1))  # [B, methods]
    tail = (1 - confidence) / 2
    low = np.quantile(ranks, tail, axis=0, method="lower")
    high = np.quantile(ranks, 1 - tail, axis=0, method="higher")
    return pd.DataFrame(
        {"method": methods, "rank": point, "rank_low": low.astype(int), "rank_high": high}
    ).astype({"rank": int, "rank_high": int})


def _ranks(values: np.ndarray) -> np.ndarray:
    """Per row, 1 + the number of entries strictly greater (higher is better)."""
    return 1 + (values[:, None, :] > values[:, :, None]).sum(axis=2)


def letter_display(
    means: Mapping[str, float], different: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Compact letter display of ``means`` (method -> mean) given the pairs of methods that
    the tests separate; method -> its letters ("a" = the group holding the best mean)."""
    methods = list(means)
    if not methods:
        return {}
    groups: list[set[str]] = [set(methods)]
    for first, second in different:
        split = []
        for group in groups:
            if first in group and second in group:
                split += [group - {first}, group - {second}]
            else:
                split.append(group)
        groups = _absorb(split)
    groups.sort(key=lambda g: (-max(means[m] for m in g), sorted(g)))
    letters = _letters(len(groups))
    return {m: "".join(letters[i] for i, g in enumerate(groups) if m in g) for m in methods}


def _absorb(groups: list[set[str]]) -> list[set[str]]:
    """Drop empty groups, repeats, and groups that another group contains."""
    unique = []
    for group in groups:
        if group and group not in unique:
            unique.append(group)
    return [g for g in unique if not any(g < other for other in unique)]


def _letters(count: int) -> list[str]:
    """a, b, ..., z, then aa, ab, ... (never more than a table has methods)."""
    alphabet = string.ascii_lowercase
    return [
        alphabet[i] if i < 26 else alphabet[i // 26 - 1] + alphabet[i % 26] for i in range(count)
    ]


def top_tier(letters: Mapping[str, str]) -> list[str]:
    """The methods carrying letter "a"."""
    return [m for m, code in letters.items() if "a" in code]
