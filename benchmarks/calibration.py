"""Does the default benchmark rank methods rather than noise? Checks read from finished runs.

    .venv/bin/python benchmarks/calibration.py RUN_DIR [--second RUN_DIR2] [--default-run RUN_DIR3]

Reads run directories only (leaderboard.csv and manifest.json as `dpkd-bench run` writes them);
it never trains. The runs it expects, all on the default recipe (`synthetic`):

    dpkd-bench run --methods all --seeds 1,2,3 --out RUN_DIR
    dpkd-bench run --methods all --seeds 1,2,3 --out RUN_DIR2 data.seed=1     (--second)
    dpkd-bench run --out RUN_DIR3                                              (--default-run)

Prints the machine, each run's wall time by stage, a per-method table (mean EM per eval set,
its mean over the sets, the share of the teacher - sft gap closed on synthetic-id), the tests
against sft that survive the leaderboard's correction (Holm by default) per eval set, the tiers
and the rank intervals of the top three methods per eval set (EM), and, with --second,
Kendall's tau between the two rankings with the range of tau between two-level bootstrap
resamples of both runs, and the pairs of
methods that the tiers separate in both runs and whether they keep their order; then one line
per target,
``name: value (goal ...) PASS|FAIL|SKIP`` (SKIP: the option that measures it was not given),
then a summary line. Exit status 0 whatever the figures; 2, with one ``error:`` line, when an
input cannot be read.
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from benchkit import print_machine

from dpkd_bench.data.synthetic import EVAL_SETS
from dpkd_bench.errors import UserError
from dpkd_bench.report import LEADERBOARD_COLUMNS, REFERENCE_METHOD, SCORES, example_scores
from dpkd_bench.report.view import load_run as load_view
from dpkd_bench.results import REFERENCE_ROWS, RunDir
from dpkd_bench.stats import (
    ALPHA,
    CORRECTION_NAMES,
    StatsSettings,
    percentile_interval,
    two_level_means,
)
from dpkd_bench.stats.board import common_matrices

ID_SET = EVAL_SETS[0]  # synthetic-id: the training distribution, unseen items
TEACHER = "teacher"  # a reference row (REFERENCE_ROWS), the top of the gap
EM = "exact_match"
LABELS = dict(SCORES)  # score key -> "EM" / "ROUGE-L"
P_KEYS = (EM, *(key for key, _ in SCORES if key != EM))  # EM first: the metric
LEADERBOARD = "leaderboard.csv"
# The goals.
TEACHER_EM_MIN = 75.0
SFT_EM_MIN = 40.0
TEACHER_GAP_MIN = 15.0
SIGNIFICANT_SETS_MIN = 2
SPREAD_MIN = 5.0
TAU_MIN = 0.5
BETWEEN_TIERS_MIN = 0.9  # share of the pairs separated in both runs that keep their order
TAU_RESAMPLES = 1000
DEFAULT_WALL_MAX_S = 600.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="a --methods all --seeds 1,2,3 run"
    )
    parser.add_argument(
        "--second", type=Path, metavar="RUN_DIR2", help="the same run at data.seed=1"
    )
    parser.add_argument(
        "--default-run", type=Path, metavar="RUN_DIR3", help="a plain `dpkd-bench run`"
    )
    return parser.parse_args(argv)


# ---- reading runs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    root: Path
    manifest: dict
    board: pd.DataFrame  # leaderboard.csv (empty when not read)


def read_board(root: Path) -> pd.DataFrame:
    """leaderboard.csv with its contract columns checked and its numbers parsed."""
    path, fix = root / LEADERBOARD, f"render it again with `dpkd-bench report {root}`"
    try:
        board = pd.read_csv(path, dtype={"method": str, "eval_set": str, "reference": str})
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the run has no leaderboard yet; {fix}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable CSV ({err}); {fix}") from None
    missing = [c for c in LEADERBOARD_COLUMNS if c not in board.columns]
    if missing:
        raise UserError(f"{path} lacks the leaderboard columns {missing}; {fix}")
    numeric = [
        c for c in board.columns if c.endswith(("_mean", "_std", "_p_vs_reference", "_adjusted"))
    ]
    try:
        board[numeric] = board[numeric].apply(pd.to_numeric)
    except ValueError as err:
        raise UserError(f"{path} holds a score that is not a number ({err}); {fix}") from None
    return board


def load_run(root: Path, board: bool = True) -> Run:
    """A run's manifest and (with ``board``) its leaderboard; UserError when unreadable."""
    manifest = RunDir(root).load_manifest()
    return Run(root, manifest, read_board(root) if board else pd.DataFrame())


