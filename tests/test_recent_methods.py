"""The 2024-2025 methods in the training loop: their schedules, their samples and their resume.

The pure losses are checked against the official formulas in ``test_losses_recent.py``; the
gradient-accumulation invariance of every method is in ``test_grad_accum.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator

import dpkd_bench.methods.distillm2 as distillm2_module
from dpkd_bench.checkpoint import checkpoint_step
from dpkd_bench.methods import get_method
from dpkd_bench.methods.distillm2 import pair_weight
from dpkd_bench.methods.taid import TAIDConfig, next_t
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train

from .conftest import context
from .conftest import items as base_items
from .test_resume import Interrupted, StopAfter

NEW = ("opd", "distillm2", "abkd", "akl", "taid")


def items(tokenizer, n=8):
    """Training items with a teacher sample each (the prompt's response, shortened)."""
    return [
        {**item, "teacher_responses": item["responses"][: 1 + len(item["responses"]) // 2]}
        for item in base_items(tokenizer, n)
    ]


def run(method, tokenizer, make_model, stream, checkpoint_dir=None, steps=6, seed=0):
    student = make_model(seed=2)
    teacher = make_model(seed=1).eval()
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, log_every=1, checkpoint_every=2)
    ctx = context(tokenizer, student, teacher, seed=seed)
    train(method, student, cfg, stream, ctx, Accelerator(cpu=True), None, "t", checkpoint_dir)
    return student


@pytest.mark.parametrize(
    "name, settings",
    [("taid", {"alpha": 0.3}), ("distillm2", {"gradual_beta": True}), ("opd", {})],
)
def test_a_unit_resumed_mid_way_keeps_its_schedule_and_samples(
    name, settings, tokenizer, make_model, tmp_path
):
    data = items(tokenizer)
    whole_method = get_method(name, **settings)
    whole = run(whole_method, tokenizer, make_model, BatchStream(data, 4, seed=3), tmp_path / "a")
    stopped = StopAfter(data, 4, seed=3)
    stopped.limit = 4  # dies preparing step 5: the checkpoint is at step 4
    with pytest.raises(Interrupted):
        run(get_method(name, **settings), tokenizer, make_model, stopped, tmp_path / "b")
    assert checkpoint_step(tmp_path / "b") == 4
    method = get_method(name, **settings)
    resumed = run(
        method, tokenizer, make_model, BatchStream(data, 4, seed=3), tmp_path / "b", seed=9
    )
    assert method.state_dict() == whole_method.state_dict()
    for (key, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), key


def test_taid_interpolation_rises_from_t_start_to_at_least_its_linear_floor(tokenizer, make_model):
    method = get_method("taid", t_start=0.2, t_end=0.9)
    run(method, tokenizer, make_model, BatchStream(items(tokenizer), 4, seed=3))
    floor = 0.2 + 0.7 * 5 / 6  # the linear schedule after the update of step 6
    assert floor <= method.schedule["t"] <= 0.9
    assert math.isfinite(method.schedule["prev_loss"])


def test_taid_schedule_without_adaptation_is_the_linear_one():
    cfg = TAIDConfig(t_start=0.4, adaptive=False)
    state = {"t": 0.4, "momentum": 0.0, "prev_loss": math.inf}
    for step, loss in enumerate([3.0, 2.0, 2.5, 1.0]):
        state = next_t(cfg, state, loss, step / 4)
        assert state["t"] == pytest.approx(0.4 + 0.6 * step / 4)


def test_distillm2_samples_each_prompt_once_with_the_starting_weights(
    tokenizer, make_model, monkeypatch
):
    calls = []
    sample = distillm2_module.sample_student

    def spy(prompts, ctx, settings=None, mix_alpha=0.0):
        calls.append((len(prompts), {k: v.clone() for k, v in ctx.student.state_dict().items()}))
        assert (settings.temperature, settings.top_p, settings.top_k) == (0.8, 0.95, 0)
        return sample(prompts, ctx, settings, mix_alpha)

    monkeypatch.setattr(distillm2_module, "sample_student", spy)
    method = get_method("distillm2")
    start = make_model(seed=2).state_dict()
    trained = run(method, tokenizer, make_model, BatchStream(items(tokenizer), 4, seed=3))
    assert sum(n for n, _ in calls) == len(method.responses) == 8  # 6 steps over 8 prompts
    for _, weights in calls:  # every sample drawn by the starting student, not the trained one
        assert all(torch.equal(weights[k], start[k]) for k in start)
    assert not all(torch.equal(trained.state_dict()[k], start[k]) for k in start)


def test_distillm2_curriculum_moves_the_weights_over_the_first_half():
    assert [pair_weight(s, 10, False) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [pair_weight(s, 10, True) for s in (0, 1, 5, 9)] == [1.0, 1.1, 1.5, 1.5]


def test_opd_first_pass_is_on_policy_its_loss_the_sampled_reverse_kl(tokenizer, make_model):
    """Sampled and trained by the same weights (dropout off): the importance ratio is 1, so the
    policy loss equals the sampled tokens' reverse KL (kl_coef 1)."""
    method = get_method("opd")
    student, teacher = make_model(seed=2), make_model(seed=1).eval()
    ctx = context(tokenizer, student, teacher, seed=0)
    with torch.no_grad():
        prepared = method.prepare(BatchStream(items(tokenizer), 4, seed=3).next_batch(), ctx)
    terms = method.loss_terms(student.eval(), prepared, ctx)
    assert float(terms["policy"].detach()) == pytest.approx(float(terms["sampled_rkl"]), rel=1e-5)
    terms["policy"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("name", NEW)
def test_new_methods_say_what_they_train_on_and_how_they_differ(name):
    info = get_method(name).describe()
    assert info["data"] and info["deviation"]
    assert "arXiv" in info["paper"] or "tinker" in info["paper"]


def test_taid_logs_the_t_each_step_trained_with(tokenizer, make_model, tmp_path):
    """The train log's ``t`` is the interpolation of the step (a mean over its micro-batches),
    then the one the adaptive update moved it to."""
    method = get_method("taid", alpha=0.3)
    student, teacher = make_model(seed=2), make_model(seed=1).eval()
    cfg = TrainConfig(steps=3, batch_size=4, grad_accum=2, lr=1e-2, log_every=1)
    ctx = context(tokenizer, student, teacher)
    log = tmp_path / "log.jsonl"
    stream = BatchStream(items(tokenizer), 4, seed=3)
    seen = []
    end_step = method.end_step

    def spy(step, logged):
        seen.append(method.schedule["t"])
        end_step(step, logged)

    method.end_step = spy
    train(method, student, cfg, stream, ctx, Accelerator(cpu=True), log, "t")
    logged = [json.loads(line)["t"] for line in log.read_text().splitlines()]
    assert logged == pytest.approx(seen) and logged[0] == pytest.approx(0.4)
    assert logged[2] > logged[1]  # moved by the update after step 2
