"""The leaderboard's statistics: the two-level test over seeds and examples, corrections for
multiple comparisons, rank intervals and tiers, and how the tables show them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dpkd_bench.report import render
from dpkd_bench.stats import (
    StatsSettings,
    adjust,
    example_statistics,
    letter_display,
    paired_permutation_test,
    rank_intervals,
    two_level_means,
    two_level_test,
)
from dpkd_bench.stats.significance import EXAMPLES_ONLY, SEEDS_PAIRED, SEEDS_UNPAIRED


def scores(mean: float, seed_sd: float, n: int = 200, seeds: int = 3, rng=None, shared=None):
    """[seeds, n] scores: example effects (``shared``, the same for every method), a shift per
    seed and noise."""
    rng = rng or np.random.default_rng(0)
    examples = shared if shared is not None else rng.normal(0, 10, n)
    return mean + examples + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, 5, (seeds, n))


# ---- the test ------------------------------------------------------------------------------
def test_one_seed_is_the_paired_t_test_over_examples_and_says_so():
    rng = np.random.default_rng(1)
    a, b = rng.normal(50, 10, 300), rng.normal(49, 10, 300)
    result = two_level_test(a[None], b[None])
    reference = scipy_stats.ttest_rel(a, b)
    assert result.how == EXAMPLES_ONLY
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.df == pytest.approx(299)


def test_paired_seeds_use_the_per_seed_and_per_example_differences():
    rng = np.random.default_rng(2)
    a, b = rng.normal(50, 10, (3, 100)), rng.normal(48, 10, (3, 100))
    result = two_level_test(a, b, paired_seeds=True)
    d = a - b
    v_ex, v_seed = d.mean(0).var(ddof=1) / 100, d.mean(1).var(ddof=1) / 3
    df = (v_ex + v_seed) ** 2 / (v_ex**2 / 99 + v_seed**2 / 2)
    t = d.mean() / math.sqrt(v_ex + v_seed)
    assert result.how == SEEDS_PAIRED
    assert result.df == pytest.approx(df)
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    unpaired = two_level_test(a, b[:2])  # other seeds: each side's seed means
    assert unpaired.how == SEEDS_UNPAIRED


def test_seed_noise_makes_the_examples_only_test_overconfident_and_not_this_one():
    """Under the null (same method, a shift per training seed), the permutation test over
    seed-averaged examples rejects far more often than 5%; the two-level test does not."""
    rng = np.random.default_rng(3)
    rejections = {"two-level": 0, "examples only": 0}
    trials = 200
    for _ in range(trials):
        shared = rng.normal(0, 10, 150)
        a = scores(50, 3.0, n=150, rng=rng, shared=shared)
        b = scores(50, 3.0, n=150, rng=rng, shared=shared)
        rejections["two-level"] += two_level_test(a, b, paired_seeds=True).p_value < 0.05
        seed_averaged = paired_permutation_test(a.mean(0), b.mean(0), n_resamples=200)
        rejections["examples only"] += seed_averaged < 0.05
    assert rejections["two-level"] / trials <= 0.08
    assert rejections["examples only"] / trials >= 0.3


def test_the_p_value_resolves_far_below_any_corrected_threshold():
    """No 1/(1 + resamples) floor: a clear difference gives a p-value that passes Holm over
    60 comparisons (0.05 / 60)."""
    rng = np.random.default_rng(4)
    shared = rng.normal(0, 10, 500)
    a = scores(60, 0.3, n=500, rng=rng, shared=shared)
    b = scores(50, 0.3, n=500, rng=rng, shared=shared)
    p = two_level_test(a, b, paired_seeds=True).p_value
    assert 0 < p < 0.05 / 60 / 100


def test_no_noise_and_bad_shapes():
    same = np.ones((2, 5))
    assert two_level_test(same, same, paired_seeds=True).p_value == 1.0
    assert two_level_test(same + 1, same, paired_seeds=True).p_value == 0.0
    with pytest.raises(ValueError, match="same examples"):
        two_level_test(np.ones((2, 5)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="as many seeds"):
        two_level_test(np.ones((3, 5)), np.ones((2, 5)), paired_seeds=True)
    assert math.isnan(two_level_test(np.ones((2, 1)), np.ones((2, 1))).p_value)


# ---- corrections ---------------------------------------------------------------------------
def test_holm_and_bh_by_hand_nan_left_out():
    p = [0.01, 0.04, math.nan, 0.03, 0.2]
    holm = adjust(p, "holm")  # m = 4: 4 * 0.01, 3 * 0.03, 2 * 0.04 (monotone), 1 * 0.2
    assert holm[[0, 3, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    bh = adjust(p, "bh")  # 4/1 * 0.01, 4/2 * 0.03, 4/3 * 0.04, 4/4 * 0.2, then running minimum
    assert bh[[0, 3, 1, 4]] == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2])
    assert math.isnan(holm[2]) and math.isnan(bh[2])
    assert adjust(p, "none")[[0, 1]] == pytest.approx([0.01, 0.04])
    assert adjust([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "bonferonni")


# ---- ranks and tiers -----------------------------------------------------------------------
def test_letter_display_groups_what_the_tests_cannot_separate():
    means = {"x": 3.0, "y": 2.9, "z": 1.0, "w": 0.5}
    letters = letter_display(means, [("x", "z"), ("x", "w"), ("y", "w")])
    assert letters == {"x": "a", "y": "ab", "z": "bc", "w": "c"}
    assert letter_display(means, []) == dict.fromkeys(means, "a")
    every = [(a, b) for a in means for b in means if a < b]
    assert letter_display(means, every) == {"x": "a", "y": "b", "z": "c", "w": "d"}


def test_rank_intervals_are_tight_when_apart_and_wide_when_tied():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 10, 200)
    matrices = {
        "top": scores(70, 0.2, rng=rng, shared=shared),
        "tied1": scores(50, 0.2, rng=rng, shared=shared),
        "tied2": scores(50.05, 0.2, rng=rng, shared=shared),
    }
    resampled = two_level_means(matrices, 500, seed=0)
    observed = {m: float(x.mean()) for m, x in matrices.items()}
    ranks = rank_intervals(observed, resampled).set_index("method")
    assert (ranks.loc["top", ["rank", "rank_low", "rank_high"]] == 1).all()
    assert ranks.loc["tied1", "rank_low"] == 2 and ranks.loc["tied1", "rank_high"] == 3
    assert two_level_means(matrices, 500, seed=0)["top"] == pytest.approx(resampled["top"])


# ---- the leaderboard -----------------------------------------------------------------------
def frame(matrices: dict[str, np.ndarray], eval_set: str = "id") -> pd.DataFrame:
    rows = []
    for method, matrix in matrices.items():
        for s, row in enumerate(matrix, start=1):
            for i, value in enumerate(row):
                rows.append(
                    {
                        "method": method,
                        "seed": s,
                        "eval_set": eval_set,
                        "id": f"e{i}",
                        "rougeL": value,
                        "exact_match": 100.0 * (value > 55),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def clear_board():
    rng = np.random.default_rng(6)
    shared = rng.normal(0, 10, 200)
    matrices = {
        "teacher": scores(90, 0.0, seeds=1, rng=rng, shared=shared),
        "sft": scores(50, 0.3, rng=rng, shared=shared),
        "kd": scores(60, 0.3, rng=rng, shared=shared),
        "rkl": scores(60.1, 0.3, rng=rng, shared=shared),
        "gkd": scores(50.1, 0.3, rng=rng, shared=shared),
    }
    return example_statistics(
        frame(matrices), ["rougeL"], "sft", ranked=["sft", "kd", "rkl", "gkd"]
    ).set_index("method")


def test_tests_against_the_reference_are_corrected_over_the_family(clear_board):
    board = clear_board
    assert board.loc["kd", "rougeL_p_adjusted"] < 0.05
    assert board.loc["gkd", "rougeL_p_adjusted"] > 0.05
    tested = board["rougeL_p_vs_reference"].dropna()
    assert len(tested) == 4  # teacher, kd, rkl, gkd against sft
    expected = adjust(tested.to_numpy(), "holm")
    assert board.loc[tested.index, "rougeL_p_adjusted"].to_numpy() == pytest.approx(expected)
    assert board.loc["teacher", "rougeL_test"] == SEEDS_UNPAIRED
    assert board.loc["kd", "rougeL_test"] == SEEDS_PAIRED
    assert board.loc["sft", "rougeL_test"] == "" and math.isnan(
        board.loc["sft", "rougeL_p_adjusted"]
    )


def test_tiers_and_ranks_of_the_leaderboard(clear_board):
    board = clear_board
    assert board.loc["kd", "rougeL_tier"] == "a" and board.loc["rkl", "rougeL_tier"] == "a"
    assert board.loc["sft", "rougeL_tier"] == "b" and board.loc["gkd", "rougeL_tier"] == "b"
    assert board.loc["teacher", "rougeL_tier"] == "" and pd.isna(
        board.loc["teacher", "rougeL_rank"]
    )
    assert board.loc["rkl", "rougeL_rank"] == 1 and board.loc["rkl", "rougeL_rank_high"] == 2
    low, high = board.loc["kd", ["rougeL_ci_low", "rougeL_ci_high"]]
    assert low < 60 < high


def test_the_correction_setting_changes_the_adjusted_p_values():
    rng = np.random.default_rng(7)
    shared = rng.normal(0, 10, 100)
    matrices = {m: scores(50 + i, 1.0, n=100, rng=rng, shared=shared) for i, m in enumerate("abc")}
    examples = frame(matrices)
    by = {
        name: example_statistics(
            examples, ["rougeL"], "a", settings=StatsSettings(correction=name)
        ).set_index("method")["rougeL_p_adjusted"]
        for name in ("holm", "bh", "none")
    }
    raw = example_statistics(examples, ["rougeL"], "a").set_index("method")
    assert by["none"]["c"] == pytest.approx(raw.loc["c", "rougeL_p_vs_reference"])
    assert by["holm"]["b"] >= by["bh"]["b"] >= by["none"]["b"]


def test_settings_are_checked_and_read_from_a_recipe():
    assert StatsSettings.from_recipe({"stats": {"correction": "bh"}}).correction == "bh"
    assert StatsSettings.from_recipe({}).correction == "holm"
    with pytest.raises(Exception, match="correction"):
        StatsSettings(correction="bonferroni")


# ---- the rendered tables -------------------------------------------------------------------
def write_clear_run(root: Path, rkl_mean: float, **recipe) -> Path:
    """A run directory of three seeds per method whose per-example scores come from
    ``scores`` (examples shared, seed shifts small)."""
    from dpkd_bench.results import RunDir, write_example_scores, write_json

    rng = np.random.default_rng(8)
    shared = rng.normal(0, 10, 120)
    means = {"sft": 50.0, "kd": 60.0, "rkl": rkl_mean}
    run = RunDir(root)
    run.save_manifest(
        {
            "recipe_name": "clear",
            "recipe": {"name": "clear", **recipe},
            "methods": list(means),
            "seeds": [1, 2, 3],
            "eval_sets": ["id"],
            "git_commit": "0123456789abcdef+dirty",
            "threads": {"torch": 2, "OMP_NUM_THREADS": "2"},
            "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T01:00:00+00:00",
            "units": {},
        }
    )
    for method, mean in means.items():
        matrix = scores(mean, 0.3, n=120, rng=rng, shared=shared)
        for seed, row in enumerate(matrix, start=1):
            unit = run.unit_dir(method, seed)
            records = [
                {"eval_set": "id", "id": f"e{i}", "rougeL": v, "exact_match": 100.0 * (v > 58)}
                for i, v in enumerate(row)
            ]
            write_example_scores(unit / "scores.csv.gz", records)
            figures = {
                k: float(np.mean([r[k] for r in records])) for k in ("rougeL", "exact_match")
            }
            write_json(unit / "metrics.json", {"eval": {"id": {**figures, "n": len(row)}}})
            run.update_unit(method, seed, state="done")
    return root


def board_lines(md: str) -> dict[str, str]:
    table = md.split("## Ranks and tiers")[0]
    return {line.split(" | ")[0].strip("|* "): line for line in table.splitlines() if "|" in line}


def test_bold_only_for_a_winner_alone_in_the_top_tier(tmp_path):
    tied = write_clear_run(tmp_path / "tied", rkl_mean=60.05)
    render(tied)
    lines = board_lines((tied / "leaderboard.md").read_text(encoding="utf-8"))
    assert "**" not in lines["kd"] and "**" not in lines["rkl"]  # kd and rkl share tier a
    assert "†" in lines["kd"] and "†" in lines["rkl"]
    alone = write_clear_run(tmp_path / "alone", rkl_mean=70.0)
    render(alone)
    md = (alone / "leaderboard.md").read_text(encoding="utf-8")
    assert "**" in board_lines(md)["rkl"].split(" | ")[2]
    assert "| rkl | 1 [1–1] a |" in md
    # the header says where the numbers come from, a modified tree included
    assert "Run at commit 0123456789ab, from a MODIFIED tree (uncommitted changes)" in md
    assert "2 torch threads (OMP_NUM_THREADS=2)" in md and "finished 2026-01-01T01:00:00" in md
    assert "Holm over the 4 comparisons of this table" in md


def test_a_recipe_correction_reaches_the_legend_and_the_csv(tmp_path):
    run = write_clear_run(tmp_path / "bh", rkl_mean=60.05, stats={"correction": "none"})
    render(run)
    md = (run / "leaderboard.md").read_text(encoding="utf-8")
    assert "unadjusted p < 0.05 (no correction for the 4 comparisons of this table" in md
    board = pd.read_csv(run / "leaderboard.csv")
    tested = board.dropna(subset=["rougeL_p_vs_reference"])
    assert (tested["rougeL_p_vs_reference"] == tested["rougeL_p_adjusted"]).all()
