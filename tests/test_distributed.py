"""Two CPU processes (gloo) under torchrun: sharded training and one set of results.

Each test launches ``python -m torch.distributed.run --nproc_per_node 2`` as a subprocess with
one thread per process. The 2-process ``kd`` weights are compared with a single-process run of
the same global batches within atol=1e-5, rtol=1e-4, not exactly: DDP's all-reduce adds the two
processes' gradients, and the unit counts are summed first, so the float additions happen in
another order than in one process's single backward pass (measured max difference ~1e-8).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from accelerate import Accelerator

from . import dist_train_script as script

pytestmark = pytest.mark.slow  # two processes under torchrun: the longest tests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("dist_train_script.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def two_process_train(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun([str(SCRIPT), str(out)])
    return out


def test_two_processes_train_kd_to_the_weights_of_one(two_process_train, tokenizer):
    tok = script.tokenizer()
    assert tok.get_vocab() == tokenizer.get_vocab()  # the same tokenizer as the subprocesses
    teacher = script.make_model(tok, seed=1).eval()
    log = two_process_train / "single_log.jsonl"
    log.unlink(missing_ok=True)
    single, single_dev = script.train_kd(tok, teacher, Accelerator(cpu=True), log)
    double = torch.load(two_process_train / "kd.pt", weights_only=True)
    devs = json.loads((two_process_train / "kd_dev.json").read_text())
    timeless = [
        [{k: v for k, v in p.items() if k != "elapsed_s"} for p in d["curve"]] for d in devs
    ]
    assert timeless[0] == timeless[1]  # both processes saw the same dev figures
    assert devs[0]["selected_step"] == devs[1]["selected_step"]  # and kept the same weights
    assert [p["step"] for p in devs[0]["curve"]] == [0, 1, 2, 3]
    assert devs[0]["curve"][0]["score"] == 100.0 and devs[0]["curve"][-1]["score"] < 100.0
    for one, two in zip(single_dev["curve"], devs[0]["curve"], strict=True):
        # the shared decoding scores what one process scores alone, at the same global cost
        assert one["score"] == pytest.approx(two["score"]) and one["step"] == two["step"]
        assert one["teacher_forwards"] == two["teacher_forwards"]
    assert single_dev["selected_step"] == devs[0]["selected_step"]
    worst = 0.0
    for name, value in single.state_dict().items():
        torch.testing.assert_close(double[name], value, atol=1e-5, rtol=1e-4, msg=name)
        worst = max(worst, float((double[name] - value).abs().max()))
    print(f"max abs difference, 2 processes vs 1: {worst:.3g}")
    records = [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in (log, two_process_train / "kd_log.jsonl")
    ]
    assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]] == [1, 2, 3]
    for one, two in zip(*records, strict=True):  # the log holds the global loss, once
        assert one["loss"] == pytest.approx(two["loss"], rel=1e-5)


def test_two_process_checkpoint_resumes_every_process_state(two_process_train):
    whole = torch.load(two_process_train / "gkd_whole.pt", weights_only=True)
    resumed = torch.load(two_process_train / "gkd_resumed.pt", weights_only=True)
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name
    meta = json.loads((two_process_train / "gkd-resumed" / "meta.json").read_text())
    assert meta == {"format": 1, "step": 4, "processes": 2}
    assert (two_process_train / "gkd-resumed" / "rank-1.pt").is_file()


def test_taid_moves_one_schedule_on_every_process_as_in_one(two_process_train):
    """TAID's interpolation advances on the step's global loss: both processes hold the same
    schedule, the one a single process reaches on the same global batches."""
    schedules = json.loads((two_process_train / "taid_schedules.json").read_text())
    assert schedules[0] == schedules[1]
    tok = script.tokenizer()
    single = script.train_taid(tok, script.make_model(tok, seed=1).eval(), Accelerator(cpu=True))
    assert single["t"] > 0.4  # it moved past t_start
    for key, value in single.items():
        assert schedules[0][key] == pytest.approx(value, rel=1e-4), key


def test_two_process_run_writes_one_set_of_results(tmp_path):
    out = tmp_path / "run"
    tiny = ["data.eval_sets=[synthetic-id]", "data.n_eval=8", "eval.gen_seeds=[10]"]
    argv = ["-m", "dpkd_bench.cli", "run", "--recipe", "synthetic-quick", "--methods", "sft,kd"]
    torchrun([*argv, "--out", str(out), *tiny, "train.steps=2"], timeout=240)
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["method"]) == ["teacher", "student_init", "sft", "kd"]
    assert (board["eval_set"] == "synthetic-id").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"]
    assert all(unit["state"] == "done" for unit in manifest["units"].values())
    for unit in ("teacher", "student_init", "sft", "kd"):
        rows = (out / "runs" / unit / "seed-1" / "generations" / "synthetic-id.jsonl").read_text()
        ids = [json.loads(line)["id"] for line in rows.splitlines()]
        assert len(ids) == len(set(ids)) == 8
    for unit in ("sft", "kd"):
        log = (out / "runs" / unit / "seed-1" / "train_log.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in log] == [2]  # one log, not one per process
