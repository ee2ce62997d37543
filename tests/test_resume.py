"""Resume after a kill, checkpoints, the non-finite-loss guard and failure isolation (CPU)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.checkpoint import (
    CHECKPOINT,
    checkpoint_step,
    publish_dir,
    readable_dir,
    remove_unfinished,
    trim_log,
)
from dpkd_bench.cli import main
from dpkd_bench.data.collate import IGNORE
from dpkd_bench.errors import DataError, RecipeError
from dpkd_bench.manifest import check_same_data, check_same_recipe, plain_recipe
from dpkd_bench.methods import METHODS
from dpkd_bench.methods.gkd import GKD
from dpkd_bench.recipe import TrainConfig, load_recipe
from dpkd_bench.train import BatchStream, train

from .conftest import context, items

# synthetic-quick, smaller still: one eval set of 8 examples, one generation seed.
QUICK = ["--recipe", "synthetic-quick"]
TINY = ["data.eval_sets=[synthetic-id]", "data.n_eval=8", "eval.gen_seeds=[10]"]


def read_json(path):
    return json.loads(path.read_text())


def log_records(unit):
    return [json.loads(line) for line in (unit / "train_log.jsonl").read_text().splitlines()]


# ---- resume after SIGKILL, end to end --------------------------------------------------------
@pytest.mark.slow
def test_killed_run_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path):
    argv = ["run", *QUICK, "--methods", "sft,gkd"]
    overrides = [*TINY, "train.steps=24", "train.checkpoint_every=3"]
    reference = tmp_path / "reference"
    assert main([*argv, "--out", str(reference), *overrides]) == 0

    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the same kernels as this process
    }
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "dpkd_bench.cli", *argv, "--out", str(killed), *overrides]
    checkpoint = killed / "runs" / "gkd" / "seed-1" / CHECKPOINT
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.time() + 240
            while readable_dir(checkpoint, "meta.json") is None:
                assert process.poll() is None, "the run ended before gkd wrote a checkpoint"
                assert time.time() < deadline, "no gkd checkpoint within 240 s"
                time.sleep(0.01)
            process.kill()  # SIGKILL: no cleanup of any kind
        finally:
            process.kill()
            process.wait(timeout=60)
    units = read_json(killed / "manifest.json")["units"]
    assert units["sft/seed-1"]["state"] == "done"
    assert units["gkd/seed-1"]["state"] == "running"

    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "sft seed 1: done already" in resumed.stderr
    assert "gkd seed 1: continuing from the checkpoint of step" in resumed.stderr
    for unit in ("teacher", "student_init", "sft", "gkd"):
        first = read_json(reference / "runs" / unit / "seed-1" / "metrics.json")
        second = read_json(killed / "runs" / unit / "seed-1" / "metrics.json")
        resumed_from = second.get("train", {}).get("resumed_from_step")
        for metrics in (first, second):
            metrics.get("train", {}).pop("wall_s", None)
            metrics.get("train", {}).pop("resumed_from_step", None)  # where each began
        assert first == second, unit
    assert resumed_from is not None and resumed_from >= 3  # gkd's, the last unit's
    for unit in ("sft", "gkd"):
        ref_log, log = (log_records(d / "runs" / unit / "seed-1") for d in (reference, killed))
        assert [r["step"] for r in log] == [r["step"] for r in ref_log]  # no step twice
        assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
        assert not (killed / "runs" / unit / "seed-1" / CHECKPOINT).exists()
    manifest = read_json(killed / "manifest.json")
    assert manifest["finished"] and len(manifest["resumed"]) == 1


# ---- resume in-process: the same weights -----------------------------------------------------
class Interrupted(Exception):
    pass


class StopAfter(BatchStream):
    """A batch stream that is 'killed' when asked for more than ``limit`` batches."""

    limit = 10**9

    def next_batch(self):
        self.limit -= 1
        if self.limit < 0:
            raise Interrupted
        return super().next_batch()


class CountingGKD(GKD):
    """GKD (on-policy samples from the context's generator) with a state of its own."""

    def __init__(self):
        super().__init__(GKD.Config(lmbda=0.5))
        self.prepared = 0

    def prepare(self, batch, ctx):
        self.prepared += 1
        return super().prepare(batch, ctx)

    def state_dict(self):
        return {"prepared": self.prepared}

    def load_state_dict(self, state):
        self.prepared = state["prepared"]


def test_resuming_from_a_checkpoint_gives_the_weights_of_an_uninterrupted_train(
    tokenizer, make_model, tmp_path
):
    data = items(tokenizer, 10)
    teacher = make_model(seed=1).eval()
    cfg = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=1e-2, log_every=1, checkpoint_every=2)

    def run(stream, method, checkpoint_dir, generator_seed=0):
        student = make_model(seed=2)
        ctx = context(tokenizer, student, teacher, seed=generator_seed)
        accelerator = Accelerator(cpu=True)
        result = train(method, student, cfg, stream, ctx, accelerator, None, "t", checkpoint_dir)
        return student, result

    whole, whole_result = run(BatchStream(data, 4, seed=3), CountingGKD(), tmp_path / "a")
    assert checkpoint_step(tmp_path / "a") == 6  # the last step is checkpointed too

    stopped = StopAfter(data, 4, seed=3)
    stopped.limit = 2 * 5  # dies while preparing step 5: the checkpoint is at step 4
    with pytest.raises(Interrupted):
        run(stopped, CountingGKD(), tmp_path / "b")
    assert checkpoint_step(tmp_path / "b") == 4
    torch.manual_seed(123)  # the resumed process starts from other RNG states
    random.seed(123)
    method = CountingGKD()
    resumed, result = run(BatchStream(data, 4, seed=3), method, tmp_path / "b", generator_seed=9)
    assert method.prepared == 2 * 6  # the method's own state came back with the checkpoint
    assert (result.tokens, result.skipped_steps) == (whole_result.tokens, 0)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_minillm_resumes_in_the_middle_of_a_rollout(tokenizer, make_model, tmp_path):
    from dpkd_bench.methods import get_method

    data = items(tokenizer, 8)
    teacher = make_model(seed=1).eval()
    cfg = TrainConfig(steps=5, batch_size=4, lr=1e-2, log_every=1, checkpoint_every=2)

    def run(stream, checkpoint_dir, generator_seed=0):
        student = make_model(seed=2)
        ctx = context(tokenizer, student, teacher, seed=generator_seed)
        # a store of one batch serves steps 1-3: the checkpoint at step 2 has one pass left
        method = get_method("minillm", ppo_epochs=3, rollout_size=4)
        train(method, student, cfg, stream, ctx, Accelerator(cpu=True), None, "t", checkpoint_dir)
        return student

    whole = run(BatchStream(data, 4, seed=3), tmp_path / "a")
    stopped = StopAfter(data, 4, seed=3)
    stopped.limit = 1  # dies drawing the next store at step 4: the checkpoint is at step 2
    with pytest.raises(Interrupted):
        run(stopped, tmp_path / "b")
    resumed = run(BatchStream(data, 4, seed=3), tmp_path / "b", generator_seed=9)
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_kill_while_publishing_leaves_the_previous_copy_readable(tmp_path):
    path = tmp_path / CHECKPOINT
    publish_dir(path, lambda tmp: (tmp / "meta.json").write_text('{"step": 2}'))
    publish_dir(path, lambda tmp: (tmp / "meta.json").write_text('{"step": 4}'))
    assert readable_dir(path, "meta.json") == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    # killed between its two renames: the previous copy is aside, the new one still temporary
    os.replace(path, tmp_path / f".{CHECKPOINT}.old")
    (tmp_path / f".{CHECKPOINT}.tmp-x").mkdir()
    assert readable_dir(path, "meta.json") == tmp_path / f".{CHECKPOINT}.old"
    remove_unfinished(tmp_path)
    assert not (tmp_path / f".{CHECKPOINT}.tmp-x").exists()

    def crash(tmp):
        (tmp / "meta.json").write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_dir(path, crash)
    assert readable_dir(path, "meta.json") == tmp_path / f".{CHECKPOINT}.old"