# ---- figures from one leaderboard ------------------------------------------------------------
def em(board: pd.DataFrame, method: str, eval_set: str = ID_SET) -> float:
    """Mean EM of ``method`` on ``eval_set``; NaN when the leaderboard has no such row."""
    rows = board[(board["method"] == method) & (board["eval_set"] == eval_set)]
    return float(rows[f"{EM}_mean"].iloc[0]) if len(rows) else math.nan


def distillation_methods(board: pd.DataFrame) -> list[str]:
    """Every method of the leaderboard but the reference rows (sft included), in its order."""
    return [m for m in dict.fromkeys(board["method"]) if m not in REFERENCE_ROWS]


def eval_sets(board: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(board["eval_set"]))


def mean_em(board: pd.DataFrame) -> pd.Series:
    """Each method's exact_match_mean averaged over the eval sets it has, in leaderboard order."""
    return board.groupby("method", sort=False)[f"{EM}_mean"].mean()


def gap_closed(board: pd.DataFrame, method: str) -> float:
    """(method - sft) / (teacher - sft) in mean EM on synthetic-id; NaN without a gap."""
    floor, ceiling = em(board, REFERENCE_METHOD), em(board, TEACHER)
    gap = ceiling - floor
    return (em(board, method) - floor) / gap if abs(gap) > 1e-9 else math.nan


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired score lists (ties handled); NaN when undefined."""
    signs = [(_sign(x[i] - x[j]), _sign(y[i] - y[j])) for i, j in combinations(range(len(x)), 2)]
    untied_x, untied_y = sum(a != 0 for a, _ in signs), sum(b != 0 for _, b in signs)
    denominator = math.sqrt(untied_x * untied_y)
    return sum(a * b for a, b in signs) / denominator if denominator else math.nan


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def p_column(board: pd.DataFrame, key: str) -> str:
    """The corrected p-values of ``key`` when the leaderboard has them, else the raw ones (a
    leaderboard rendered before corrections existed)."""
    adjusted = f"{key}_p_adjusted"
    return adjusted if adjusted in board.columns else f"{key}_p_vs_reference"


def significant(board: pd.DataFrame) -> dict[str, list[tuple[str, str, float]]]:
    """Per eval set, the (method, score label, p) of every test against sft in the
    leaderboard, smallest p first (corrected p-values where the leaderboard has them): each
    distillation method but sft, each score with p-values."""
    tested = board[board["method"].isin(distillation_methods(board))]
    tested = tested[tested["method"] != REFERENCE_METHOD]
    if "reference" in board.columns:
        tested = tested[tested["reference"] == REFERENCE_METHOD]
    found: dict[str, list[tuple[str, str, float]]] = {name: [] for name in eval_sets(board)}
    for _, row in tested.iterrows():
        for key in p_keys(board):
            p_value = row[p_column(board, key)]
            if pd.notna(p_value):
                found[row["eval_set"]].append((row["method"], LABELS[key], float(p_value)))
    return {name: sorted(tests, key=lambda t: t[2]) for name, tests in found.items()}


def p_keys(board: pd.DataFrame) -> list[str]:
    """The scores whose paired p-values against sft the leaderboard holds (EM first)."""
    return [key for key in P_KEYS if f"{key}_p_vs_reference" in board.columns]


# ---- wall time -------------------------------------------------------------------------------
def wall_s(manifest: dict) -> float:
    """The run's wall time: ``total`` (taken before the report) plus the report stage."""
    stages = manifest.get("stage_times") or {}
    if "total" not in stages:
        return math.nan
    return float(stages["total"]) + float(stages.get("report", 0.0))


def stage_summary(manifest: dict) -> str:
    """Stage times summed by kind (``unit:kd/seed-1`` -> unit), with counts and the slowest unit."""
    sums: dict[str, list[float]] = {}
    for stage, seconds in (manifest.get("stage_times") or {}).items():
        if stage != "total":
            sums.setdefault(stage.split(":")[0], []).append(float(seconds))
    parts = [
        f"{kind} {sum(times):.1f}" + (f" [{len(times)}]" if len(times) > 1 else "")
        for kind, times in sums.items()
    ]
    units = {k: v for k, v in (manifest.get("units") or {}).items() if isinstance(v, dict)}
    timed = {k: float(v["wall_s"]) for k, v in units.items() if "wall_s" in v}
    if timed:
        slowest = max(timed, key=timed.get)
        parts.append(f"slowest unit {slowest} {timed[slowest]:.1f}")
    not_done = sorted(k for k, v in units.items() if v.get("state", "done") != "done")
    if not_done:
        parts.append(f"not done: {', '.join(not_done)}")
    return ", ".join(parts)


