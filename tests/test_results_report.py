"""The results store (atomic files, run directory) and the report rendered from it."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpkd_bench import results
from dpkd_bench.errors import UserError
from dpkd_bench.report import LEADERBOARD_COLUMNS, leaderboard, render
from dpkd_bench.results import (
    RunDir,
    append_jsonl,
    atomic_write_text,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)

SWEEP = "dpkd[beta=0.05,rkl_weight=0]"
EVAL_SETS = ["dolly", "shifted"]
XSS = "<script>alert(1)</script>"
# (method, seed) -> eval set -> (rougeL, exact_match)
SCORES = {
    ("teacher", 1): {"dolly": (40.0, 20.0), "shifted": (30.0, 10.0)},
    ("student_init", 1): {"dolly": (10.0, 2.0), "shifted": (8.0, 1.0)},
    ("kd", 1): {"dolly": (20.0, 5.0), "shifted": (15.0, 4.0)},
    ("kd", 2): {"dolly": (24.0, 7.0), "shifted": (17.0, 6.0)},
    (SWEEP, 1): {"dolly": (26.0, 8.0), "shifted": (18.0, 3.0)},
    (SWEEP, 2): {"dolly": (30.0, 6.0), "shifted": (20.0, 3.0)},
    ("sft", 1): {"dolly": (99.0, 99.0), "shifted": (99.0, 99.0)},  # failed unit: left out
}
LOSS_TERMS = {"kd": ("ce", "kd"), SWEEP: ("ce", "pref", "rkl")}


def write_unit(run: RunDir, method: str, seed: int, scores: dict) -> None:
    unit = run.unit_dir(method, seed)
    evals = {name: {"rougeL": r, "exact_match": em, "n": 4} for name, (r, em) in scores.items()}
    write_json(unit / "metrics.json", {"method": method, "seed": seed, "eval": evals})
    for name in scores:
        records = [
            {
                "id": f"ex{i}",
                "prompt": f"prompt {i} of {name}",
                "references": [f"answer {i}"],
                "predictions": [
                    XSS if (method, seed, i) == (SWEEP, 1, 0) else f"{method} says {i}",
                    "second generation seed",
                ],
                "exact_match": 0.0,
                "rougeL": 50.0,
            }
            for i in range(4)
        ]
        write_jsonl(unit / "generations" / f"{name}.jsonl", records)
    for step in (10, 20) if method in LOSS_TERMS else ():
        terms = {t: 1.0 / step + seed for t in LOSS_TERMS[method]}
        record = {"step": step, "lr": 1e-4, "loss": sum(terms.values()), **terms}
        append_jsonl(unit / "train_log.jsonl", {**record, "tokens_per_s": 9.0, "elapsed_s": 1.0})


def make_run(root: Path) -> RunDir:
    run = RunDir(root)
    run.save_manifest(
        {
            "recipe_name": "fake-recipe",
            "recipe": {"name": "fake-recipe", "note": "<b>not bold</b>"},
            "methods": ["kd", SWEEP, "sft"],
            "seeds": [1, 2],
            "eval_sets": EVAL_SETS,
            "versions": {"dpkd_bench": "0.1.0"},
            "git_commit": None,
            "data_hashes": {"train": "abc"},
            "started": "2026-01-01T00:00:00+00:00",
            "finished": None,
            "stage_times": {},
            "units": {},
        }
    )
    for (method, seed), scores in SCORES.items():
        write_unit(run, method, seed, scores)
        run.update_unit(method, seed, state="done", error=None, wall_s=1.0)
    run.update_unit("sft", 1, state="failed", error="RuntimeError: boom")
    return run


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run")


# ---- results store -------------------------------------------------------------------------
def test_atomic_writes_leave_no_temp_files(tmp_path: Path, monkeypatch):
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    write_json(tmp_path / "b.json", {"x": "ü", "y": [1, 2]})
    write_json(tmp_path / "b.json", {"x": "again"})
    write_jsonl(tmp_path / "c.jsonl", [{"i": 1}, [2, 3]])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.json", "c.jsonl", "sub"]
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert read_json(tmp_path / "b.json") == {"x": "again"}
    assert '"x": "again"' in (tmp_path / "b.json").read_text(encoding="utf-8")  # indent=2
    assert read_jsonl(tmp_path / "c.jsonl") == [{"i": 1}, [2, 3]]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json(tmp_path / "b.json", {"x": "lost"})
    assert read_json(tmp_path / "b.json") == {"x": "again"}
    assert sorted(os.listdir(tmp_path)) == ["b.json", "c.jsonl", "sub"]


def test_read_jsonl_names_file_and_line_of_a_bad_record(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n{not json\n")
    with pytest.raises(UserError, match=r"log\.jsonl line 3 is not valid JSON"):
        read_jsonl(path)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", "x..y", ".hidden", ""])
def test_unit_dir_rejects_names_that_leave_runs(tmp_path: Path, name: str):
    with pytest.raises(UserError, match="cannot be used as a run directory name"):
        RunDir(tmp_path).unit_dir(name, 1)


def test_unit_dir_accepts_sweep_variant_names(tmp_path: Path):
    path = RunDir(tmp_path).unit_dir(SWEEP, 3)
    assert path == tmp_path / "runs" / SWEEP / "seed-3"


def test_manifest_units_and_completed_units(run: RunDir):
    run.update_unit("kd", 1, state="running")
    assert run.load_manifest()["units"]["kd/seed-1"] == {
        "state": "running",
        "error": None,
        "wall_s": 1.0,
    }
    assert set(run.completed_units()) == set(SCORES)
    assert RunDir(run.root / "nowhere").completed_units() == []


def test_load_manifest_outside_a_run_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError) as err:
        RunDir(tmp_path).load_manifest()
    assert str(err.value) == (
        f"{tmp_path} is not a dpkd-bench run directory (no manifest.json); "
        "pass the --out directory of a `dpkd-bench run`"
    )


# ---- leaderboard ---------------------------------------------------------------------------
def test_leaderboard_columns_order_and_values(run: RunDir):
    board = leaderboard(run)
    assert list(board.columns) == LEADERBOARD_COLUMNS
    methods = ["teacher", "student_init", "kd", SWEEP]
    assert list(zip(board.method, board.eval_set, strict=True)) == [
        (m, e) for m in methods for e in EVAL_SETS
    ]
    row = board.set_index(["method", "eval_set"])
    kd = row.loc[("kd", "dolly")]
    assert kd.n_seeds == 2
    assert kd.rougeL_mean == pytest.approx(22.0)
    assert kd.rougeL_std == pytest.approx(math.sqrt(8.0))  # ddof=1: (4 + 4) / 1
    assert kd.exact_match_mean == pytest.approx(6.0)
    assert kd.exact_match_std == pytest.approx(math.sqrt(2.0))
    assert row.loc[(SWEEP, "shifted")].exact_match_std == 0.0
    teacher = row.loc[("teacher", "dolly")]
    assert teacher.n_seeds == 1 and teacher.rougeL_mean == 40.0
    assert math.isnan(teacher.rougeL_std) and math.isnan(teacher.exact_match_std)


def test_leaderboard_markdown_bolds_best_student_and_marks_single_seed(run: RunDir):
    render(run.root)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "fake-recipe" in md.splitlines()[0]
    board_md = md.split("## Ablation")[0]
    lines = {
        line.split(" | ")[0].strip("|* "): line for line in board_md.splitlines() if "|" in line
    }
    assert "## Ablation: dpkd" in md
    assert "*40.00 ± n/a*" in lines["teacher"] and "**" not in lines["teacher"]
    assert "**" not in lines["student_init"]
    # dolly ROUGE-L, dolly EM, shifted ROUGE-L, shifted EM
    sweep_cells = lines[SWEEP].split(" | ")[2:]
    kd_cells = lines["kd"].split(" | ")[2:]
    assert sweep_cells[0] == "**28.00 ± 2.83**" and sweep_cells[1] == "**7.00 ± 1.41**"
    assert sweep_cells[2] == "**19.00 ± 1.41**" and sweep_cells[3].startswith("3.00 ± 0.00")
    assert kd_cells[3].startswith("**5.00 ± 1.41**") and kd_cells[0] == "22.00 ± 2.83"
    assert "sft" not in lines and "sft/seed-1: failed (RuntimeError: boom)" in md


# ---- rendered files ------------------------------------------------------------------------
def test_render_writes_self_contained_escaped_html(run: RunDir):
    paths = render(run.root)
    names = {p.relative_to(run.root).as_posix() for p in paths}
    assert {"leaderboard.csv", "leaderboard.md", "report.html"} <= names
    assert {"plots/scores_dolly.png", "plots/scores_shifted.png"} <= names
    assert "plots/training_curves.png" in names
    assert all(p.is_file() for p in paths)
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    assert html_escaped(XSS) in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page  # manifest is escaped too
    assert html_escaped(SWEEP) in page or SWEEP in page
    assert "Sample generations" in page and "prompt 2 of shifted" in page
    assert "prompt 3 of shifted" not in page  # three examples per eval set


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_render_is_idempotent(run: RunDir):
    render(run.root)
    first = {name: (run.root / name).read_bytes() for name in ("leaderboard.csv", "report.html")}
    render(run.root)
    assert {name: (run.root / name).read_bytes() for name in first} == first


def test_render_without_train_logs_skips_training_plot_and_drops_stale_one(run: RunDir):
    render(run.root)
    assert (run.plots_dir / "training_curves.png").is_file()
    for log in run.runs_dir.rglob("train_log.jsonl"):
        log.unlink()
    paths = render(run.root)
    assert not (run.plots_dir / "training_curves.png").exists()
    assert run.plots_dir / "scores_dolly.png" in paths


def test_render_outside_a_run_is_a_user_error(tmp_path: Path, capsys):
    from dpkd_bench.cli import main

    with pytest.raises(UserError, match="is not a dpkd-bench run directory"):
        render(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path} is not a dpkd-bench run")


def test_report_module_does_not_import_torch():
    code = "import sys, dpkd_bench.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_render_with_no_finished_units_writes_empty_tables(tmp_path: Path):
    run = RunDir(tmp_path)
    run.save_manifest({"recipe_name": "r", "methods": ["kd"], "units": {"kd/seed-1": {}}})
    render(tmp_path)
    assert (tmp_path / "leaderboard.csv").read_text().strip() == ",".join(LEADERBOARD_COLUMNS)
    assert "No finished units yet." in (tmp_path / "leaderboard.md").read_text(encoding="utf-8")


def test_metrics_without_eval_scores_is_a_user_error_naming_the_file(run: RunDir):
    write_json(run.unit_dir("kd", 2) / "metrics.json", {"method": "kd", "seed": 2})
    with pytest.raises(UserError, match=r"seed-2/metrics\.json does not follow"):
        leaderboard(run)
