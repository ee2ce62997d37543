"""One ``student_init`` per training seed (``student.init_per_seed``), and what the manifest
records of where a run's results come from (threads, per-example scores)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dpkd_bench.cli import main
from dpkd_bench.results import EXAMPLE_SCORES, read_example_scores


def run(out, *extra: str) -> dict:
    args = ["run", "--recipe", "synthetic-quick", "--methods", "sft", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    per_seed = run(root / "per-seed", "--seeds", "1,2")
    shared = run(root / "shared", "--seeds", "1,2", "student.init_per_seed=false")
    return root, per_seed, shared


def seed_scores(out, method: str) -> pd.DataFrame:
    board = pd.read_csv(out / "leaderboard.csv")
    return board[board["method"] == method].reset_index(drop=True)


def test_each_seed_starts_from_its_own_student_init(runs):
    root, per_seed, shared = runs
    hashes = per_seed["student_init_sha256"]
    assert set(hashes) == {"1", "2"} and hashes["1"] != hashes["2"]
    assert (root / "per-seed" / "student_init-seed-2" / "model.safetensors").is_file()
    # student_init is a row with two seeds, each evaluated
    board = seed_scores(root / "per-seed", "student_init")
    assert (board["n_seeds"] == 2).all()
    # seed 1's init is the shared one of init_per_seed: false
    assert isinstance(shared["student_init_sha256"], str)
    assert hashes["1"] == shared["student_init_sha256"]
    assert not (root / "shared" / "student_init-seed-2").exists()
    assert (seed_scores(root / "shared", "student_init")["n_seeds"] == 1).all()


def test_seed_one_trains_the_same_either_way_and_seed_two_does_not(runs):
    root = runs[0]

    def metrics(name: str, seed: int) -> dict:
        path = root / name / "runs" / "sft" / f"seed-{seed}" / "metrics.json"
        return json.loads(path.read_text())["eval"]

    assert metrics("per-seed", 1) == metrics("shared", 1)
    assert metrics("per-seed", 2) != metrics("shared", 2)


def test_manifest_records_threads_and_units_keep_per_example_scores(runs):
    root, per_seed, _ = runs
    threads = per_seed["threads"]
    assert isinstance(threads["torch"], int) and threads["torch"] >= 1
    assert "OMP_NUM_THREADS" in threads
    assert per_seed["machine"]["cpu"] and per_seed["machine"]["cores"] >= 1
    assert per_seed["units"]["sft/seed-2"]["threads"]["torch"] >= 1
    assert per_seed["finished"]
    rows = read_example_scores(root / "per-seed" / "runs" / "sft" / "seed-1" / EXAMPLE_SCORES)
    generations = root / "per-seed" / "runs" / "sft" / "seed-1" / "generations"
    first = [json.loads(line) for line in (generations / "synthetic-id.jsonl").open()]
    by_set = [r for r in rows if r["eval_set"] == "synthetic-id"]
    assert [r["id"] for r in by_set] == [r["id"] for r in first]
    assert [r["rougeL"] for r in by_set] == [r["rougeL"] for r in first]


def test_an_extended_run_trains_the_new_seeds_init(runs, tmp_path):
    root = runs[0]
    import shutil

    copy = tmp_path / "grown"
    shutil.copytree(root / "per-seed", copy)
    args = ["run", "--extend", str(copy), "--methods", "sft", "--seeds", "1,2,3"]
    assert main(args) == 0
    hashes = json.loads((copy / "manifest.json").read_text())["student_init_sha256"]
    assert set(hashes) == {"1", "2", "3"}
    assert hashes["1"] == runs[1]["student_init_sha256"]["1"]
    assert (copy / "student_init-seed-3" / "model.safetensors").is_file()


def test_a_run_made_before_per_seed_inits_resumes_with_its_own_setting(runs, tmp_path, capsys):
    """A manifest without student.init_per_seed was made with one shared student_init: a
    resume with today's default is refused with what differs, and resumes with the run's."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(runs[0] / "shared", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["recipe"]["student"]["init_per_seed"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    args = ["run", "--recipe", "synthetic-quick", "--methods", "sft", "--seeds", "1,2"]
    capsys.readouterr()
    assert main([*args, "--out", str(old), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "student.init_per_seed: False in the run, True now" in err and err.count("\n") == 1
    assert main([*args, "--out", str(old), "--resume", "student.init_per_seed=false"]) == 0