def wall_line(label: str, run: Run) -> str:
    seconds = wall_s(run.manifest)
    shown = "n/a (no total: the run has not finished)" if math.isnan(seconds) else f"{seconds:.1f}"
    resumed = " resumed: total covers the last session only;" if run.manifest.get("resumed") else ""
    return f"wall_s {label} {shown} ({run.root};{resumed} {stage_summary(run.manifest)})"


# ---- targets ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    value: str
    goal: str
    status: str  # PASS, FAIL or SKIP (not measured: its option was not given)

    def line(self) -> str:
        return f"{self.name}: {self.value} (goal {self.goal}) {self.status}"


def check(name: str, value: float, goal: str, note: str = "", digits: int = 2) -> Target:
    """``value`` against ``goal`` (">= 75" or "<= 600"); a NaN value fails and says n/a."""
    op, bound = goal.split()
    passed = value >= float(bound) if op == ">=" else value <= float(bound)
    shown = "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    status = "PASS" if passed and not math.isnan(value) else "FAIL"
    return Target(name, f"{shown} {note}".strip(), goal, status)


def reference_targets(board: pd.DataFrame) -> list[Target]:
    teacher, sft = em(board, TEACHER), em(board, REFERENCE_METHOD)
    return [
        check("teacher_em_id", teacher, f">= {TEACHER_EM_MIN:g}", f"EM on {ID_SET}"),
        check("sft_em_id", sft, f">= {SFT_EM_MIN:g}", f"EM on {ID_SET}"),
        check("teacher_minus_sft_em_id", teacher - sft, f">= {TEACHER_GAP_MIN:g}", "EM points"),
    ]


def correction_label(run: Run) -> str:
    """How the leaderboard's p-values were corrected, as its manifest's recipe says."""
    if not any(c.endswith("_p_adjusted") for c in run.board.columns):
        return "uncorrected (a leaderboard rendered before corrections)"
    settings = StatsSettings.from_recipe(run.manifest.get("recipe"))
    return f"{CORRECTION_NAMES[settings.correction]}-adjusted"


def significance_target(run: Run) -> Target:
    board = run.board
    keys = p_keys(board)
    sets = significant(board)
    hits = [name for name, tests in sets.items() if tests and tests[0][2] < ALPHA]
    metrics = " or ".join(LABELS[key] for key in keys) or "no p-value columns in leaderboard.csv"
    note = (
        f"of {len(sets)} eval sets where some method differs from {REFERENCE_METHOD} at "
        f"{correction_label(run)} p < {ALPHA:g}, two-level test, {metrics}"
    )
    value = len(hits) if keys else math.nan
    return check("significant_eval_sets", value, f">= {SIGNIFICANT_SETS_MIN}", note, digits=0)


def significance_lines(board: pd.DataFrame) -> list[str]:
    """Per eval set, how many tests survive and which, or the smallest p-value when none."""
    lines = []
    for name, tests in significant(board).items():
        below = [t for t in tests if t[2] < ALPHA]
        shown = below or tests[:1]
        text = "; ".join(f"{m} {label} p={p:.3g}" for m, label, p in shown) or "no p-values"
        prefix = "" if below else f"none below {ALPHA:g}, smallest: "
        count = f"{len(below)} of {len(tests)} survive"
        lines.append(f"p_vs_{REFERENCE_METHOD} {name}: {count}; {prefix}{text}")
    return lines


def tier_lines(board: pd.DataFrame, key: str = EM) -> list[str]:
    """Per eval set: the tiers (methods per letter, best letter first) and the rank intervals
    of the top three methods, from the leaderboard's columns."""
    tier, rank = f"{key}_tier", f"{key}_rank"
    if tier not in board.columns:
        return [f"tiers: not in {LEADERBOARD} (rendered before tiers existed)"]
    lines = []
    methods = board[board["method"].isin(distillation_methods(board))]
    for name, rows in methods.groupby("eval_set", sort=False):
        rows = rows.sort_values(f"{key}_mean", ascending=False)
        codes = rows[tier].astype(object).where(rows[tier].notna(), "").astype(str)
        if not codes.str.len().any() or rows[rank].isna().any():
            lines.append(f"tiers {name} {LABELS[key]}: none (no per-example scores)")
            continue
        letters = sorted({ch for code in codes for ch in code})
        groups = [
            f"{ch}: {', '.join(rows.loc[codes.str.contains(ch), 'method'])}" for ch in letters
        ]
        lines.append(f"tiers {name} {LABELS[key]}: " + " | ".join(groups))
        top = rows.sort_values(rank).head(3)
        intervals = "; ".join(
            f"{r.method} {int(getattr(r, rank))} [{int(getattr(r, rank + '_low'))}-"
            f"{int(getattr(r, rank + '_high'))}]"
            for r in top.itertuples()
        )
        lines.append(f"rank intervals {name} {LABELS[key]} (top three): {intervals}")
    return lines


