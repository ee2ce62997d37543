"""End to end: `dpkd-bench run --recipe synthetic-quick`, the leaderboard, report and CLI."""

from __future__ import annotations

import json
import os
from unittest import mock

import pandas as pd
import pytest

from dpkd_bench.cli import main

CONTRACT = [
    "method",
    "eval_set",
    "n_seeds",
    "rougeL_mean",
    "rougeL_std",
    "exact_match_mean",
    "exact_match_std",
]
METHODS = ["sft", "kd", "dpkd_token", "dpkd"]
EVAL_SETS = ["synthetic-id", "synthetic-long", "synthetic-para"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    # the session's cache (a module fixture runs before the autouse one sets it)
    cache = {"DPKD_BENCH_CACHE": str(tmp_path_factory.getbasetemp() / "dpkd-cache")}
    with mock.patch.dict(os.environ, cache):
        assert main(["run", "--recipe", "synthetic-quick", "--out", str(out)]) == 0
    return out


def test_leaderboard_schema_and_rows(quick_run):
    board = pd.read_csv(quick_run / "leaderboard.csv")
    assert list(board.columns)[: len(CONTRACT)] == CONTRACT  # extra columns come after
    assert list(board["method"].unique()) == ["teacher", "student_init", *METHODS]
    assert set(board["eval_set"]) == set(EVAL_SETS)
    assert len(board) == (2 + len(METHODS)) * len(EVAL_SETS)
    assert (board["n_seeds"] == 1).all()
    assert board["rougeL_std"].isna().all()  # one seed: no std, never 0
    assert board["rougeL_mean"].between(0, 100).all()


def test_run_directory_layout(quick_run):
    manifest = json.loads((quick_run / "manifest.json").read_text())
    assert manifest["finished"] and manifest["versions"]["torch"]
    assert {"data", "teacher", "student_init", "total"} <= set(manifest["stage_times"])
    for method in METHODS:
        unit = quick_run / "runs" / method / "seed-1"
        assert manifest["units"][f"{method}/seed-1"]["state"] == "done"
        assert (unit / "student" / "model.safetensors").is_file()
        assert (unit / "config.yaml").is_file()
        fidelity = json.loads((unit / "fidelity.json").read_text())
        assert set(fidelity["eval"]) == set(EVAL_SETS)
        log = [json.loads(line) for line in (unit / "train_log.jsonl").read_text().splitlines()]
        assert log and {"step", "lr", "loss", "tokens_per_s"} <= set(log[-1])
        for name in EVAL_SETS:
            rows = (unit / "generations" / f"{name}.jsonl").read_text().splitlines()
            record = json.loads(rows[0])
            assert len(record["predictions"]) == 2  # one per generation seed
    dpkd_log = json.loads(
        (quick_run / "runs/dpkd/seed-1/train_log.jsonl").read_text().splitlines()[-1]
    )
    assert {"pref", "rkl", "ce", "reward_acc"} <= set(dpkd_log)
    for name in ("leaderboard.md", "report.html", "plots/scores_synthetic-id.png"):
        assert (quick_run / name).is_file()


def test_report_rebuilds_from_files_alone(quick_run, capsys):
    before = (quick_run / "leaderboard.csv").read_text()
    (quick_run / "leaderboard.csv").unlink()
    (quick_run / "report.html").unlink()
    assert main(["report", str(quick_run)]) == 0
    assert (quick_run / "leaderboard.csv").read_text() == before
    assert (quick_run / "report.html").is_file()


def test_same_seed_same_metrics(quick_run, tmp_path):
    again = tmp_path / "again"
    assert (
        main(["run", "--recipe", "synthetic-quick", "--methods", "sft,dpkd", "--out", str(again)])
        == 0
    )
    for unit in ("teacher/seed-1", "student_init/seed-1", "sft/seed-1", "dpkd/seed-1"):
        first = json.loads((quick_run / "runs" / unit / "metrics.json").read_text())["eval"]
        second = json.loads((again / "runs" / unit / "metrics.json").read_text())["eval"]
        assert first == second, unit


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--methods", "sft,kdd"], "unknown method 'kdd' (did you mean 'kd'?)"),
        (["run", "--seeds", "1,x"], "--seeds '1,x' is not a comma-separated list"),
        (["run", "train.steps=-3"], "recipe key 'train.steps' must be >= 0"),
        (["run", "--recipe", "nope.yaml"], "recipe 'nope.yaml' is neither a file"),
        (["validate", "synthetic", "trian.steps=3"], "unknown recipe key 'trian'"),
        (["report", "."], "is not a dpkd-bench run directory"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err
    assert len(err.splitlines()) == 1


def test_ls_and_validate(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert name in out
    assert main(["validate", "synthetic-quick"]) == 0


def test_shipped_teacher_is_used_only_for_its_key(tmp_path, monkeypatch):
    from dpkd_bench import teacher as runner

    monkeypatch.setattr(runner, "SHIPPED_TEACHER", tmp_path)
    assert runner.shipped_teacher("abc") is None
    (tmp_path / "key").write_text("abc\n")
    assert runner.shipped_teacher("abc") == tmp_path
    assert runner.shipped_teacher("abd") is None


def test_ablation_recipe_renders_its_table(tmp_path):
    out = tmp_path / "ablation"
    recipe = "recipes/ablations/dpkd-reward-vs-kl.yaml"
    argv = ["run", "--recipe", recipe, "--out", str(out), "base=synthetic-quick", "train.steps=2"]
    assert main(argv) == 0
    md = (out / "leaderboard.md").read_text()
    assert "## Ablation: dpkd" in md
    ablation = md.split("## Ablation: dpkd")[1].split("##")[0]
    assert "dpkd[pref_weight=0,rkl_weight=0.5]" in ablation
    assert "| variant | pref_weight | rkl_weight | length_normalize |" in ablation
    assert (out / "plots" / "ablation_dpkd.png").is_file()


def test_dry_run_plans_every_method_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    args = ["run", "--dry-run", "--methods", "sft,kd,dpkd", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0] for line in printed.splitlines() if line and line[0].isalpha()}
    assert {"teacher", "student_init", "sft", "kd", "dpkd"} <= rows
    assert not out.exists()


def test_teacher_logit_cache_is_built_once_and_used(tmp_path, isolated_cache):
    out = tmp_path / "cached"
    args = ["run", "--recipe", "synthetic-quick", "--methods", "kd,tvd", "--out", str(out)]
    assert main([*args, "kd.teacher_cache_k=16", "tvd.teacher_cache_k=8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "teacher_cache" in manifest["stage_times"]
    assert {u["state"] for u in manifest["units"].values()} == {"done"}
    assert len(list(isolated_cache.glob("teacher-topk-*"))) == 1  # one cache, largest k


def test_sampled_eval_rescores_each_saved_model_as_the_run_did(quick_run, tmp_path):
    """benchmarks/sampled_eval.py with the run's own decoding (synthetic-quick samples over
    seeds 10 and 20) finds every saved model (teacher, student_init, each student) and gives
    back the run's own scores; with other seeds, other scores and a leaderboard of its own."""
    import importlib.util
    import sys
    from pathlib import Path

    import torch

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    threads = torch.get_num_threads()
    sys.path.insert(0, str(benchmarks))
    try:
        spec = importlib.util.spec_from_file_location(
            "sampled_eval", benchmarks / "sampled_eval.py"
        )
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        same, other = tmp_path / "same", tmp_path / "other"
        assert script.main([str(quick_run), "--out", str(same), "--gen-seeds", "10,20"]) == 0
        assert script.main([str(quick_run), "--out", str(other), "--gen-seeds", "30"]) == 0
    finally:
        sys.path.remove(str(benchmarks))
        torch.set_num_threads(threads)
    units = ["teacher", "student_init", *METHODS]
    for unit in units:
        metrics = [
            json.loads((run / "runs" / unit / "seed-1" / "metrics.json").read_text())
            for run in (quick_run, same, other)
        ]
        assert metrics[1]["eval"] == metrics[0]["eval"], unit
        assert metrics[2]["eval"] != metrics[0]["eval"], unit
        assert metrics[1].get("train") == metrics[0].get("train"), unit
    board = pd.read_csv(other / "leaderboard.csv")
    assert list(board["method"].unique()) == units
    recipe = json.loads((other / "manifest.json").read_text())["recipe"]
    assert recipe["eval"]["gen_seeds"] == [30] and recipe["eval"]["decoding"] == "sample"
