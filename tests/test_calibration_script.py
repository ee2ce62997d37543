"""benchmarks/calibration.py on fake run directories: its targets, Kendall's tau and errors."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from dpkd_bench.report import LEADERBOARD_COLUMNS, STATISTICS_COLUMNS, render
from dpkd_bench.results import RunDir
from tests.test_results_report import make_run

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SETS = ["synthetic-id", "synthetic-long", "synthetic-para"]
# method -> EM per eval set (ROUGE-L is EM + 10 everywhere); mean EM over the sets in comments
CALIBRATED = {
    "teacher": [80.0, 60.0, 70.0],
    "student_init": [20.0, 10.0, 15.0],
    "sft": [45.0, 30.0, 35.0],  # 36.67
    "kd": [50.0, 33.0, 38.0],  # 40.33
    "dpkd": [55.0, 36.0, 40.0],  # 43.67
}
REVERSED = {**CALIBRATED, "sft": [50.0] * 3, "kd": [45.0] * 3, "dpkd": [40.0] * 3}
# (method, eval set) -> (EM p, ROUGE-L p) against sft; synthetic-para only by ROUGE-L
P_VALUES = {
    ("kd", "synthetic-id"): (0.01, 0.2),
    ("kd", "synthetic-long"): (0.2, 0.4),
    ("kd", "synthetic-para"): (0.3, 0.03),
    ("dpkd", "synthetic-id"): (0.001, 0.5),
    ("dpkd", "synthetic-long"): (0.04, 0.5),
    ("dpkd", "synthetic-para"): (0.5, 0.5),
}


@pytest.fixture(scope="module")
def calibration():
    """benchmarks/calibration.py as a module (its directory on sys.path, for benchkit)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("calibration", BENCHMARKS / "calibration.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("calibration", None)
        sys.path.remove(str(BENCHMARKS))


# method -> (EM tier letters, EM rank, rank interval): dpkd and sft apart, kd tied with both
TIERS = {"dpkd": ("a", 1, (1, 2)), "kd": ("ab", 2, (1, 3)), "sft": ("b", 3, (2, 3))}


def board_row(method: str, eval_set: str, em: float) -> dict:
    reference = method not in ("teacher", "student_init", "sft")
    em_p, rouge_p = P_VALUES.get((method, eval_set), (math.nan, math.nan))
    row = dict.fromkeys([*LEADERBOARD_COLUMNS, *STATISTICS_COLUMNS], math.nan)
    row.update(method=method, eval_set=eval_set, n_seeds=1 if method == "teacher" else 3)
    row.update(rougeL_mean=em + 10, rougeL_std=1.0, exact_match_mean=em, exact_match_std=1.0)
    row.update(n_examples=200, reference="sft" if reference else "")
    row.update(exact_match_p_vs_reference=em_p, rougeL_p_vs_reference=rouge_p)
    row.update(exact_match_p_adjusted=em_p, rougeL_p_adjusted=rouge_p)  # as if corrected
    if method in TIERS:
        letters, rank, (low, high) = TIERS[method]
        row.update(exact_match_tier=letters, exact_match_rank=rank)
        row.update(exact_match_rank_low=low, exact_match_rank_high=high)
    return row


def fake_run(root: Path, scores: dict, total_s: float = 1500.0, data_seed: int = 0) -> Path:
    """A run directory as the runner leaves it: manifest.json with stage and unit times, and
    leaderboard.csv with the contract and statistics columns (intervals left empty)."""
    rows = [
        board_row(m, s, em) for m, ems in scores.items() for s, em in zip(SETS, ems, strict=True)
    ]
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "leaderboard.csv", index=False, lineterminator="\n")
    methods = [m for m in scores if m not in ("teacher", "student_init")]
    units = {
        f"{m}/seed-{k}": {"state": "done", "error": None, "wall_s": 40.0 + k}
        for m in methods
        for k in (1, 2, 3)
    }
    stages = {"data": 3.0, "teacher": 1.0, "student_init": 20.0}
    stages |= {"eval:teacher": 5.0, "eval:student_init": 5.0}
    stages |= {f"unit:{key}": unit["wall_s"] for key, unit in units.items()}
    stages |= {"total": total_s, "report": 4.5}
    RunDir(root).save_manifest(
        {
            "recipe_name": "synthetic",
            "recipe": {"name": "synthetic", "data": {"seed": data_seed}},
            "methods": methods,
            "seeds": [1, 2, 3],
            "eval_sets": SETS,
            "stage_times": stages,
            "units": units,
        }
    )
    return root


def run_main(calibration, capsys, *argv) -> tuple[int, list[str], str]:
    status = calibration.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def target(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"{name}: ")]
    return line


