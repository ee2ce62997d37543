"""Trackers, model cards, lm-evaluation-harness scores, growing and merging runs, and logs a
file can hold."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from dpkd_bench.cli import main
from dpkd_bench.model_card import read_card
from dpkd_bench.results import RunDir

QUICK = ["--recipe", "synthetic-quick", "--seeds", "1"]


# The default recipe validates its units on the dev split; these tests are about other things
NO_DEV = ["train.eval_every=0", "train.select=last"]


def run(capsys, *args) -> tuple[int, str]:
    code = main(["run", *args, *NO_DEV])
    return code, capsys.readouterr().err


def metrics(out, method, seed=1) -> dict:
    return json.loads((RunDir(out).unit_dir(method, seed) / "metrics.json").read_text())


# ---- trackers ----------------------------------------------------------------------------
def test_tensorboard_and_mlflow_hold_each_units_curve_and_scores(tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    code, err = run(
        capsys,
        *QUICK,
        "--methods",
        "sft,kd",
        "--out",
        str(out),
        "train.report_to=[tensorboard,mlflow]",
    )
    assert code == 0, err
    for method in ("sft", "kd"):
        logged = [
            json.loads(line)
            for line in (RunDir(out).unit_dir(method, 1) / "train_log.jsonl").open()
        ]
        scores = metrics(out, method)["eval"]
        events = EventAccumulator(str(out / "tensorboard" / method / "seed-1"))
        events.Reload()
        curve = events.Scalars("train/loss")
        assert [e.step for e in curve] == [r["step"] for r in logged]
        assert [e.value for e in curve] == pytest.approx([r["loss"] for r in logged], rel=1e-5)
        final = events.Scalars("eval/synthetic-id/rougeL")[-1].value
        assert final == pytest.approx(scores["synthetic-id"]["rougeL"], rel=1e-5)

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "synthetic-quick"]
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == {"sft/seed-1", "kd/seed-1"}
    kd = found["kd/seed-1"]
    history = client.get_metric_history(kd.info.run_id, "train/loss")
    assert len(history) == len(list((RunDir(out).unit_dir("kd", 1) / "train_log.jsonl").open()))
    assert kd.data.metrics["eval/synthetic-id/exact_match"] == pytest.approx(
        metrics(out, "kd")["eval"]["synthetic-id"]["exact_match"]
    )
    assert kd.data.params["train.steps"] == "6" and kd.data.params["unit.method"] == "kd"


def test_a_tracker_that_is_not_installed_or_unknown_is_a_one_line_error(
    tmp_path, capsys, monkeypatch
):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a)
    )
    out = tmp_path / "run"
    code, err = run(capsys, *QUICK, "--out", str(out), "train.report_to=[mlflow]")
    assert code == 2 and err.count("\n") == 1
    assert "mlflow is not installed" in err and '".[trackers]"' in err
    code, err = run(capsys, *QUICK, "--out", str(out), "train.report_to=[comet]")
    assert code == 2 and "unknown trackers ['comet']" in err
    assert not out.exists()


# ---- model cards -------------------------------------------------------------------------
def test_a_saved_students_card_parses_and_its_directory_loads(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    code, err = run(capsys, *QUICK, "--methods", "kd", "--out", str(out))
    assert code == 0, err
    student = RunDir(out).unit_dir("kd", 1) / "student"
    meta, body = read_card(student)
    assert meta["library_name"] == "transformers" and "kd" in meta["tags"]
    assert meta["dpkd_bench"]["method"] == "kd"
    assert meta["dpkd_bench"]["settings"]["temperature"] == 1.0
    (entry,) = meta["model-index"]
    assert entry["name"] == "synthetic-quick/kd/seed-1"
    results = {r["dataset"]["name"]: r["metrics"] for r in entry["results"]}
    scores = metrics(out, "kd")["eval"]
    assert set(results) == set(scores)
    rouge = {m["name"]: m["value"] for m in results["synthetic-para"]}["ROUGE-L"]
    assert rouge == pytest.approx(scores["synthetic-para"]["rougeL"], abs=1e-4)
    assert "dpkd-bench run --recipe synthetic-quick" in body
    model = AutoModelForCausalLM.from_pretrained(student)
    assert model.config.n_embd == 32
    init_meta, _ = read_card(out / "student_init")
    assert init_meta["model-index"][0]["name"] == "synthetic-quick/student_init/seed-1"


# ---- lm-evaluation-harness ---------------------------------------------------------------
@pytest.mark.slow
def test_the_shipped_lm_eval_task_scores_the_teacher_above_student_init(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(
        capsys,
        "--methods",
        "sft",
        "--seeds",
        "1",
        "--out",
        str(out),
        "student.init_train.steps=0",  # student_init: the randomly initialised student
        "train.steps=2",
        "data.max_eval_examples=8",
        "eval.gen_seeds=[10]",
        "eval.fidelity=false",
        "eval.lm_eval={tasks: [dpkd_synthetic_mc, dpkd_synthetic_gen], limit: 60}",
    )
    assert code == 0, err
    teacher = metrics(out, "teacher")["lm_eval"]["dpkd_synthetic_mc"]["acc"]
    student_init = metrics(out, "student_init")["lm_eval"]["dpkd_synthetic_mc"]["acc"]
    assert teacher > student_init + 0.2, (teacher, student_init)
    gen = metrics(out, "teacher")["lm_eval"]["dpkd_synthetic_gen"]
    assert any(k.startswith("exact_match") for k in gen)
    board = pd.read_csv(out / "leaderboard.csv")
    column = "lm_eval:dpkd_synthetic_mc/acc"
    assert column in board.columns
    by_method = board.groupby("method")[column].first()
    assert by_method["teacher"] == pytest.approx(teacher)
    assert "## lm-evaluation-harness" in (out / "leaderboard.md").read_text()
    assert "lm-evaluation-harness" in (out / "report.html").read_text()


def test_lm_eval_unknown_tasks_are_a_user_error(tmp_path):
    from dpkd_bench.errors import UserError
    from dpkd_bench.lm_eval_scores import lm_eval_scores
    from dpkd_bench.recipe import LmEvalConfig

    with pytest.raises(UserError, match="does not know: no_such_task"):
        lm_eval_scores(None, None, LmEvalConfig(tasks=["no_such_task"]), tmp_path, "cpu", "x")


# ---- growing and merging runs ------------------------------------------------------------
def snapshot(directory) -> dict:
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_extend_adds_a_method_without_touching_the_others_and_refuses_a_changed_teacher(
    tmp_path, capsys
):
    out = tmp_path / "run"
    code, err = run(capsys, *QUICK, "--methods", "sft", "--out", str(out))
    assert code == 0, err
    sft_dir = RunDir(out).unit_dir("sft", 1)
    before = snapshot(sft_dir)
    code, err = run(capsys, "--extend", str(out), "--methods", "kd")
    assert code == 0, err
    assert snapshot(sft_dir) == before
    manifest = RunDir(out).load_manifest()
    assert manifest["methods"] == ["sft", "kd"] and manifest["recipe"]["methods"] == ["sft", "kd"]
    assert manifest["extended"] and manifest["units"]["kd/seed-1"]["state"] == "done"
    assert "sft seed 1: done already" in err
    assert set(pd.read_csv(out / "leaderboard.csv")["method"]) >= {"sft", "kd"}

    code, err = run(capsys, "--extend", str(out), "--methods", "tvd", "teacher.train.steps=31")
    assert code == 2 and err.count("\n") == 1
    assert "teacher.train.steps: 30 in the run, 31 now" in err
    assert not RunDir(out).unit_dir("tvd", 1).exists()
    code, err = run(capsys, "--extend", str(tmp_path / "nothing"), "--methods", "tvd")
    assert code == 2 and "does not exist" in err


def test_extend_with_a_recipe_takes_the_added_methods_settings_and_nothing_else(tmp_path, capsys):
    import yaml

    from dpkd_bench.recipe import load_recipe

    out = tmp_path / "run"
    assert run(capsys, *QUICK, "--methods", "sft", "--out", str(out))[0] == 0
    newer = load_recipe("synthetic-quick", NO_DEV).to_dict()  # the same recipe, tuned for tvd
    newer["method_args"]["tvd"] = {"kd_ratio": 1.0, "train": {"lr": 0.002}}
    path = tmp_path / "newer.yaml"
    path.write_text(yaml.safe_dump(newer))
    code, err = run(capsys, "--extend", str(out), "--recipe", str(path), "--methods", "tvd")
    assert code == 0, err
    recipe = RunDir(out).load_manifest()["recipe"]
    assert recipe["method_args"]["tvd"] == {"kd_ratio": 1.0, "train": {"lr": 0.002}}
    assert metrics(out, "tvd")["train"]["settings"]["lr"] == 0.002
    units = RunDir(out).load_manifest()["units"]  # each unit names the code that trained it
    assert units["tvd/seed-1"]["git_commit"] == units["sft/seed-1"]["git_commit"] != ""

    newer["method_args"]["sft"] = {"train": {"lr": 0.5}}  # a finished method's settings: refused
    newer["method_args"]["gkd"] = {"beta": 0.9}
    path.write_text(yaml.safe_dump(newer))
    code, err = run(capsys, "--extend", str(out), "--recipe", str(path), "--methods", "gkd")
    assert code == 2 and err.count("\n") == 1 and "method_args.sft" in err
    assert not RunDir(out).unit_dir("gkd", 1).exists()


def test_report_merges_runs_of_the_same_models_and_refuses_others(tmp_path, capsys):
    a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "other"
    assert run(capsys, *QUICK, "--methods", "sft", "--out", str(a))[0] == 0
    assert run(capsys, *QUICK, "--methods", "kd", "--out", str(b))[0] == 0
    merged = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(merged)]) == 0
    board = pd.read_csv(merged / "leaderboard.csv")
    assert set(board["method"]) == {"teacher", "student_init", "sft", "kd"}
    manifest = RunDir(merged).load_manifest()
    assert manifest["methods"] == ["sft", "kd"] and len(manifest["merged_from"]) == 2
    assert not (RunDir(merged).unit_dir("kd", 1) / "student").exists()  # results, not weights

    assert (
        run(capsys, *QUICK, "--methods", "tvd", "--out", str(other), "student.init_train.steps=11")[
            0
        ]
        == 0
    )
    capsys.readouterr()
    code = main(["report", str(a), str(other), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "student_init_sha256" in err and err.count("\n") == 1
    code = main(["report", str(a), str(b)])
    assert code == 2 and "--out" in capsys.readouterr().err


# ---- logs ----------------------------------------------------------------------------------
def test_progress_is_lines_in_a_file_and_quiet_prints_only_problems(tmp_path, capsys):
    code, err = run(capsys, *QUICK, "--methods", "kd", "--out", str(tmp_path / "a"))
    assert code == 0
    assert "\r" not in err
    assert "[dpkd-bench] kd seed 1: step 2/6, loss " in err and " it/s, " in err and " left" in err
    code, err = run(capsys, *QUICK, "--methods", "kd", "--out", str(tmp_path / "b"), "--quiet")
    assert code == 0 and "[dpkd-bench]" not in err and "\r" not in err


def test_wandb_without_a_login_logs_offline_under_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    code, err = run(
        capsys, *QUICK, "--methods", "sft", "--out", str(out), "train.report_to=[wandb]"
    )
    assert code == 0, err
    runs = list((out / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
