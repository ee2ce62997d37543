"""Spread over seeds, bootstrap intervals and paired tests (dpkd_bench.stats)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dpkd_bench.stats import (
    bootstrap_ci,
    example_means,
    example_statistics,
    format_interval,
    format_mean_std,
    is_significant,
    paired_permutation_test,
    sample_std,
    statistics_columns,
)


def noisy(mean: float, n: int = 200, seed: int = 0, scale: float = 10.0) -> np.ndarray:
    return mean + np.random.default_rng(seed).normal(0.0, scale, n)


# ---- spread over training seeds ------------------------------------------------------------
def test_one_seed_has_no_std_and_shows_not_available():
    assert math.isnan(sample_std([42.0]))
    assert format_mean_std(42.0, sample_std([42.0])) == "42.00 ± n/a"
    assert sample_std([1.0, 3.0]) == pytest.approx(math.sqrt(2.0))  # ddof=1
    assert format_mean_std(2.0, sample_std([1.0, 3.0])) == "2.00 ± 1.41"
    assert format_mean_std(5.0, sample_std([5.0, 5.0])) == "5.00 ± 0.00"  # real zero stays 0


# ---- bootstrap interval --------------------------------------------------------------------
def test_interval_contains_the_mean_and_is_reproducible():
    values = noisy(30.0)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert high - low < 6.0  # about 4 standard errors of a 200-example mean with sd 10
    assert bootstrap_ci(values) == (low, high)
    assert bootstrap_ci(values, seed=1) != (low, high)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide[0] < low and wide[1] > high


def test_interval_edge_cases():
    assert bootstrap_ci([7.0] * 10) == (7.0, 7.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert format_interval(math.nan, 1.0) == "n/a"
    assert format_interval(1.04, 2.96) == "[1.0, 3.0]"
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


# ---- paired test ---------------------------------------------------------------------------
def test_identical_methods_do_not_differ():
    values = noisy(30.0)
    p_value = paired_permutation_test(values, values.copy())
    assert p_value == 1.0 and not is_significant(p_value)


def test_a_clearly_better_method_is_significant():
    reference = noisy(30.0, seed=1)
    better = reference + 5.0 + np.random.default_rng(2).normal(0.0, 2.0, reference.size)
    p_value = paired_permutation_test(better, reference)
    assert is_significant(p_value)
    assert p_value == pytest.approx(1 / 1001)  # no resample reaches it: the smallest p


def test_pure_noise_around_the_reference_is_not_significant():
    reference = noisy(30.0, seed=3)
    p_values = [
        paired_permutation_test(reference + np.random.default_rng(s).normal(0, 1, 200), reference)
        for s in range(10)
    ]
    assert sum(is_significant(p) for p in p_values) <= 2


def test_the_test_is_two_sided_and_pairs_must_match():
    reference = noisy(30.0, seed=4)
    worse = reference - 5.0
    assert is_significant(paired_permutation_test(worse, reference))
    assert paired_permutation_test(worse, reference) == paired_permutation_test(reference, worse)
    with pytest.raises(ValueError, match="one reference score per example"):
        paired_permutation_test([1.0, 2.0], [1.0])
    assert math.isnan(paired_permutation_test([], []))
    assert not is_significant(math.nan)


# ---- per (method, eval set) ----------------------------------------------------------------
def examples_frame(scores: dict[tuple[str, int], list[float]], eval_set: str = "e") -> pd.DataFrame:
    rows = [
        {"method": m, "seed": s, "eval_set": eval_set, "id": f"x{i}", "rougeL": v}
        for (m, s), values in scores.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_seeds_are_averaged_per_example_before_the_interval_and_the_test():
    base = list(noisy(20.0, n=40, seed=5))
    up, down = [v + 3.0 for v in base], [v - 3.0 for v in base]
    frame = examples_frame({("sft", 1): base, ("kd", 1): up, ("kd", 2): down})
    means = example_means(frame[frame["method"] == "kd"], "rougeL")
    assert list(means.index[:2]) == ["x0", "x1"]
    assert means.to_numpy() == pytest.approx(np.array(base))
    table = example_statistics(frame, ["rougeL"], "sft").set_index("method")
    assert list(table.reset_index().columns) == statistics_columns(["rougeL"])
    assert table.at["kd", "rougeL_p_vs_reference"] == 1.0  # seed-averaged: same as sft
    assert table.at["kd", "reference"] == "sft" and table.at["kd", "n_examples"] == 40
    assert table.at["kd", "rougeL_ci_low"] < np.mean(base) < table.at["kd", "rougeL_ci_high"]
    assert math.isnan(table.at["sft", "rougeL_p_vs_reference"])  # not tested against itself
    assert table.at["sft", "reference"] == ""


def test_no_reference_method_means_no_test():
    frame = examples_frame({("kd", 1): [1.0, 2.0, 3.0], ("dpkd", 1): [4.0, 5.0, 6.0]})
    for reference in (None, "sft"):
        table = example_statistics(frame, ["rougeL"], reference)
        assert table["rougeL_p_vs_reference"].isna().all()
        assert (table["reference"] == "").all()
        assert table["rougeL_ci_low"].notna().all()


def test_only_examples_scored_by_both_are_paired():
    frame = pd.concat(
        [
            examples_frame({("sft", 1): [10.0] * 30}),
            examples_frame({("kd", 1): [10.0] * 30 + [99.0]}).assign(
                id=[f"x{i}" for i in range(30)] + ["only-kd"]
            ),
        ]
    )
    table = example_statistics(frame, ["rougeL"], "sft").set_index("method")
    assert table.at["kd", "rougeL_p_vs_reference"] == 1.0
    assert table.at["kd", "n_examples"] == 31