def test_calibrated_runs_pass_every_target(calibration, capsys, tmp_path):
    first = fake_run(tmp_path / "all", CALIBRATED)
    second = fake_run(tmp_path / "seed1", {**CALIBRATED, "dpkd": [60.0, 40.0, 50.0]}, data_seed=1)
    default = fake_run(tmp_path / "default", CALIBRATED, total_s=480.0)
    status, lines, _ = run_main(
        calibration, capsys, first, "--second", second, "--default-run", default
    )
    assert status == 0
    assert lines[0].startswith("machine cpu=")
    assert target(lines, "teacher_em_id").startswith("teacher_em_id: 80.00 ")
    assert target(lines, "teacher_em_id").endswith("(goal >= 75) PASS")
    assert target(lines, "sft_em_id").endswith("(goal >= 40) PASS")
    assert target(lines, "teacher_minus_sft_em_id").startswith("teacher_minus_sft_em_id: 35.00")
    significant = target(lines, "significant_eval_sets")
    assert significant.startswith("significant_eval_sets: 3 of 3 eval sets")
    assert "EM or ROUGE-L" in significant and significant.endswith("PASS")
    assert "p_vs_sft synthetic-id: 2 of 4 survive; dpkd EM p=0.001; kd EM p=0.01" in lines
    assert "p_vs_sft synthetic-para: 1 of 4 survive; kd ROUGE-L p=0.03" in lines
    assert "tiers synthetic-id EM: a: dpkd, kd | b: kd, sft" in lines
    assert "rank intervals synthetic-id EM (top three): dpkd 1 [1-2]; kd 2 [1-3]; sft 3 [2-3]" in (
        lines
    )
    spread = target(lines, "method_spread_em_id")
    assert spread.startswith("method_spread_em_id: 10.00 EM points on synthetic-id: best dpkd")
    assert target(lines, "kendall_tau").startswith("kendall_tau: 1.000 tau-b over 3 methods")
    assert target(lines, "kendall_tau").endswith("PASS")
    assert "resamples of both runs n/a (a run has no per-example scores)" in target(
        lines, "kendall_tau"
    )
    between = target(lines, "between_tier_agreement")
    assert between.startswith("between_tier_agreement: 1.00 of 1 pairs") and between.endswith(
        "PASS"
    )
    assert target(lines, "default_run_wall_s") == "default_run_wall_s: 484.5 s (goal <= 600) PASS"
    assert any(line.startswith("wall_s run_dir 1504.5 (") for line in lines)
    assert lines[-1] == "summary: 8 PASS, 0 FAIL, 0 SKIP of 8 targets"
    (dpkd_row,) = [line for line in lines if line.startswith("dpkd ")]
    assert dpkd_row.split()[1:] == ["3", "55.00", "36.00", "40.00", "43.67", "29%"]


def test_reversed_ranking_slow_default_run_and_weak_teacher_fail(calibration, capsys, tmp_path):
    weak = {**CALIBRATED, "teacher": [58.0, 50.0, 50.0], "sft": [46.0, 30.0, 35.0]}
    first = fake_run(tmp_path / "all", weak)
    second = fake_run(tmp_path / "seed1", REVERSED, data_seed=1)
    default = fake_run(tmp_path / "default", CALIBRATED, total_s=650.0)
    status, lines, _ = run_main(
        calibration, capsys, first, "--second", second, "--default-run", default
    )
    assert status == 0
    assert target(lines, "teacher_em_id").endswith("FAIL")
    assert target(lines, "sft_em_id").endswith("PASS")
    assert target(lines, "teacher_minus_sft_em_id").startswith("teacher_minus_sft_em_id: 12.00")
    assert target(lines, "teacher_minus_sft_em_id").endswith("FAIL")
    assert target(lines, "method_spread_em_id").startswith("method_spread_em_id: 9.00")
    assert target(lines, "kendall_tau").startswith("kendall_tau: -1.000 ")
    assert target(lines, "kendall_tau").endswith("FAIL")
    assert target(lines, "default_run_wall_s").endswith("FAIL")
    assert target(lines, "between_tier_agreement").startswith("between_tier_agreement: 0.00")
    assert "flipped: sft/dpkd" in "\n".join(lines)
    assert lines[-1] == "summary: 3 PASS, 5 FAIL, 0 SKIP of 8 targets"


def test_without_options_the_run_targets_are_skipped(calibration, capsys, tmp_path):
    status, lines, _ = run_main(calibration, capsys, fake_run(tmp_path / "all", CALIBRATED))
    assert status == 0
    assert target(lines, "kendall_tau").endswith("SKIP")
    assert target(lines, "default_run_wall_s").endswith("SKIP")
    assert target(lines, "between_tier_agreement").endswith("SKIP")
    assert lines[-1] == "summary: 5 PASS, 0 FAIL, 3 SKIP of 8 targets"


def test_kendall_tau_b_by_hand(calibration):
    tau = calibration.kendall_tau_b
    assert tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs (1,2) tied in y only, (1,3) and (2,3) concordant: 2 / sqrt(3 * 2)
    assert tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    assert tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # one discordant pair of 6
    assert math.isnan(tau([1, 1], [1, 2])) and math.isnan(tau([1], [1]))


@pytest.mark.parametrize("breakage", ["no_dir", "no_csv", "no_columns"])
def test_unreadable_input_is_one_error_line(calibration, capsys, tmp_path, breakage):
    root = tmp_path / "run"
    if breakage != "no_dir":
        fake_run(root, CALIBRATED)
    if breakage == "no_csv":
        (root / "leaderboard.csv").unlink()
    if breakage == "no_columns":
        (root / "leaderboard.csv").write_text("method,eval_set\nsft,synthetic-id\n")
    status, lines, err = run_main(calibration, capsys, root)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and str(root) in err
    assert not any(line.startswith("summary:") for line in lines)


def test_reads_the_leaderboard_the_report_writes(calibration, capsys, tmp_path):
    """The p-value columns of a real render are found (fake run of the report's tests)."""
    run = make_run(tmp_path / "run")
    render(run.root)
    status, lines, _ = run_main(calibration, capsys, run.root)
    assert status == 0
    assert any(line.startswith("p_vs_sft dolly: ") and "EM p=" in line for line in lines)
    significant = target(lines, "significant_eval_sets")
    assert "EM or ROUGE-L" in significant and "n/a" not in significant
    assert target(lines, "teacher_em_id").startswith("teacher_em_id: n/a")  # no synthetic-id