def spread_target(board: pd.DataFrame) -> Target:
    scores = {m: em(board, m) for m in distillation_methods(board)}
    scores = {m: s for m, s in scores.items() if not math.isnan(s)}
    if len(scores) < 2:
        return check("method_spread_em_id", math.nan, f">= {SPREAD_MIN:g}", "(< 2 methods)")
    best, worst = max(scores, key=scores.get), min(scores, key=scores.get)
    note = (
        f"EM points on {ID_SET}: best {best} {scores[best]:.2f}, worst {worst} {scores[worst]:.2f}"
    )
    return check("method_spread_em_id", scores[best] - scores[worst], f">= {SPREAD_MIN:g}", note)


def ranking(board: pd.DataFrame, methods: list[str]) -> str:
    means = mean_em(board)
    ordered = sorted(methods, key=lambda m: -means[m])
    return " > ".join(f"{m} {means[m]:.2f}" for m in ordered)


def stability_target(first: Run, second: Run | None) -> tuple[list[Target], list[str]]:
    """Kendall's tau-b between the two runs' rankings by mean EM over the eval sets, with its
    two-level bootstrap interval, and the order of the pairs the tiers separate in both."""
    goal = f">= {TAU_MIN:g}"
    if second is None:
        skipped = "not measured: pass --second RUN_DIR2"
        return [
            Target("kendall_tau", skipped, goal, "SKIP"),
            Target("between_tier_agreement", skipped, f">= {BETWEEN_TIERS_MIN:g}", "SKIP"),
        ], []
    common = [m for m in distillation_methods(first.board) if m in set(second.board["method"])]
    x, y = (mean_em(run.board)[common].tolist() for run in (first, second))
    lines = [f"ranking {run.root}: {ranking(run.board, common)}" for run in (first, second)]
    seeds = [
        ((run.manifest.get("recipe") or {}).get("data") or {}).get("seed")
        for run in (first, second)
    ]
    if seeds[0] == seeds[1]:
        lines.append(f"note: both runs have data.seed={seeds[0]}; the second should differ")
    low, high = tau_interval(first, second, common)
    interval = (
        "n/a (a run has no per-example scores)" if math.isnan(low) else (f"[{low:.3f}, {high:.3f}]")
    )
    note = (
        f"tau-b over {len(common)} methods in both runs, mean EM over the eval sets; 95% range "
        f"of tau between two-level bootstrap resamples of both runs {interval} (resampling adds "
        "noise to both rankings: the range is what another pair of runs could give, and sits "
        "below the observed tau when the order is fragile)"
    )
    tau = check("kendall_tau", kendall_tau_b(x, y), goal, note, digits=3)
    agree, separated, detail = between_tiers(first.board, second.board, common)
    lines.append(detail)
    share = agree / separated if separated else math.nan
    note = f"of {separated} pairs that the {ID_SET} EM tiers separate in both runs keep their order"
    between = check("between_tier_agreement", share, f">= {BETWEEN_TIERS_MIN:g}", note)
    return [tau, between], lines


def resampled_means(run: Run, methods: list[str], seed: int) -> np.ndarray | None:
    """[resamples, methods]: each method's mean EM over the eval sets in every two-level
    bootstrap resample of the run's per-example scores; None without them."""
    examples = example_scores(load_view(RunDir(run.root)))
    if examples.empty:
        return None
    per_set = []
    for _, rows in examples[examples["method"].isin(methods)].groupby("eval_set", sort=False):
        groups = {m: g for m, g in rows.groupby("method", sort=False)}
        if set(groups) != set(methods):
            return None
        means = two_level_means(common_matrices(groups, EM), TAU_RESAMPLES, seed)
        per_set.append(np.stack([means[m] for m in methods], axis=1))
    return np.mean(per_set, axis=0)


def tau_interval(first: Run, second: Run, methods: list[str]) -> tuple[float, float]:
    """95% percentile interval of tau-b, both runs resampled independently (two-level)."""
    a, b = resampled_means(first, methods, seed=0), resampled_means(second, methods, seed=1)
    if a is None or b is None:
        return math.nan, math.nan
    taus = np.array([kendall_tau_b(a[i].tolist(), b[i].tolist()) for i in range(len(a))])
    return percentile_interval(taus, 0.95)


