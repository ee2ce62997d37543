"""Statistics of the leaderboard; pure functions over numbers and tables (numpy, pandas,
scipy), no file I/O and no models.

* :mod:`~dpkd_bench.stats.bootstrap`: spread over training seeds, bootstrap intervals over
  examples, the paired permutation test and the gap recovered;
* :mod:`~dpkd_bench.stats.significance`: the two-level test over training seeds and examples,
  and Holm / Benjamini-Hochberg corrections;
* :mod:`~dpkd_bench.stats.ranks`: the two-level bootstrap, rank intervals and the letters of
  tiers;
* :mod:`~dpkd_bench.stats.board`: all of it for one leaderboard (``StatsSettings``, the
  recipe's ``stats`` section).
"""

from dpkd_bench.stats.board import (
    StatsSettings,
    example_statistics,
    gap_statistics,
    statistics_columns,
)
from dpkd_bench.stats.bootstrap import (
    ALPHA,
    CONFIDENCE,
    N_RESAMPLES,
    NOT_AVAILABLE,
    SEED,
    align_examples,
    bootstrap_ci,
    example_means,
    format_interval,
    format_mean_std,
    gap_columns,
    gap_recovered,
    gap_recovered_ci,
    is_significant,
    paired_permutation_test,
    percentile_interval,
    resample_indices,
    sample_std,
)
from dpkd_bench.stats.ranks import letter_display, rank_intervals, top_tier, two_level_means
from dpkd_bench.stats.significance import (
    CORRECTION_NAMES,
    CORRECTIONS,
    TestResult,
    adjust,
    two_level_test,
)

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "CORRECTIONS",
    "CORRECTION_NAMES",
    "NOT_AVAILABLE",
    "N_RESAMPLES",
    "SEED",
    "StatsSettings",
    "TestResult",
    "adjust",
    "align_examples",
    "bootstrap_ci",
    "example_means",
    "example_statistics",
    "format_interval",
    "format_mean_std",
    "gap_columns",
    "gap_recovered",
    "gap_recovered_ci",
    "gap_statistics",
    "is_significant",
    "letter_display",
    "paired_permutation_test",
    "percentile_interval",
    "rank_intervals",
    "resample_indices",
    "sample_std",
    "statistics_columns",
    "top_tier",
    "two_level_means",
    "two_level_test",
]
