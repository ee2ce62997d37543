"""Targets of the fair protocol (tuning on dev, per-method settings), read from finished runs.

    .venv/bin/python benchmarks/fair_protocol.py --tune TUNE_DIR [--tune DIR ...] [--tune-ray DIR2]
        [--tuned RUN --untuned RUN] [--tuned-second RUN --untuned-second RUN] [--default RUN]

Reads run directories only; it never trains. The runs it expects, on the default suite:

    dpkd-bench tune --methods all --out TUNE_DIR                        (--tune)
    dpkd-bench tune --methods M --launcher ray launcher.cpus_per_unit=1 --out DIR2 (--tune-ray; a
        --tune of the same methods M gives the local time it is compared with)
    dpkd-bench run --recipe TUNE_DIR/tuned.yaml --methods all --seeds 1,2,3 --out RUN (--tuned)
    a --methods all --seeds 1,2,3 run with one shared learning rate (--untuned; the checked-in
        reports/synthetic-all-methods), and both at data.seed=1 (--*-second)
    dpkd-bench run --out RUN                                            (--default)

Prints the trials per method and the tuning's wall time (and under Ray, with the ratio); for the
tuned and the untuned leaderboard, the methods whose three-seed mean EM on synthetic-id is below
student_init's (with the whole trial grid of any such tuned method), the corrected tests against
sft that survive per eval set, the tiers on synthetic-id, and Kendall's tau between data seeds;
the default run's wall time and whether its report has every method's dev curve; each paper
recipe's per-method settings as its dry run prints them. Then one line per target,
``name: value (goal ...) PASS|FAIL|SKIP``. Exit status 0 whatever the figures; 2, with one
``error:`` line, when an input cannot be read.
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from benchkit import ROOT, print_machine
from calibration import (
    EM,
    ID_SET,
    Target,
    check,
    distillation_methods,
    em,
    kendall_tau_b,
    load_run,
    significant,
    wall_line,
    wall_s,
)

from dpkd_bench.errors import UserError
from dpkd_bench.planner import train_text
from dpkd_bench.recipe import load_recipe
from dpkd_bench.results import RunDir

INIT = "student_init"
DEFAULT_WALL_MAX_S = 600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tune",
        type=Path,
        action="append",
        default=[],
        help="a `dpkd-bench tune` run (repeat for tunings that joined one record, e.g. methods "
        "tuned later)",
    )
    for flag, what in (
        ("--tune-ray", "one --tune's grid again under --launcher ray"),
        ("--tuned", "three seeds of every method with the tuned recipe"),
        ("--untuned", "three seeds of every method at one shared learning rate"),
        ("--tuned-second", "--tuned at data.seed=1"),
        ("--untuned-second", "--untuned at data.seed=1"),
        ("--default", "a plain `dpkd-bench run` of the tuned default"),
    ):
        parser.add_argument(flag, type=Path, help=what)
    return parser.parse_args(argv)


def trials(root: Path) -> pd.DataFrame:
    path = root / "trials.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing; render it with `dpkd-bench report {root}`")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def tuning_wall_s(root: Path) -> float:
    from dpkd_bench.report.tuning import plan_wall_s
    from dpkd_bench.results import read_json

    plan = read_json(root / "tuning.json") or {}
    return plan_wall_s(plan) if plan.get("wall_s") else math.nan


def tuning_section(args) -> list[Target]:
    if not args.tune:
        return [Target("trials_equal", "n/a", "== every method", "SKIP")]
    tables = {root: trials(root) for root in args.tune}
    table = pd.concat(tables.values())
    counts = table.groupby("method", sort=False).size()
    for root, one in tables.items():
        each = one.groupby("method", sort=False).size()
        print(f"\ntrials per method ({root}): " + ", ".join(f"{m} {n}" for m, n in each.items()))
        local, units = tuning_wall_s(root), one["wall_s"].sum()
        print(f"tuning wall time, local launcher: {local:.0f} s (trial units {units:.0f} s)")
    found = [Target("trials_equal", f"{counts.min()}..{counts.max()}", "== every method",
                    "PASS" if counts.nunique() == 1 else "FAIL")]  # fmt: skip
    if args.tune_ray is not None:
        ray_methods = set(trials(args.tune_ray)["method"])
        same = [r for r, t in tables.items() if set(t["method"]) == ray_methods]
        if not same:
            raise UserError(
                f"--tune-ray {args.tune_ray} tuned {', '.join(sorted(ray_methods))}, no --tune "
                "tuned the same methods; pass the local tuning of that grid as a --tune"
            )
        local, ray = tuning_wall_s(same[0]), tuning_wall_s(args.tune_ray)
        print(
            f"\ntuning wall time of {same[0]}'s grid: local {local:.0f} s, ray launcher "
            f"({args.tune_ray}) {ray:.0f} s; ray / local {ray / local:.2f}"
        )
        found.append(Target("tuning_ray_over_local", f"{ray / local:.2f}", "reported", "PASS"))
    else:
        found.append(Target("tuning_ray_over_local", "n/a", "reported", "SKIP"))
    chosen = table[table["chosen"].astype(str) == "True"]

    def own(settings) -> str:  # the trials table leaves it empty (NaN) for the lr alone
        return settings if isinstance(settings, str) else ""

    print("chosen: " + "; ".join(f"{r.method} lr {r.lr:g} {own(r.settings)}".strip()
                                 for r in chosen.itertuples()))  # fmt: skip
    return found


def below_init(label: str, root: Path | None, tune: list[Path]) -> tuple[list[str], Target]:
    """The methods whose mean EM on synthetic-id is below student_init's, printed."""
    name = f"{label}_methods_below_student_init_id"
    if root is None:
        return [], Target(name, "n/a", "== 0", "SKIP")
    board = load_run(root).board
    start = em(board, INIT)
    below = [m for m in distillation_methods(board) if em(board, m) < start]
    print(f"\n{label}: {wall_line(label, load_run(root, board=False))}")
    print(f"{label}: student_init {start:.2f} EM on {ID_SET}; below it: {below or 'none'}")
    if tune and label == "tuned":
        table = pd.concat([trials(root) for root in tune])
        for method in below:
            grid = table[table["method"] == method]
            print(f"  trial grid of {method}:")
            print(
                grid[["trial", "dev_score", "start_score", "selected_step"]].to_string(index=False)
            )
    return below, Target(name, str(len(below)), "== 0" if label == "tuned" else "reported",
                         "PASS" if not below or label != "tuned" else "FAIL")  # fmt: skip


