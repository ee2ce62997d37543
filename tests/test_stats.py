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
    gap_columns,
    gap_recovered,
    gap_recovered_ci,
    gap_statistics,
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


# ---- gap recovered -------------------------------------------------------------------------
def test_gap_recovered_is_the_share_of_the_gap_and_nan_without_one():
    assert gap_recovered(60.0, 40.0, 80.0) == 0.5
    assert gap_recovered(80.0, 40.0, 80.0) == 1.0 and gap_recovered(40.0, 40.0, 80.0) == 0.0
    assert gap_recovered(30.0, 40.0, 80.0) == -0.25  # worse than the floor
    assert math.isnan(gap_recovered(60.0, 40.0, 40.0))  # no gap: NaN, never inf
    assert math.isnan(gap_recovered(60.0, math.nan, 80.0))
    values = gap_recovered([60.0, 50.0, 1.0], [40.0, 40.0, 2.0], [80.0, 60.0, 2.0])
    assert values[:2] == pytest.approx([0.5, 0.5]) and math.isnan(values[2])


def gap_arrays(seed: int = 0, n: int = 200, gap: float = 40.0, noise: float = 3.0):
    """floor, method (halfway), ceiling sharing each example's difficulty (sd 10)."""
    rng = np.random.default_rng(seed)
    floor = 40.0 + rng.normal(0.0, 10.0, n)
    ceiling = floor + gap + rng.normal(0.0, noise, n)
    method = floor + gap / 2 + rng.normal(0.0, noise, n)
    return method, floor, ceiling


def test_gap_interval_contains_the_estimate_and_is_paired():
    method, floor, ceiling = gap_arrays(noise=1.0)
    point = float(gap_recovered(method.mean(), floor.mean(), ceiling.mean()))
    low, high = gap_recovered_ci(method, floor, ceiling)
    assert low < point < high
    # examples resampled jointly: the shared difficulty (sd 10) cancels, only the noise is left
    assert high - low < 0.02
    assert gap_recovered_ci(method, floor, ceiling) == (low, high)  # fixed seed
    shuffled = np.random.default_rng(1).permutation(ceiling)  # pairs broken: much wider
    wide = gap_recovered_ci(method, floor, shuffled)
    assert wide[1] - wide[0] > 3 * (high - low)
    assert gap_recovered_ci(ceiling, floor, ceiling) == (1.0, 1.0)
    assert gap_recovered_ci(floor, floor, ceiling) == (0.0, 0.0)


def test_gap_interval_is_nan_when_the_gap_is_not_bounded_away_from_zero():
    method, floor, _ = gap_arrays()
    assert all(math.isnan(v) for v in gap_recovered_ci(method, floor, floor))  # no gap
    _, floor, ceiling = gap_arrays(gap=0.2, noise=10.0)  # resampled gaps change sign
    assert all(math.isnan(v) for v in gap_recovered_ci(floor + 0.1, floor, ceiling))
    assert all(math.isnan(v) for v in gap_recovered_ci([], [], []))
    with pytest.raises(ValueError, match="one floor and one ceiling score per example"):
        gap_recovered_ci([1.0, 2.0], [1.0, 2.0], [3.0])


def test_gap_statistics_pair_the_examples_all_three_scored():
    method, floor, ceiling = gap_arrays(n=60)
    frame = examples_frame(
        {("sft", 1): list(floor), ("teacher", 1): list(ceiling), ("kd", 1): list(method)}
    )
    extra = examples_frame({("kd", 1): [500.0]}).assign(id="only-kd")  # unpaired: left out
    table = gap_statistics(pd.concat([frame, extra]), ["rougeL"], "sft", "teacher")
    assert list(table.columns) == ["method", "eval_set", "rougeL_gap_recovered_lo"] + [
        "rougeL_gap_recovered_hi"
    ]
    table = table.set_index("method")
    # one seed each: the two-level bootstrap resamples examples only, as gap_recovered_ci does
    # (other draws of the same scheme: the bounds agree to sampling error)
    low, high = gap_recovered_ci(method, floor, ceiling)
    assert table.at["kd", "rougeL_gap_recovered_lo"] == pytest.approx(low, abs=0.05)
    assert table.at["kd", "rougeL_gap_recovered_hi"] == pytest.approx(high, abs=0.05)
    assert table.at["teacher", "rougeL_gap_recovered_hi"] == 1.0
    without_teacher = gap_statistics(
        frame[frame["method"] != "teacher"], ["rougeL"], "sft", "teacher"
    )
    assert (
        without_teacher[["rougeL_gap_recovered_lo", "rougeL_gap_recovered_hi"]].isna().all().all()
    )
    assert gap_columns(["rougeL"]) == [
        "rougeL_gap_recovered",
        "rougeL_gap_recovered_lo",
        "rougeL_gap_recovered_hi",
    ]
