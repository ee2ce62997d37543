"""Launchers: the same units under Ray and SLURM (submitit's local executor) as here, a lost
worker resumed from its checkpoint, the manifest written by many processes, bad settings."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from dpkd_bench import lock
from dpkd_bench.cli import main
from dpkd_bench.errors import UserError
from dpkd_bench.launchers.job import UnitJob
from dpkd_bench.manifest import check_same_recipe, plain_recipe
from dpkd_bench.recipe import load_recipe, slurm_minutes
from dpkd_bench.results import RunDir

# Two methods x two seeds, one thread per unit on every launcher (threads change the floats);
# one generation seed and no fidelity figures (QUICK_EVAL, last among the overrides): what is
# compared is where the units ran, not what the evaluation adds.
GRID = [
    "--recipe",
    "synthetic-quick",
    "--methods",
    "sft,kd",
    "--seeds",
    "1,2",
]
ONE_THREAD = "launcher.cpus_per_unit=1"
QUICK_EVAL = ["eval.gen_seeds=[10]", "eval.fidelity=false"]
UNITS = ["sft/seed-1", "sft/seed-2", "kd/seed-1", "kd/seed-2"]


def cli_env(tmp_path_factory) -> dict:
    """The test session's cache (module fixtures run before the autouse one sets it)."""
    cache = tmp_path_factory.getbasetemp() / "dpkd-cache"
    return {**os.environ, "DPKD_BENCH_CACHE": str(cache), "TQDM_DISABLE": "1"}


