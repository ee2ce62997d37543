"""Every registered method: one step trains the student and leaves the teacher untouched."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from dpkd_bench.errors import UserError
from dpkd_bench.methods import METHODS, get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train

from .conftest import context, items

# Official defaults (papers and their code), one row per method.
DEFAULTS = {
    "sft": {},
    "kd": {"kd_ratio": 0.5, "temperature": 1.0},
    "seqkd": {"kd_ratio": 0.5},
    "rkl": {"kd_ratio": 0.5},
    "minillm": {"mix_alpha": 0.2, "clip_epsilon": 0.2, "gamma": 0.95, "ppo_epochs": 4},
    "skew_fkl": {"alpha": 0.1, "kd_ratio": 1.0},
    "skew_rkl": {"alpha": 0.1, "kd_ratio": 1.0},
    "gkd": {"beta": 0.5, "lmbda": 0.5, "temperature": 0.9},
    "tvd": {"kd_ratio": 0.5},
    "dpkd": {"beta": 0.1, "pref_weight": 0.5, "ce_weight": 0.5, "length_normalize": True},
    "dpkd_token": {"beta": 0.1, "kd_ratio": 0.5, "label_smoothing": 0.0, "ipo": False},
    "opd": {"temperature": 1.0, "kl_coef": 1.0},  # tinker-cookbook
    "distillm2": {"alpha": 0.1, "gradual_beta": False, "temperature": 0.8, "top_p": 0.95},
    "abkd": {"alpha": 0.2, "beta": 0.7, "kd_ratio": 1.0},  # the 0.3B/0.7B scripts
    "akl": {"mu": 0.5, "kd_ratio": 0.5},
    "taid": {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "kd_ratio": 1.0},
}


def test_registry_names():
    assert set(METHODS) >= set(DEFAULTS)


@pytest.mark.parametrize("name", DEFAULTS)
def test_defaults_match_the_papers(name):
    config = get_method(name).config
    for key, value in DEFAULTS[name].items():
        assert getattr(config, key) == value, (name, key)


def test_unknown_method_suggests_closest():
    with pytest.raises(UserError, match=r"unknown method 'dpdk' \(did you mean 'dpkd'\?\)"):
        get_method("dpdk")


def test_overrides_are_checked():
    assert get_method("dpkd", beta=0.5).config.beta == 0.5
    with pytest.raises(UserError, match="method_args.gkd.lmbda"):
        get_method("gkd", lmbda=2.0)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step_changes_student_not_teacher(name, tokenizer, make_model):
    method = get_method(name)
    student, teacher = make_model(seed=5), make_model(seed=6)
    teacher.eval().requires_grad_(False)
    data = items(tokenizer, 6)
    if method.uses_teacher_samples:
        data = [{**d, "teacher_responses": d["responses"]} for d in data]
        if method.train_data == "teacher_samples":
            data = [{"prompts": d["prompts"], "responses": d["responses"]} for d in data]
    before_s, before_t = snapshot(student), snapshot(teacher)
    ctx = context(tokenizer, student, teacher if method.uses_teacher else None)
    cfg = TrainConfig(steps=1, batch_size=3, lr=1e-2, warmup_ratio=0.0)
    train(method, student, cfg, BatchStream(data, 3, seed=0), ctx, Accelerator(cpu=True))
    changed = [k for k, v in snapshot(student).items() if not torch.equal(v, before_s[k])]
    assert changed, f"{name}: no student weight changed"
    assert all(torch.equal(v, before_t[k]) for k, v in snapshot(teacher).items())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_describe_has_paper_and_defaults(name):
    info = METHODS[name]().describe()
    assert info["paper"] and info["data"]
    assert set(info["defaults"]) == {f.name for f in dataclasses.fields(METHODS[name].Config)}


def test_minillm_returns_are_length_normalised_and_whitened_over_the_padded_tensor():
    from dpkd_bench.methods.minillm import length_normalised_returns, padded_moments

    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    returns = length_normalised_returns(rewards, mask, gamma=1.0)
    torch.testing.assert_close(returns, torch.tensor([[2.0, 2.5, 3.0, 0.0]]))
    discounted = length_normalised_returns(rewards, mask, gamma=0.5)
    torch.testing.assert_close(discounted[0, 1], torch.tensor((2.0 + 0.5 * 3.0) / 2))
    # the official whitening counts the padding zeros of a [rows, max_new_tokens] tensor
    mean, var = padded_moments([torch.tensor([2.0, 2.5, 3.0]), torch.tensor([1.0])], width=4)
    padded = torch.tensor([[2.0, 2.5, 3.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(mean, padded.mean())
    torch.testing.assert_close(var, padded.var(unbiased=False))


def test_minillm_store_serves_ppo_epochs_shuffled_passes(tokenizer, make_model):
    """A store of rollout_size responses, drawn from consecutive batches, then ppo_epochs
    passes over it in a new order each, before the next store is sampled."""
    method = get_method("minillm", ppo_epochs=2, rollout_size=8)
    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    ctx = context(tokenizer, student, teacher)
    method.start(ctx)
    data = items(tokenizer, 8)
    draws = []

    def draw():
        chunk = data[4 * (len(draws) % 2) :][:4]
        draws.append(chunk)
        return {k: [d[k] for d in chunk] for k in chunk[0]}

    with torch.no_grad():
        served = [method.prepare_next(draw, ctx) for _ in range(4)]
    assert len(draws) == 2  # one store of 8 from two batches of 4
    prompts = [[tuple(r) for r in m["pairs"]["input_ids"].tolist()] for m in served]
    first_pass, second_pass = prompts[0] + prompts[1], prompts[2] + prompts[3]
    assert sorted(first_pass) == sorted(second_pass) and first_pass != second_pass
    with torch.no_grad():
        method.prepare_next(draw, ctx)
    assert len(draws) == 4  # the next store


def test_minillm_store_is_global_each_process_keeps_its_share(tokenizer, make_model):
    """rollout_size counts the rollouts of every process (official --num-rollouts, divided by
    the number of GPUs): with two processes each one samples half."""
    method = get_method("minillm", ppo_epochs=1, rollout_size=8)
    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    ctx = dataclasses.replace(context(tokenizer, student, teacher), processes=2)
    method.start(ctx)
    data = items(tokenizer, 8)
    draws = []

    def draw():
        draws.append(data[:2])
        return {k: [d[k] for d in data[:2]] for k in data[0]}

    with torch.no_grad():
        method.prepare_next(draw, ctx)
    assert len(draws) == 2 and len(method.state_dict()["store"]) == 4


def test_dpkd_ce_on_teacher_samples_trains_two_blocks_and_scores_y_t(tokenizer, make_model):
    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    ctx = context(tokenizer, student, teacher)
    batch = {k: [d[k] for d in items(tokenizer, 3)] for k in ("prompts", "responses")}
    batch["teacher_responses"] = [r[:2] for r in batch["responses"]]
    method = get_method("dpkd", ce_data="teacher_samples", pref_weight=0.0)
    with torch.no_grad():
        prepared = method.prepare(batch, ctx)
        terms = method.loss_terms(student, prepared, ctx)
    assert prepared["pairs"]["input_ids"].shape[0] == 6  # [y_t; y_s], no ground-truth block
    assert prepared["counts"]["tokens"] == 6  # y_t's tokens, 2 per prompt
    with torch.no_grad():
        rows = [
            (student(torch.tensor([p + r])).logits[0, len(p) - 1 : -1], torch.tensor(r))
            for p, r in zip(batch["prompts"], batch["teacher_responses"], strict=True)
        ]
    expected = sum(float(F.cross_entropy(x, y, reduction="sum")) for x, y in rows)
    assert float(terms["ce"]) == pytest.approx(expected, rel=1e-4)
    assert method.workload().student_train == 2.0


def test_gkd_seq_kd_samples_the_teacher_fresh_at_the_gkd_temperature(
    tokenizer, make_model, monkeypatch
):
    import dpkd_bench.methods.gkd as gkd_module

    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    seen = []
    sample = gkd_module.sample_student

    def spy(prompts, ctx, settings=None, mix_alpha=0.0):
        seen.append((ctx.student is teacher, settings.temperature))
        return sample(prompts, ctx, settings, mix_alpha)

    monkeypatch.setattr(gkd_module, "sample_student", spy)
    method = get_method("gkd", lmbda=0.0, seq_kd=True)
    assert not method.uses_teacher_samples  # no cached samples: TRL draws them per batch
    batch = {k: [d[k] for d in items(tokenizer, 2)] for k in ("prompts", "responses")}
    with torch.no_grad():
        method.prepare(batch, context(tokenizer, student, teacher))
    assert seen == [(True, 0.9)]
