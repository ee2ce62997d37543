"""How much does one student_init per seed widen the leaderboard's intervals?

    .venv/bin/python benchmarks/init_per_seed.py PER_SEED_RUN SHARED_RUN [--methods a,b,...]

Both runs are three-seed runs of the same recipe, one with ``student.init_per_seed: true`` (the
default) and one with ``false`` (every seed starts from the shared ``student_init``):

    dpkd-bench run --seeds 1,2,3 --out SHARED_RUN student.init_per_seed=false
    dpkd-bench run --seeds 1,2,3 --out PER_SEED_RUN          (or a --methods all run)

Reads their leaderboard.csv only. Prints, per method and eval set (exact match), the spread
over seeds (sample std), the width of the 95% two-level bootstrap interval and the adjusted
p-value against sft under each setting, then the median ratios per-seed / shared.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

KEY = "exact_match"
REFERENCE_ROWS = ("teacher",)


def read(run: Path) -> pd.DataFrame:
    board = pd.read_csv(run / "leaderboard.csv")
    board["width"] = board[f"{KEY}_ci_high"] - board[f"{KEY}_ci_low"]
    return board.set_index(["method", "eval_set"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("per_seed", type=Path)
    parser.add_argument("shared", type=Path)
    parser.add_argument("--methods", help="methods to compare (default: those of both runs)")
    args = parser.parse_args(argv)
    try:
        per_seed, shared = read(args.per_seed), read(args.shared)
    except (OSError, KeyError, pd.errors.ParserError) as err:
        print(f"error: cannot read a leaderboard ({err}); pass two finished run directories")
        return 2
    common = [k for k in shared.index if k in per_seed.index and k[0] not in REFERENCE_ROWS]
    if args.methods:
        wanted = set(args.methods.split(","))
        common = [k for k in common if k[0] in wanted]
    print(
        f"{'method':<13}{'eval set':<16}{'std shared':>11}{'std per-seed':>13}"
        f"{'CI width shared':>16}{'CI width per-seed':>18}{'p adj shared':>13}"
        f"{'p adj per-seed':>15}"
    )
    ratios_std, ratios_width = [], []
    for method, eval_set in common:
        a, b = shared.loc[(method, eval_set)], per_seed.loc[(method, eval_set)]
        p_a, p_b = a.get(f"{KEY}_p_adjusted", math.nan), b.get(f"{KEY}_p_adjusted", math.nan)
        print(
            f"{method:<13}{eval_set:<16}{a[f'{KEY}_std']:>11.2f}{b[f'{KEY}_std']:>13.2f}"
            f"{a['width']:>16.2f}{b['width']:>18.2f}{p_a:>13.3g}{p_b:>15.3g}"
        )
        if a[f"{KEY}_std"] > 0:
            ratios_std.append(b[f"{KEY}_std"] / a[f"{KEY}_std"])
        if a["width"] > 0:
            ratios_width.append(b["width"] / a["width"])
    median = pd.Series(ratios_std).median(), pd.Series(ratios_width).median()
    print(
        f"median ratio per-seed / shared over {len(common)} rows: seed std {median[0]:.2f}, "
        f"interval width {median[1]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