def test_trim_log_keeps_steps_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (2, 4, 6)) + '{"step": 8, "lo')
    trim_log(log, 4)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4]


# ---- a NaN unit fails alone; empty batches are skipped and counted -------------------------
def test_nan_unit_fails_alone_and_empty_batches_are_skipped_and_counted(
    tmp_path, monkeypatch, capsys
):
    kd, tvd = METHODS["kd"], METHODS["tvd"]
    calls = Counter()
    kd_terms, tvd_prepare = kd.loss_terms, tvd.prepare

    def nan_from_step_3(self, student, prepared, ctx):
        terms = kd_terms(self, student, prepared, ctx)
        calls["kd"] += 1
        if calls["kd"] > 4:  # two micro-batches per step: the 5th call is step 3's first
            terms["distill"] = terms["distill"] * float("nan")
        return terms

    def empty_at_step_2(self, batch, ctx):
        prepared = tvd_prepare(self, batch, ctx)
        calls["tvd"] += 1
        if calls["tvd"] in (3, 4):  # every response of step 2 masked out
            prepared["pairs"]["labels"][:] = IGNORE
            prepared["counts"]["tokens"] = 0
        return prepared

    monkeypatch.setattr(kd, "loss_terms", nan_from_step_3)
    monkeypatch.setattr(tvd, "prepare", empty_at_step_2)
    out = tmp_path / "run"
    argv = ["run", *QUICK, "--methods", "kd,tvd", "--out", str(out), *TINY]
    # checkpoints at steps 2, 4, 6 and the log at 4, 6: the guard is first checked at step 4
    argv += ["train.checkpoint_every=2", "train.log_every=4"]
    assert main(argv) == 1

    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 units failed: kd/seed-1 (NonFiniteLoss)")
    units = read_json(out / "manifest.json")["units"]
    assert units["kd/seed-1"]["state"] == "failed"
    error = units["kd/seed-1"]["error"]
    assert "non-finite loss at step 3 " in error and "distill=nan" in error and "ce=" in error
    assert not (out / "runs/kd/seed-1/metrics.json").exists()
    assert checkpoint_step(out / "runs/kd/seed-1" / CHECKPOINT) == 2  # before the NaN

    assert units["tvd/seed-1"]["state"] == "done"
    assert units["tvd/seed-1"]["skipped_steps"] == 1
    assert read_json(out / "runs/tvd/seed-1/metrics.json")["train"]["skipped_steps"] == 1
    records = log_records(out / "runs/tvd/seed-1")
    assert all(math.isfinite(v) for r in records for v in r.values())
    board = (out / "leaderboard.csv").read_text()
    assert "\ntvd," in board and "\nkd," not in board