def run_cli(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dpkd_bench.cli", "run", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("launchers") / "local"
    done = run_cli(cli_env(tmp_path_factory), *GRID, "--out", str(out), ONE_THREAD, *QUICK_EVAL)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def unit_scores(run) -> dict:
    """Every unit's eval figures (metrics.json), by unit."""
    found = {}
    for method, seed in RunDir(run).completed_units():
        metrics = json.loads((RunDir(run).unit_dir(method, seed) / "metrics.json").read_text())
        found[f"{method}/seed-{seed}"] = metrics["eval"]
    return found


def assert_close(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9, nan_ok=True), where
    else:
        assert a == b, where


@pytest.mark.slow
@pytest.mark.parametrize("launcher, settings", [("ray", []), ("slurm", ["launcher.cluster=local"])])
def test_ray_and_slurm_give_the_local_leaderboard(
    launcher, settings, local_run, tmp_path, tmp_path_factory
):
    out = tmp_path / launcher
    args = [*GRID, "--out", str(out), "--launcher", launcher, ONE_THREAD, *settings, *QUICK_EVAL]
    done = run_cli(cli_env(tmp_path_factory), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = (pd.read_csv(run / "leaderboard.csv") for run in (out, local_run))
    key = ["method", "eval_set"]
    ours, theirs = (t.sort_values(key).reset_index(drop=True) for t in (ours, theirs))
    pd.testing.assert_frame_equal(ours, theirs, rtol=1e-6)
    assert_close(unit_scores(out), unit_scores(local_run))
    inits = ["student_init/seed-1", "student_init/seed-2"]  # one per seed, each evaluated
    assert sorted(unit_scores(out)) == sorted([*UNITS, *inits, "teacher/seed-1"])
    manifest = RunDir(out).load_manifest()
    assert manifest["launcher"] == launcher
    assert manifest["recipe"]["launcher"]["name"] == launcher
    assert {manifest["units"][u]["launcher"] for u in UNITS} == {launcher}
    assert RunDir(local_run).load_manifest()["launcher"] == "local"
    # the driver's progress: each unit started and done, and the count with the time left
    for unit in UNITS:
        assert f"{unit}: done in" in done.stderr
    assert "4/4 units ended (0 failed)" in done.stderr
    assert "left" in done.stderr
    # a resume skips the finished units, exactly as the local launcher does
    again = run_cli(cli_env(tmp_path_factory), "--resume", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 of 4 units to run" in again.stderr


@pytest.mark.slow
def test_a_killed_ray_worker_resumes_its_unit_from_its_checkpoint(tmp_path, tmp_path_factory):
    out = tmp_path / "killed"
    unit_dir = RunDir(out).unit_dir("kd", 1)
    killed = []

    def kill_when_checkpointed():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            meta = unit_dir / "checkpoint" / "meta.json"
            holder = lock.holder(unit_dir / lock.LOCK)
            if meta.is_file() and isinstance(holder.get("pid"), int):
                os.kill(holder["pid"], signal.SIGKILL)  # the Ray worker running the unit
                killed.append(holder["pid"])
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_when_checkpointed, daemon=True)
    watcher.start()
    done = run_cli(
        cli_env(tmp_path_factory),
        "--recipe",
        "synthetic-quick",
        "--methods",
        "sft,kd",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--launcher",
        "ray",
        "train.steps=120",
        "train.checkpoint_every=5",
        "launcher.cpus_per_unit=1",
    )
    watcher.join()
    assert killed, "the unit ended before its worker could be killed"
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kd/seed-1: failed (worker lost:" in done.stderr
    units = RunDir(out).load_manifest()["units"]
    assert units["kd/seed-1"]["state"] == "done"
    assert units["kd/seed-1"]["attempts"] == 2
    assert units["kd/seed-1"]["resumed_from_step"] >= 5
    assert units["sft/seed-1"]["state"] == "done"
    assert units["sft/seed-1"]["attempts"] == 1
    metrics = json.loads((unit_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 120
    assert "continuing from the checkpoint of step" in (unit_dir / "worker.log").read_text()


@pytest.mark.slow
def test_a_unit_of_several_processes_runs_under_torchrun_in_its_job(tmp_path, tmp_path_factory):
    out = tmp_path / "two"
    done = run_cli(
        cli_env(tmp_path_factory),
        *["--recipe", "synthetic-quick", "--methods", "sft", "--seeds", "1", "--out", str(out)],
        *["--launcher", "slurm", "launcher.cluster=local", "launcher.gpus_per_unit=2"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert RunDir(out).load_manifest()["units"]["sft/seed-1"]["state"] == "done"
    log = (RunDir(out).unit_dir("sft", 1) / "worker.log").read_text()
    assert len(re.findall(r"sft seed 1: [0-9.]+s\n", log)) == 1  # the main process reports
    assert "OMP_NUM_THREADS" in log  # torchrun's banner: the processes were its


def run_main(capsys, *args) -> tuple[int, str]:
    code = main(["run", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--launcher", "mars"], "invalid choice: 'mars'"),
        (["launcher.name=mars"], "launcher.name' must be one of local, ray, slurm"),
        (["launcher.cpus_per_unit=-1"], "launcher.cpus_per_unit' must be >= 1"),
        (["launcher.gpus_per_unit=-2"], "launcher.gpus_per_unit' must be >= 0"),
        (["launcher.max_retries=-1"], "launcher.max_retries' must be >= 0"),
        (["launcher.time=soon"], "launcher.time' must be minutes >= 1 or '[D-]H:MM[:SS]'"),
        (["launcher.cluster=pbs"], "launcher.cluster' must be one of slurm, local"),
    ],
)
def test_bad_launcher_settings_are_one_line_errors(capsys, tmp_path, args, message):
    out = tmp_path / "run"
    code, err = run_main(capsys, "--recipe", "synthetic-quick", "--out", str(out), *args)
    assert code == 2
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("launcher, package", [("ray", "ray"), ("slurm", "submitit")])
def test_a_launcher_whose_package_is_missing_says_how_to_install_it(
    capsys, tmp_path, monkeypatch, launcher, package
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    out = tmp_path / "run"
    code, err = run_main(
        capsys, "--recipe", "synthetic-quick", "--out", str(out), "--launcher", launcher
    )
    assert code == 2 and err.count("\n") == 1
    assert f"needs {package}, which is not installed" in err
    assert f'pip install -e ".[{launcher}]"' in err
    assert not out.exists()


def test_slurm_wants_sbatch_and_a_run_directory_every_node_sees(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, err = run_main(
        capsys, "--recipe", "synthetic-quick", "--out", str(out), "--launcher", "slurm"
    )
    assert code == 2 and "found no `sbatch`" in err and "launcher.cluster=local" in err
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    code, err = run_main(
        capsys, "--recipe", "synthetic-quick", "--out", str(out), "--launcher", "slurm"
    )
    assert code == 2 and err.count("\n") == 1
    assert "the run directory (--out)" in err and "is under /tmp" in err
    assert not out.exists()


def test_a_run_resumes_under_another_launcher_but_not_another_recipe(tmp_path):
    made = load_recipe("synthetic-quick", ["launcher.name=ray", "launcher.cpus_per_unit=2"])
    manifest = {"recipe": plain_recipe(made)}
    check_same_recipe(manifest, load_recipe("synthetic-quick"), tmp_path)
    with pytest.raises(UserError, match="train.steps"):
        check_same_recipe(manifest, load_recipe("synthetic-quick", ["train.steps=7"]), tmp_path)


def test_slurm_time_limits_in_minutes():
    assert slurm_minutes(90) == 90
    assert slurm_minutes("2:00") == 120
    assert slurm_minutes("1:30:01") == 91
    assert slurm_minutes("1-00:00:00") == 1440
    with pytest.raises(ValueError):
        slurm_minutes("two hours")


def test_a_unit_job_survives_pickling_for_its_worker(tmp_path):
    job = UnitJob(load_recipe("synthetic-quick"), str(tmp_path), str(tmp_path), "kd", 3)
    again = pickle.loads(pickle.dumps(job.again()))
    assert again.attempt == 2 and again.key == "kd/seed-3" and again.recipe == job.recipe


def _record_units(root: str, worker: int, count: int) -> None:
    run_dir = RunDir(root)
    for i in range(count):
        run_dir.update_unit(f"m{worker}", i + 1, state="done", worker=worker)


def test_manifest_edits_from_many_processes_are_all_kept(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.save_manifest({"units": {}})
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_units, args=(str(tmp_path), w, 15)) for w in range(4)]
    for proc in workers:
        proc.start()
    for proc in workers:
        proc.join(60)
        assert proc.exitcode == 0
    units = run_dir.load_manifest()["units"]
    assert len(units) == 60
    assert not (tmp_path / lock.MANIFEST_LOCK).exists()


def test_a_unit_lock_waits_for_its_holder_then_takes_it(tmp_path):
    holder = lock.acquire(tmp_path)
    with pytest.raises(UserError, match="being written by another run"):
        lock.acquire(tmp_path, wait_s=0.2)  # the same process stands in for a live holder
    threading.Timer(0.3, lock.release, (tmp_path, holder)).start()
    start = time.time()
    mine = lock.acquire(tmp_path, wait_s=10)
    assert 0.2 < time.time() - start < 5
    lock.release(tmp_path, mine)
