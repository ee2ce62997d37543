"""The results store (atomic files, run directory) and the report rendered from it."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dpkd_bench import results
from dpkd_bench.errors import UserError
from dpkd_bench.report import (
    DEV_COLUMNS,
    GAP_COLUMNS,
    LEADERBOARD_COLUMNS,
    STATISTICS_COLUMNS,
    leaderboard,
    render,
)
from dpkd_bench.results import (
    REFERENCE_ROWS,
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
N_EXAMPLES = 12
# Per-example scores are the unit's mean plus these offsets (mean 0), so that the bootstrap
# intervals surround the metrics.json means and paired differences are constant per unit.
OFFSETS = [-5.5 + i for i in range(N_EXAMPLES)]
# (method, seed) -> eval set -> (rougeL, exact_match)
SCORES = {
    ("teacher", 1): {"dolly": (40.0, 20.0), "shifted": (30.0, 10.0)},
    ("student_init", 1): {"dolly": (10.0, 2.0), "shifted": (8.0, 1.0)},
    ("sft", 1): {"dolly": (12.0, 2.0), "shifted": (9.0, 2.0)},
    ("sft", 2): {"dolly": (14.0, 4.0), "shifted": (11.0, 4.0)},
    ("kd", 1): {"dolly": (20.0, 5.0), "shifted": (15.0, 4.0)},
    ("kd", 2): {"dolly": (24.0, 7.0), "shifted": (17.0, 6.0)},
    (SWEEP, 1): {"dolly": (26.0, 8.0), "shifted": (18.0, 3.0)},
    (SWEEP, 2): {"dolly": (30.0, 6.0), "shifted": (20.0, 3.0)},
    ("tvd", 1): {"dolly": (99.0, 99.0), "shifted": (99.0, 99.0)},  # failed unit: left out
}
LOSS_TERMS = {"kd": ("ce", "kd"), SWEEP: ("ce", "pref", "rkl")}
# Trained units: sequences through the teacher's forward, as metrics.json "train" records them.
TEACHER_FORWARDS = {"sft": 0, "kd": 160, SWEEP: 480, "tvd": 160}


def generation_records(method: str, seed: int, name: str, rouge: float, em: float) -> list:
    return [
        {
            "id": f"ex{i}",
            "prompt": f"prompt {i} of {name}",
            "references": [f"answer {i}"],
            "predictions": [
                XSS if (method, seed, i) == (SWEEP, 1, 0) else f"{method} says {i}",
                "second generation seed",
            ],
            "exact_match": em + offset,
            "rougeL": rouge + offset,
        }
        for i, offset in enumerate(OFFSETS)
    ]


def write_unit(run: RunDir, method: str, seed: int, scores: dict) -> None:
    unit = run.unit_dir(method, seed)
    evals = {
        name: {"rougeL": r, "exact_match": em, "n": N_EXAMPLES} for name, (r, em) in scores.items()
    }
    metrics = {"method": method, "seed": seed, "eval": evals}
    if method in TEACHER_FORWARDS:
        forwards = TEACHER_FORWARDS[method]
        train = {"steps": 20, "wall_s": 3.0 + seed, "tokens": 1000, "teacher_forwards": forwards}
        metrics["train"] = train
    write_json(unit / "metrics.json", metrics)
    for name, (rouge, em) in scores.items():
        records = generation_records(method, seed, name, rouge, em)
        write_jsonl(unit / "generations" / f"{name}.jsonl", records)
    for step in (10, 20) if method in LOSS_TERMS else ():
        terms = {t: 1.0 / step + seed for t in LOSS_TERMS[method]}
        record = {"step": step, "lr": 1e-4, "loss": sum(terms.values()), **terms}
        append_jsonl(unit / "train_log.jsonl", {**record, "tokens_per_s": 9.0, "elapsed_s": 1.0})


def make_run(root: Path, scores: dict | None = None, **recipe) -> RunDir:
    scores = SCORES if scores is None else scores
    run = RunDir(root)
    methods = list(dict.fromkeys(m for m, _ in scores if m not in REFERENCE_ROWS))
    eval_sets = list(dict.fromkeys(e for unit in scores.values() for e in unit))
    run.save_manifest(
        {
            "recipe_name": "fake-recipe",
            "recipe": {
                "name": "fake-recipe",
                "note": "<b>not bold</b>",
                "train": {"batch_size": 4, "grad_accum": 2},
                **recipe,
            },
            "methods": methods,
            "seeds": [1, 2],
            "eval_sets": eval_sets,
            "versions": {"dpkd_bench": "0.1.0"},
            "git_commit": None,
            "data_hashes": {"train": "abc"},
            "started": "2026-01-01T00:00:00+00:00",
            "finished": None,
            "stage_times": {},
            "units": {},
        }
    )
    for (method, seed), unit_scores in scores.items():
        write_unit(run, method, seed, unit_scores)
        run.update_unit(method, seed, state="done", error=None, wall_s=1.0)
    if ("tvd", 1) in scores:
        run.update_unit("tvd", 1, state="failed", error="RuntimeError: boom")
    return run


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[RunDir, list[Path]]:
    """The fake run rendered once, for tests that only read the output."""
    run = make_run(tmp_path_factory.mktemp("rendered") / "run")
    return run, render(run.root)


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
    methods = ["teacher", "student_init", "sft", "kd", SWEEP]
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


def test_leaderboard_markdown_bolds_best_student_marks_single_seed_and_significance(rendered):
    run, _ = rendered
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "fake-recipe" in md.splitlines()[0]
    board_md = md.split("## Ranks and tiers")[0]
    lines = {
        line.split(" | ")[0].strip("|* "): line for line in board_md.splitlines() if "|" in line
    }
    assert "## Ablation: dpkd" in md
    assert "*40.00 ± n/a*" in lines["teacher"] and "**" not in lines["teacher"]
    assert "**" not in lines["student_init"]
    # dolly ROUGE-L, dolly EM, shifted ROUGE-L, shifted EM
    sweep_cells = lines[SWEEP].split(" | ")[2:]
    kd_cells = lines["kd"].split(" | ")[2:]
    # Two seeds give the seed term one degree of freedom: only differences with no spread over
    # seeds at all (kd's EM, the shifted set) pass Holm. Bold: alone in the top tier only;
    # on dolly ROUGE-L sft shares tier a with the sweep (2 seeds cannot separate them).
    assert sweep_cells[0] == "28.00 ± 2.83" and sweep_cells[2] == "**19.00 ± 1.41**†"
    assert sweep_cells[3] == "3.00 ± 0.00 |"  # equals sft's example by example
    assert kd_cells[0] == "22.00 ± 2.83" and kd_cells[1] == "6.00 ± 1.41†"
    assert "†" not in lines["sft"]  # the reference itself
    assert "†" not in lines["teacher"]  # raw p 0.024, not below 0.05 after Holm over 16
    assert "† differs from sft at Holm-adjusted p < 0.05 (Holm over the 16 comparisons" in md
    assert "Test: two-level t-test over training seeds and examples" in md
    ranks = md.split("## Ranks and tiers")[1].split("## Gap closed")[0]
    assert "| kd | 2 [2–2] b | 2 [1–2] a | 2 [2–2] b | 1 [1–1] a |" in ranks
    assert "tvd" not in lines and "tvd/seed-1: failed (RuntimeError: boom)" in md


def test_csv_keeps_the_contract_columns_first_and_appends_intervals_and_tests(rendered):
    run, _ = rendered
    board = pd.read_csv(run.root / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert list(board.columns) == (
        LEADERBOARD_COLUMNS + STATISTICS_COLUMNS + DEV_COLUMNS + GAP_COLUMNS
    )
    row = board.set_index(["method", "eval_set"])
    kd = row.loc[("kd", "dolly")]
    assert kd.n_examples == N_EXAMPLES and kd.reference == "sft"
    assert kd.rougeL_ci_low < kd.rougeL_mean < kd.rougeL_ci_high
    assert kd.exact_match_ci_low < kd.exact_match_mean < kd.exact_match_ci_high
    assert 0.05 < kd.rougeL_p_vs_reference < kd.rougeL_p_adjusted <= 1  # two seeds: df 1
    assert kd.rougeL_test == "seeds (paired) + examples"
    assert row.loc[("teacher", "dolly")].rougeL_test == "seeds + examples"  # one fixed model
    assert row.loc[(SWEEP, "shifted")].exact_match_p_vs_reference == 1.0
    assert kd.rougeL_tier == "b" and kd.rougeL_rank == 2
    sft = row.loc[("sft", "dolly")]
    assert math.isnan(sft.rougeL_p_vs_reference) and math.isnan(sft.reference)
    teacher = row.loc[("teacher", "dolly")]
    assert math.isnan(teacher.rougeL_std)  # one seed: empty cell, never 0
    line = (run.root / "leaderboard.csv").read_text(encoding="utf-8").splitlines()[1]
    assert line.startswith("teacher,dolly,1,40.0,,20.0,,12,")


def test_without_the_reference_method_there_are_no_markers(tmp_path: Path):
    scores = {unit: values for unit, values in SCORES.items() if unit[0] != "sft"}
    run = make_run(tmp_path / "run", scores)
    render(run.root)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "†" not in md
    assert "No significance markers: the reference method 'sft' has no scores" in md
    board = pd.read_csv(run.root / "leaderboard.csv")
    assert board["rougeL_p_vs_reference"].isna().all()
    assert board["rougeL_ci_low"].notna().all()


# ---- gap recovered -------------------------------------------------------------------------
# teacher 80, sft 40, method 60 on ROUGE-L: half the gap; exact match: teacher equals sft.
GAP_SCORES = {
    ("teacher", 1): {"dolly": (80.0, 20.0)},
    ("sft", 1): {"dolly": (40.0, 20.0)},
    ("kd", 1): {"dolly": (60.0, 30.0)},
}


def read_board(run: RunDir) -> pd.DataFrame:
    board = pd.read_csv(run.root / "leaderboard.csv", keep_default_na=False, na_values=[""])
    return board.set_index(["method", "eval_set"])


def test_csv_contract_columns_come_first_and_gap_columns_last(rendered):
    run, _ = rendered
    header = (run.root / "leaderboard.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    contract = ["method", "eval_set", "n_seeds", "rougeL_mean", "rougeL_std"]
    assert header[:7] == [*contract, "exact_match_mean", "exact_match_std"]
    assert header[-6:] == [
        "rougeL_gap_recovered",
        "rougeL_gap_recovered_lo",
        "rougeL_gap_recovered_hi",
        "exact_match_gap_recovered",
        "exact_match_gap_recovered_lo",
        "exact_match_gap_recovered_hi",
    ]
    assert header == LEADERBOARD_COLUMNS + STATISTICS_COLUMNS + DEV_COLUMNS + GAP_COLUMNS


def test_gap_recovered_is_the_share_of_the_teacher_sft_gap(tmp_path: Path):
    run = make_run(tmp_path / "run", GAP_SCORES)
    # kd's examples in another order than sft's and the teacher's: a non-degenerate interval
    records = read_jsonl(run.unit_dir("kd", 1) / "generations" / "dolly.jsonl")
    for record, offset in zip(records, reversed(OFFSETS), strict=True):
        record["rougeL"] = 60.0 + offset
    write_jsonl(run.unit_dir("kd", 1) / "generations" / "dolly.jsonl", records)
    render(run.root)
    row = read_board(run)
    kd = row.loc[("kd", "dolly")]
    assert kd.rougeL_gap_recovered == pytest.approx(0.5)
    assert kd.rougeL_gap_recovered_lo < 0.5 < kd.rougeL_gap_recovered_hi
    assert kd.rougeL_gap_recovered_hi - kd.rougeL_gap_recovered_lo < 0.5
    assert row.loc[("teacher", "dolly")].rougeL_gap_recovered == 1.0
    assert row.loc[("sft", "dolly")].rougeL_gap_recovered == 0.0
    gap_em = [c for c in GAP_COLUMNS if c.startswith("exact_match")]
    assert row[gap_em].isna().all().all()  # teacher == sft: no gap, empty, never inf
    line = (run.root / "leaderboard.csv").read_text(encoding="utf-8").splitlines()[-1]
    assert line.startswith("kd,dolly,1,60.0,")
    assert line.endswith(",,,")  # the exact-match gap cells are empty
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split("## Gap closed (ROUGE-L)")[1]
    assert "(method − sft) / (teacher − sft)" in section
    assert re.search(r"\| kd \| 1 \| 50% \[\d+, \d+\] \|", section)
    assert "| sft |" not in section and "| *teacher* |" not in section  # 0% and 100%
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert "<h2>Gap closed (ROUGE-L)</h2>" in page and '<table class="gap">' in page
    assert re.search(r'<td class="num">50%<br><span class="ci">\[\d+, \d+\]</span>', page)
    tex = (run.root / "leaderboard.tex").read_text(encoding="utf-8")
    assert re.search(r"kd & 1 & 50\\% \{\[\}\d+, \d+\{\]\} \\\\", tex)
    assert "−" not in tex


def test_gap_of_the_fixture_run_in_markdown(rendered):
    run, _ = rendered
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split("## Gap closed (ROUGE-L)")[1].split("\n## ")[0]
    assert "| method | seeds | dolly | shifted |" in section
    # (22-13)/(40-13), (16-10)/20; the examples' offsets are constant, the seeds' spread is not
    assert "| kd | 2 | 33% [23, 43] | 30% [21, 38] |" in section
    assert "| *student_init* | 1 | *-11% [-15, -7]* | *-10% [-16, -5]* |" in section


@pytest.mark.parametrize("missing", ["sft", "teacher"])
def test_gap_recovered_is_empty_without_sft_or_teacher(tmp_path: Path, missing: str):
    scores = {unit: values for unit, values in SCORES.items() if unit[0] != missing}
    run = make_run(tmp_path / "run", scores)
    render(run.root)
    assert read_board(run)[GAP_COLUMNS].isna().all().all()
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Gap closed" not in md
    assert f"No gap-closed table: this run has no '{missing}' scores" in md
    tex = (run.root / "leaderboard.tex").read_text(encoding="utf-8")
    assert tex.count(r"\begin{table}") == 1


def test_gap_cells_are_dashes_where_teacher_equals_sft(tmp_path: Path):
    same = {unit: {"dolly": values["dolly"]} for unit, values in GAP_SCORES.items()}
    same[("teacher", 1)] = {"dolly": (40.0, 20.0)}
    run = make_run(tmp_path / "run", same)
    render(run.root)
    assert read_board(run)[GAP_COLUMNS].isna().all().all()
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "| kd | 1 | — |" in md.split("## Gap closed")[1]


# ---- smoke-test recipes --------------------------------------------------------------------
SMOKE = "Smoke test: recipe '{}' is a smoke-test recipe, too small to rank methods; its numbers"


def rename_recipe(run: RunDir, name: str) -> None:
    manifest = run.load_manifest()
    manifest["recipe_name"] = manifest["recipe"]["name"] = name
    run.save_manifest(manifest)


@pytest.mark.parametrize("how", ["name", "flag"])
def test_smoke_recipes_carry_a_banner_at_the_top(tmp_path: Path, how: str):
    if how == "flag":
        run, name = make_run(tmp_path / "run", GAP_SCORES, smoke=True), "fake-recipe"
    else:
        run, name = make_run(tmp_path / "run", GAP_SCORES), "synthetic-quick"
        rename_recipe(run, name)
    render(run.root)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert md[2].startswith("> **" + SMOKE.format(name))
    assert md[2].endswith("carry no meaning.**")
    page = (run.root / "report.html").read_text(encoding="utf-8")
    banner = '<p class="smoke">' + SMOKE.format(name).replace("'", "&#x27;")
    assert banner in page
    assert page.index(banner) < page.index("<h2>Leaderboard</h2>")
    tex = (run.root / "leaderboard.tex").read_text(encoding="utf-8")
    assert r"\caption{Smoke test: recipe" in tex


def test_other_recipes_have_no_smoke_banner(rendered, tmp_path: Path):
    pages = [(rendered[0].root / n).read_text(encoding="utf-8") for n in ("leaderboard.md",)]
    run = make_run(tmp_path / "run", GAP_SCORES, smoke=False)
    rename_recipe(run, "synthetic-default")
    render(run.root)
    pages += [(run.root / n).read_text(encoding="utf-8") for n in ("leaderboard.md",)]
    pages += [(d / "report.html").read_text(encoding="utf-8") for d in (rendered[0].root, run.root)]
    assert not any("Smoke test" in page or 'class="smoke"' in page for page in pages)


# ---- rendered files ------------------------------------------------------------------------
def test_render_writes_self_contained_escaped_html(rendered):
    run, paths = rendered
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
    assert "Sample generations" in page and "prompt 4 of shifted" in page
    assert "prompt 5 of shifted" not in page  # five examples per eval set
    sample = page.split("prompt 0 of dolly")[1].split("</table>")[0]
    assert '<tr class="ref"><td>reference 1</td><td class="text">answer 0</td></tr>' in sample
    assert f'<td class="text">{html_escaped(XSS)}</td>' in sample  # output escaped, not run
    assert '<span class="ci">[' in page  # bootstrap intervals in the leaderboard
    assert "Error bars: sample std over training seeds (sft, kd, " in page
    assert "95% bootstrap interval over examples, one training seed (teacher, " in page


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


def test_report_modules_name_no_method():
    """The report asks dpkd_bench.methods (REFERENCE_METHOD) instead of naming a method."""
    import dpkd_bench.report
    from dpkd_bench.methods import METHODS

    for path in Path(dpkd_bench.report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = set(re.findall(r"[\w-]+", node.value)) & set(METHODS)  # not dpkd-bench
                assert not named, f"{path.name} names {named} in {node.value!r}"


def test_render_with_no_finished_units_writes_empty_tables(tmp_path: Path):
    run = RunDir(tmp_path)
    run.save_manifest({"recipe_name": "r", "methods": ["kd"], "units": {"kd/seed-1": {}}})
    render(tmp_path)
    header = (tmp_path / "leaderboard.csv").read_text().strip()
    assert header == ",".join(LEADERBOARD_COLUMNS + STATISTICS_COLUMNS + DEV_COLUMNS + GAP_COLUMNS)
    assert "No finished units yet." in (tmp_path / "leaderboard.md").read_text(encoding="utf-8")


def test_metrics_without_eval_scores_is_a_user_error_naming_the_file(run: RunDir):
    write_json(run.unit_dir("kd", 2) / "metrics.json", {"method": "kd", "seed": 2})
    with pytest.raises(UserError, match=r"seed-2/metrics\.json does not follow"):
        leaderboard(run)


# ---- LaTeX ---------------------------------------------------------------------------------
def test_latex_table_is_booktabs_with_escaped_names_and_bold_best(rendered):
    run, paths = rendered
    assert run.root / "leaderboard.tex" in paths
    tex = (run.root / "leaderboard.tex").read_text(encoding="utf-8")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrr}"):
        assert command in tex
    assert r"\multicolumn{2}{c}{dolly}" in tex and r"\cmidrule(lr){3-4}" in tex
    board = tex.split(r"\end{table}")[0]  # the gap-closed table follows
    rows = {line.split(" & ")[0]: line for line in board.splitlines() if line.endswith(r"\\")}
    sweep = r"dpkd{[}beta=0.05,rkl\_weight=0{]}"
    assert rows[sweep].startswith(sweep + r" & 2 & 28.00 $\pm$ 2.83 & ")
    assert r"\textbf{19.00 $\pm$ 1.41}$^{\dagger}$" in rows[sweep]
    assert r"\textit{student\_init}" in rows and r"\textit{40.00 $\pm$ n/a}" in tex
    assert rows["sft"].count(r"\dagger") == 0
    assert r"\caption{fake-recipe: Mean $\pm$ sample std" in tex
    body = tex.replace(r"\_", "").replace(r"\{", "").replace(r"\}", "")
    assert "_" not in body and "±" not in body and "†" not in body


def test_latex_escapes_every_special_character():
    from dpkd_bench.report import latex_text

    assert latex_text("a_b&c%d$e#f{g}h~i^j\\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    assert latex_text("[x]  <y>") == r"{[}x{]} $<$y$>$"


# ---- training cost -------------------------------------------------------------------------
def cost_caption(run: RunDir) -> str:
    page = (run.root / "report.html").read_text(encoding="utf-8")
    return page.split("against the training cost")[1].split("</figcaption>")[0]


def test_score_against_cost_plot_shows_the_recorded_teacher_forwards(rendered):
    from dpkd_bench.report import load_run, training_costs

    run, _ = rendered
    costs = training_costs(load_run(run)).set_index(["method", "seed"])
    assert list(costs.columns) == ["steps", "wall_s", "teacher_forwards"]
    assert costs.at[("kd", 1), "teacher_forwards"] == 160
    assert costs.at[(SWEEP, 2), "teacher_forwards"] == 480
    assert costs.at[("sft", 1), "teacher_forwards"] == 0
    assert costs.at[("kd", 2), "wall_s"] == 5.0
    assert (run.plots_dir / "score_vs_cost.png").is_file()
    assert cost_caption(run).endswith("(mean over seeds; references excluded). (score_vs_cost.png)")


def test_units_run_before_teacher_forwards_were_recorded_show_no_value(run: RunDir):
    from dpkd_bench.report import NO_VALUE, load_run, training_costs

    for method, seed in (("sft", 1), ("sft", 2), ("kd", 1)):
        path = run.unit_dir(method, seed) / "metrics.json"
        metrics = read_json(path)
        del metrics["train"]["teacher_forwards"]
        write_json(path, metrics)
    costs = training_costs(load_run(run)).set_index(["method", "seed"])
    assert math.isnan(costs.at[("sft", 1), "teacher_forwards"])  # no estimate, not even 0
    assert math.isnan(costs.at[("kd", 1), "teacher_forwards"])
    assert costs.at[("kd", 2), "teacher_forwards"] == 160
    render(run.root)
    caption = cost_caption(run)
    assert f"Teacher forwards not recorded ({NO_VALUE}; " in caption
    assert caption.endswith(": sft/seed-1, sft/seed-2, kd/seed-1. (score_vs_cost.png)")


# ---- teacher fidelity ----------------------------------------------------------------------
def fidelity_file(kl: float, agreement: float, ratio: float | None) -> dict:
    figures = {
        "kl_teacher_student": kl,
        "kl_student_teacher": kl / 2,
        "top1_agreement": agreement,
        "length_ratio": ratio,
        "n_tokens": 40,
        "n_examples": N_EXAMPLES,
    }
    return {"length_unit": "words", "eval": {"dolly": figures}}


def test_fidelity_table_is_rendered_when_fidelity_files_exist(rendered, run: RunDir):
    md = (rendered[0].root / "leaderboard.md").read_text(encoding="utf-8")
    assert "Teacher fidelity" not in md and "Published results" not in md
    write_json(run.unit_dir("kd", 1) / "fidelity.json", fidelity_file(0.5, 0.7, 1.2))
    write_json(run.unit_dir("kd", 2) / "fidelity.json", fidelity_file(0.7, 0.9, None))
    write_json(run.unit_dir(SWEEP, 1) / "fidelity.json", fidelity_file(0.25, 0.75, 0.8))
    render(run.root)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split("## Teacher fidelity")[1].split("\n## ")[0]
    assert "| method | eval set | seeds | KL(teacher‖student) | KL(student‖teacher) |" in section
    assert "| kd | dolly | 2 | 0.600 | 0.300 | 0.800 | 1.200 |" in section  # NaN ratio skipped
    assert f"| {SWEEP.replace('|', '')} | dolly | 1 | 0.250 | 0.125 | 0.750 | 0.800 |" in section
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert '<table class="fidelity">' in page and "<td>0.600</td>" in page


def test_a_malformed_fidelity_file_is_a_user_error(run: RunDir):
    write_json(run.unit_dir("kd", 1) / "fidelity.json", {"kl": 1})
    with pytest.raises(UserError, match=r"seed-1/fidelity\.json does not follow"):
        render(run.root)


# ---- published baselines -------------------------------------------------------------------
PAPER_SCORES = {
    ("teacher", 1): {"dolly": (26.0, 3.0), "self-inst": (13.0, 1.0), "sinst": (25.0, 2.0)},
    ("student_init", 1): {"dolly": (20.0, 1.0), "self-inst": (9.0, 0.0), "sinst": (14.0, 1.0)},
    ("sft", 1): {"dolly": (22.0, 1.0), "self-inst": (10.0, 0.0), "sinst": (15.0, 1.0)},
    ("dpkd", 1): {"dolly": (23.0, 1.0), "self-inst": (12.0, 0.0), "sinst": (20.0, 1.0)},
    ("dpkd", 2): {"dolly": (25.0, 1.0), "self-inst": (12.0, 0.0), "sinst": (22.0, 1.0)},
}


def test_published_numbers_are_shown_beside_the_measured_ones(tmp_path: Path):
    run = make_run(tmp_path / "run", PAPER_SCORES, replicates="dpkd-2024/gpt2-1.5b-to-120m")
    render(run.root)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split("## Published results: dpkd-2024/gpt2-1.5b-to-120m")[1].split("\n## ")[0]
    assert "arXiv:2406.19774v2; Table 1" in section
    header = "| method | DollyEval published | dolly measured | SelfInst published |"
    assert header in section
    assert "| dpkd | 24.6 | 24.0 ± 1.4 | 13.8 | 12.0 ± 0.0 | 25.4 | 21.0 ± 1.4 |" in section
    assert "| teacher | 27.6 | 26.0 ± n/a | 14.3 | 13.0 ± n/a | 27.6 | 25.0 ± n/a |" in section
    assert "| minillm | 24.6 | — | 13.2 | — | 25.3 | — |" in section
    assert "| akl | 23.9 | — | not reported | — | 19.2 | — |" in section
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert '<table class="baselines">' in page and "<td>24.0 ± 1.4</td>" in page


def test_a_recipe_naming_an_unknown_setting_gets_a_note(tmp_path: Path):
    unknown = make_run(tmp_path / "unknown", PAPER_SCORES, replicates="dpkd-2024/gpt2-9b")
    render(unknown.root)
    md = (unknown.root / "leaderboard.md").read_text(encoding="utf-8")
    assert "The recipe replicates 'dpkd-2024/gpt2-9b', but no baselines/<file>.yaml" in md


def test_baseline_files_hold_numbers_with_their_source():
    from dpkd_bench.report import BASELINES_DIR

    files = sorted(
        (path for path in BASELINES_DIR.iterdir() if path.name.endswith(".yaml")),
        key=lambda path: path.name,
    )
    assert files, "baselines/*.yaml missing"
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["source"]["citation"] and data["source"]["url"]
        columns = data["columns"]
        for name, setting in data["settings"].items():
            for method, scores in setting["scores"].items():
                assert set(scores) == set(columns), (path.name, name, method)
                for value in scores.values():
                    assert value is None or 0 <= value <= 100
    dpkd = yaml.safe_load((BASELINES_DIR / "dpkd-2024.yaml").read_text(encoding="utf-8"))
    assert set(dpkd["settings"]) == {"gpt2-1.5b-to-120m", "gpt2-1.5b-to-340m", "opt-13b-to-1.3b"}
    for setting in dpkd["settings"].values():
        assert {"teacher", "sft", "kd", "seqkd", "minillm", "dpkd"} <= set(setting["scores"])