# ---- resume: user errors ------------------------------------------------------------------
def test_resume_refuses_another_recipe_and_non_runs(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = load_recipe("synthetic-quick", TINY).to_dict()
    recipe["train"]["steps"] = 7
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"recipe": recipe, "units": {}}))
    assert main(["run", *QUICK, "--out", str(run), "--resume", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume") and len(err.splitlines()) == 1
    assert "train.steps: 7 in the run, 6 now" in err

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["run", *QUICK, "--out", str(other), "--resume", *TINY]) == 2
    assert "not a dpkd-bench run directory" in capsys.readouterr().err
    assert main(["run", *QUICK, "--out", str(other), *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_keys_added_since_the_run_count_only_when_changed():
    recipe = load_recipe("synthetic-quick", TINY)
    then = plain_recipe(recipe)
    del then["eval"]["backend"]  # a run made before the key existed
    check_same_recipe({"recipe": then}, recipe, "DIR")  # left at its default: same recipe
    recipe.eval.backend = "vllm"
    with pytest.raises(RecipeError, match=r"eval.backend: '<unset>' in the run, 'vllm' now"):
        check_same_recipe({"recipe": then}, recipe, "DIR")


def test_resume_refuses_other_data():
    manifest = {"data_hashes": {"train": "a", "tokenizer": "b"}}
    check_same_data(manifest, {"train": "a", "tokenizer": "b"}, "DIR")
    with pytest.raises(DataError, match=r"the data \(train\) differs"):
        check_same_data(manifest, {"train": "z", "tokenizer": "b"}, "DIR")
