"""Run under `torchrun --nproc_per_node 2` by tests/test_distributed.py (not collected by pytest).

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_train_script.py OUT

Each process builds the same tiny tokenizer, teacher and student as tests/conftest.py, then

1. trains the student with ``kd`` (teacher-forced) through ``dpkd_bench.train.train``, with
   plain SGD in place of AdamW (whose update hardly changes when every gradient is scaled alike,
   so it would hide a wrong normalisation), validated on a dev set every step (the processes
   share the decoding) and keeping the best-on-dev weights; the main process saves the final
   weights to OUT/kd.pt, the train log to OUT/kd_log.jsonl and every process's dev summary to
   OUT/kd_dev.json;
2. trains ``gkd`` (on-policy samples from each process's own generator) for 4 steps without a
   break, then again with a stop while preparing step 4 and a resume from the checkpoint of
   step 2; the main process saves both final weights to OUT/gkd_whole.pt and OUT/gkd_resumed.pt;
3. trains ``taid`` (its adaptive interpolation moved by a large step size) and saves every
   process's schedule to OUT/taid_schedules.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from dpkd_bench.data.collate import encode_prompt
from dpkd_bench.data.tokenizer import train_bpe_tokenizer
from dpkd_bench.dev import DevSet, DevTracker
from dpkd_bench.generate import DecodeSettings, generate_texts
from dpkd_bench.methods import get_method
from dpkd_bench.models import build_model
from dpkd_bench.recipe import ModelConfig, TrainConfig
from dpkd_bench.train import BatchStream, train
from tests.conftest import tiny_corpus
from tests.test_resume import Interrupted, StopAfter
from tests.test_train_generate import context, items  # items: responses of unequal length

GLOBAL_BATCH, GRAD_ACCUM, N_ITEMS = 8, 2, 24
KD_CONFIG = TrainConfig(
    steps=3, batch_size=GLOBAL_BATCH, grad_accum=GRAD_ACCUM, lr=0.5, log_every=1,
    max_grad_norm=1e6, eval_every=1, select="best_dev",
)  # fmt: skip
GKD_CONFIG = TrainConfig(
    steps=4, batch_size=GLOBAL_BATCH, grad_accum=1, lr=1e-2, log_every=1, checkpoint_every=2
)


def tokenizer():
    return train_bpe_tokenizer([p + r for p, r in tiny_corpus()], vocab_size=320)


def make_model(tok, seed):
    cfg = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=256)
    return build_model(cfg, tok, seed=seed)


def sgd(model, cfg: TrainConfig):
    """Plain SGD at a constant rate: the weights move by exactly lr x the gradient."""
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def dev_set(tok) -> DevSet:
    """Seven dev prompts (an odd count: the processes' shares differ in size) whose references
    are the untrained student's own greedy answers: it starts at 100, and every later score
    depends on each answer meeting its own prompt's reference."""
    prompts = [encode_prompt(tok, prompt) for prompt, _ in tiny_corpus()[-7:]]
    start = make_model(tok, seed=2)
    settings = DecodeSettings(greedy=True, max_new_tokens=6)
    answers = generate_texts(start, tok, prompts, settings, seed=0, batch_size=8)
    return DevSet(prompts, [[answer] for answer in answers], tok, max_new_tokens=6)


def train_kd(tok, teacher, accelerator, log_path=None):
    """``kd`` with SGD for KD_CONFIG.steps steps from student seed 2, validated on the dev set
    every step and keeping the best-on-dev weights: (the student, its dev summary)."""
    student = make_model(tok, seed=2)
    ctx = context(tok, student, teacher, seed=accelerator.process_index)
    stream = BatchStream(items(tok, N_ITEMS), GLOBAL_BATCH, seed=3)
    dev = DevTracker(dev_set(tok), KD_CONFIG)
    with mock.patch("dpkd_bench.train.make_optimizer", sgd):
        result = train(
            get_method("kd"), student, KD_CONFIG, stream, ctx, accelerator, log_path, "kd",
            None, None, dev,
        )  # fmt: skip
    return student, result.dev


def train_gkd(tok, teacher, accelerator, checkpoint: Path, limit=None):
    student = make_model(tok, seed=2)
    ctx = context(tok, student, teacher, seed=10 + accelerator.process_index)
    stream = StopAfter(items(tok, N_ITEMS), GLOBAL_BATCH, seed=3)
    if limit is not None:
        stream.limit = limit
    method = get_method("gkd", lmbda=0.5)
    try:
        train(method, student, GKD_CONFIG, stream, ctx, accelerator, None, "gkd", checkpoint)
    except Interrupted:
        return None
    return student


def train_taid(tok, teacher, accelerator) -> dict:
    """``taid`` for 3 steps of 2 micro-batches with a step size that moves t visibly: its
    schedule afterwards (t, momentum, previous loss)."""
    student = make_model(tok, seed=2)
    ctx = context(tok, student, teacher, seed=accelerator.process_index)
    stream = BatchStream(items(tok, N_ITEMS), GLOBAL_BATCH, seed=3)
    method = get_method("taid", alpha=0.5)
    cfg = TrainConfig(steps=3, batch_size=GLOBAL_BATCH, grad_accum=GRAD_ACCUM, lr=1e-2)
    train(method, student, cfg, stream, ctx, accelerator, None, "taid")
    return method.schedule


def main(out: Path) -> None:
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes > 1, "launch with torchrun --nproc_per_node 2"
    tok = tokenizer()
    teacher = make_model(tok, seed=1).eval()
    student, dev = train_kd(tok, teacher, accelerator, out / "kd_log.jsonl")
    every = gather_object([dev])  # each process's own dev summary: they must agree
    if accelerator.is_main_process:
        torch.save(student.state_dict(), out / "kd.pt")
        (out / "kd_dev.json").write_text(json.dumps(every))

    whole = train_gkd(tok, teacher, accelerator, out / "gkd-whole")
    assert train_gkd(tok, teacher, accelerator, out / "gkd-resumed", limit=3) is None
    resumed = train_gkd(tok, teacher, accelerator, out / "gkd-resumed")
    if accelerator.is_main_process:
        torch.save(whole.state_dict(), out / "gkd_whole.pt")
        torch.save(resumed.state_dict(), out / "gkd_resumed.pt")
    schedules = gather_object([train_taid(tok, teacher, accelerator)])
    if accelerator.is_main_process:
        (out / "taid_schedules.json").write_text(json.dumps(schedules))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