def tests_and_tiers(label: str, root: Path | None) -> None:
    if root is None:
        return
    board = load_run(root).board
    for eval_set, tests in significant(board).items():
        kept = [f"{m} {s} p={p:.3g}" for m, s, p in tests if p < 0.05]
        print(f"{label} {eval_set}: {len(kept)} of {len(tests)} tests survive: {kept or 'none'}")
    tier = f"{EM}_tier"
    if tier in board.columns:
        rows = board[
            (board["eval_set"] == ID_SET) & board["method"].isin(distillation_methods(board))
        ]
        print(f"{label} tiers on {ID_SET} EM: "
              + ", ".join(f"{r.method} {r[tier]}" for _, r in rows.iterrows()))  # fmt: skip


def tau(label: str, first: Path | None, second: Path | None) -> Target:
    name = f"{label}_tau_data_seeds"
    if first is None or second is None:
        return Target(name, "n/a", "reported", "SKIP")
    a, b = load_run(first).board, load_run(second).board
    methods = [m for m in distillation_methods(a) if m in set(distillation_methods(b))]
    value = kendall_tau_b([em(a, m) for m in methods], [em(b, m) for m in methods])
    print(f"{label}: Kendall's tau of the EM order on {ID_SET}, data seeds 0 and 1: {value:.3f}")
    return Target(name, f"{value:.3f}", "reported", "PASS")


def default_section(root: Path | None) -> list[Target]:
    if root is None:
        return [Target("default_wall_s", "n/a", f"<= {DEFAULT_WALL_MAX_S:g}", "SKIP")]
    run = load_run(root, board=False)
    seconds = wall_s(run.manifest)
    print(f"\n{wall_line('default', run)}")
    curves = root / "dev_curves.csv"
    methods = set(RunDir(root).load_manifest().get("methods") or [])
    shown = set(pd.read_csv(curves)["method"]) if curves.is_file() else set()
    return [
        check("default_wall_s", seconds, f"<= {DEFAULT_WALL_MAX_S:g}", "s, two cores", 1),
        Target("default_dev_curves", f"{len(shown & methods)} of {len(methods)} methods",
               "every method", "PASS" if methods and methods <= shown else "FAIL"),
    ]  # fmt: skip


def paper_section() -> list[Target]:
    found = []
    for path in sorted((ROOT / "recipes" / "paper").glob("*.yaml")):
        recipe = load_recipe(str(path))
        print(f"\n{path.relative_to(ROOT)}: validates; per-method settings of its dry run:")
        own = all(recipe.method_train_keys(m) >= {"lr", "schedule"} for m in recipe.methods)
        for method in recipe.methods:
            print(f"  {method}: {train_text(recipe.unit_train(method))}")
        found.append(
            Target(
                f"paper_{recipe.name}",
                "each method its own settings" if own else "shared settings",
                "cited official values",
                "PASS" if own else "FAIL",
            )
        )
    return found  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print_machine()
        targets = tuning_section(args)
        for label, root in (("tuned", args.tuned), ("untuned", args.untuned)):
            targets.append(below_init(label, root, args.tune)[1])
            tests_and_tiers(label, root)
        targets.append(tau("tuned", args.tuned, args.tuned_second))
        targets.append(tau("untuned", args.untuned, args.untuned_second))
        targets += default_section(args.default)
        targets += paper_section()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    for target in targets:
        print(target.line())
    failed = sum(t.status == "FAIL" for t in targets)
    print(f"{len(targets) - failed} of {len(targets)} targets pass or are skipped; {failed} fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