def between_tiers(first: pd.DataFrame, second: pd.DataFrame, methods: list[str]):
    """(pairs in the same order, pairs separated by the synthetic-id EM tiers in both runs,
    a line naming the pairs that flip)."""
    tier = f"{EM}_tier"
    if tier not in first.columns or tier not in second.columns:
        return 0, 0, "between tiers: a leaderboard has no tiers"
    rows = [b[(b["eval_set"] == ID_SET)].set_index("method") for b in (first, second)]
    agree, separated, flips = 0, 0, []
    for i, j in combinations(methods, 2):
        apart = [not set(str(r.at[i, tier])) & set(str(r.at[j, tier])) for r in rows]
        if not all(apart):
            continue
        separated += 1
        order = [_sign(float(r.at[i, f"{EM}_mean"] - r.at[j, f"{EM}_mean"])) for r in rows]
        if order[0] == order[1]:
            agree += 1
        else:
            flips.append(f"{i}/{j}")
    flipped = ", ".join(flips) or "none"
    return (
        agree,
        separated,
        f"between tiers ({ID_SET} EM): {separated} pairs separated in both runs, {agree} keep "
        f"their order; flipped: {flipped}",
    )


def wall_target(default_run: Run | None) -> Target:
    goal = f"<= {DEFAULT_WALL_MAX_S:g}"
    if default_run is None:
        return Target(
            "default_run_wall_s", "not measured: pass --default-run RUN_DIR3", goal, "SKIP"
        )
    return check("default_run_wall_s", wall_s(default_run.manifest), goal, "s", digits=1)


# ---- per-method table ------------------------------------------------------------------------
def method_table(board: pd.DataFrame) -> list[str]:
    """Reference rows first, then the methods from best to worst mean EM over the eval sets:
    seeds, EM per eval set, its mean, and the share of the teacher - sft gap closed on
    synthetic-id."""
    means = mean_em(board)
    methods = [m for m in REFERENCE_ROWS if m in means.index]
    methods += sorted(distillation_methods(board), key=lambda m: -means[m])
    width = max(len("method"), *(len(m) for m in methods))
    sets = {name: max(len(name), 6) for name in eval_sets(board)}  # name -> column width
    header = [f"{'method':<{width}}", "seeds", *(f"{n:>{w}}" for n, w in sets.items())]
    lines = ["  ".join([*header, "mean EM", "gap closed (id)"])]
    for method in methods:
        seeds = board.loc[board["method"] == method, "n_seeds"].max()
        cells = [f"{_number(em(board, method, n)):>{w}}" for n, w in sets.items()]
        gap = gap_closed(board, method)
        gap_text = "n/a" if math.isnan(gap) else f"{100 * gap:.0f}%"
        row = [f"{method:<{width}}", f"{seeds:>5}", *cells, f"{_number(means[method]):>7}"]
        lines.append("  ".join([*row, f"{gap_text:>15}"]))
    return lines


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


# ---- main ------------------------------------------------------------------------------------
def load_inputs(args: argparse.Namespace) -> tuple[Run, Run | None, Run | None]:
    run = load_run(args.run_dir)
    second = load_run(args.second) if args.second else None
    default_run = load_run(args.default_run, board=False) if args.default_run else None
    return run, second, default_run


def report_lines(run: Run, second: Run | None, default_run: Run | None) -> list[str]:
    """Everything after the machine: runs, table, p-values, one line per target, summary."""
    board, manifest = run.board, run.manifest
    lines = [f"run {run.root} recipe={manifest.get('recipe_name')} seeds={manifest.get('seeds')}"]
    labelled = (("run_dir", run), ("second", second), ("default_run", default_run))
    lines += [wall_line(label, r) for label, r in labelled if r is not None]
    lines += method_table(board) + significance_lines(board) + tier_lines(board)
    stability, ranking_lines = stability_target(run, second)
    targets = [
        *reference_targets(board),
        significance_target(run),
        spread_target(board),
        *stability,
        wall_target(default_run),
    ]
    counts = {s: sum(t.status == s for t in targets) for s in ("PASS", "FAIL", "SKIP")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return [
        *lines,
        *ranking_lines,
        *(t.line() for t in targets),
        f"summary: {summary} of {len(targets)} targets",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print_machine()
    try:
        inputs = load_inputs(args)
    except (UserError, OSError, UnicodeDecodeError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(*report_lines(*inputs), sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
