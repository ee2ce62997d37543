"""DistiLLM's adaptive off-policy schedule: threshold, sampling probability and replay buffer."""

from __future__ import annotations

import dataclasses

import pytest

from dpkd_bench.methods import distillm, get_method
from dpkd_bench.methods.distillm import (
    AdaptiveConfig,
    AdaptiveOffPolicy,
    choose_source,
    raised_threshold,
    sampling_threshold,
)

from .conftest import context, items


def test_official_defaults():
    config = get_method("skew_rkl").config
    assert (config.adaptive, config.init_threshold, config.loss_eps) == (True, 0.0, 0.1)
    assert (config.capacity, config.replay_ratio, config.eval_every) == (1000, "decreasing", 0)


def test_sampling_threshold_schedules():
    assert sampling_threshold(0.4, 0.0, "decreasing") == pytest.approx(0.4)
    assert sampling_threshold(0.4, 0.75, "decreasing") == pytest.approx(0.1)
    assert sampling_threshold(0.4, 0.75, "increasing") == pytest.approx(0.3)
    assert sampling_threshold(0.4, 0.75, "constant") == pytest.approx(0.2)


def test_choose_source_follows_the_official_branches():
    assert choose_source(0.05, 0.3, 0.1, buffer_full=True) == "student"
    assert choose_source(0.2, 0.3, 0.1, buffer_full=False) == "student"
    assert choose_source(0.2, 0.3, 0.1, buffer_full=True) == "replay"
    assert choose_source(0.5, 0.3, 0.1, buffer_full=False) == "ground_truth"
    assert choose_source(0.0, 0.0, 0.0, buffer_full=False) == "ground_truth"


def test_threshold_rises_only_when_validation_loss_rises_by_eps():
    assert raised_threshold(0.0, 2.0, 2.05, 0.1) == (0.0, 2.0)
    assert raised_threshold(0.0, 2.0, 2.1, 0.1) == (0.1, 2.1)
    assert raised_threshold(0.95, 2.0, 3.0, 0.1) == (1.0, 3.0)
    assert raised_threshold(0.3, 2.0, 1.0, 0.1) == (0.3, 2.0)  # improvements keep the reference


def test_config_is_checked():
    from dpkd_bench.config import FieldError
    from dpkd_bench.errors import UserError

    with pytest.raises(UserError, match="replay_ratio"):
        get_method("skew_fkl", replay_ratio="sometimes")
    with pytest.raises(FieldError, match="capacity"):
        AdaptiveConfig(capacity=0)


def _ctx(tokenizer, make_model, dev=()):
    student = make_model(seed=3)
    ctx = context(tokenizer, student)
    return dataclasses.replace(ctx, dev_items=list(dev), total_steps=10, steps_per_epoch=2)


def _batch(tokenizer, n=3):
    data = items(tokenizer, n)
    return {k: [d[k] for d in data] for k in data[0]}


def test_zero_threshold_keeps_ground_truth(tokenizer, make_model):
    schedule = AdaptiveOffPolicy(AdaptiveConfig())
    ctx = _ctx(tokenizer, make_model, items(tokenizer, 4))
    batch = _batch(tokenizer)
    for _ in range(5):
        out, source = schedule.batch(batch, ctx)
        assert source == "ground_truth" and out is batch
    assert len(schedule.buffer) == 0 and schedule.prev_loss is not None


def test_student_samples_fill_the_buffer_then_replay(tokenizer, make_model):
    schedule = AdaptiveOffPolicy(AdaptiveConfig(init_threshold=1.0, capacity=4))
    schedule.threshold = 1.0
    ctx = _ctx(tokenizer, make_model)
    batch = _batch(tokenizer)
    out, source = schedule.batch(batch, ctx)
    assert source == "student" and len(schedule.buffer) == 3
    assert out["prompts"] == batch["prompts"] and out["responses"] != batch["responses"]
    eos = tokenizer.eos_token_id
    for response in out["responses"]:  # nothing after the first EOS
        assert eos not in response[:-1]
    schedule.batch(batch, ctx)
    assert len(schedule.buffer) == 4  # capacity: the oldest sequences drop out
    sources = {schedule.batch(batch, ctx)[1] for _ in range(20)}
    assert "replay" in sources  # buffer full and r above the decaying sampling threshold
    replayed = next(o for o, s in iter(lambda: schedule.batch(batch, ctx), None) if s == "replay")
    assert len(replayed["prompts"]) == 3
    pairs = set(schedule.buffer)
    assert all(
        (tuple(p), tuple(r)) in pairs
        for p, r in zip(replayed["prompts"], replayed["responses"], strict=True)
    )


def test_validation_schedule_raises_the_threshold(tokenizer, make_model, monkeypatch):
    losses = iter([2.0, 2.5, 2.55, 2.7])
    monkeypatch.setattr(distillm, "validation_ce", lambda ctx, size: next(losses))
    schedule = AdaptiveOffPolicy(AdaptiveConfig())
    ctx = _ctx(tokenizer, make_model, items(tokenizer, 2))  # validation every 2 steps
    batch = _batch(tokenizer)
    seen = []
    for _ in range(7):
        schedule.batch(batch, ctx)
        seen.append(schedule.threshold)
    # before training: 2.0; step 2: 2.5 (+0.1); step 4: 2.55 (no); step 6: 2.7 (+0.1)
    assert seen == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.2])


def test_state_round_trip(tokenizer, make_model):
    schedule = AdaptiveOffPolicy(AdaptiveConfig(capacity=8))
    schedule.threshold, schedule.prev_loss, schedule.micro_steps = 0.3, 1.5, 7
    schedule.buffer.extend([((1, 2), (3, 0)), ((4,), (5, 0))])
    restored = AdaptiveOffPolicy(AdaptiveConfig(capacity=8))
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict() == schedule.state_dict()
    assert list(restored.buffer) == list(schedule.buffer)


def test_method_logs_source_and_threshold(tokenizer, make_model):
    method = get_method("skew_fkl", init_threshold=1.0)
    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    ctx = dataclasses.replace(context(tokenizer, student, teacher), total_steps=4)
    prepared = method.prepare(_batch(tokenizer), ctx)
    terms = method.loss_terms(student, prepared, ctx)
    assert float(terms["student_data"]) == 1.0 and float(terms["threshold"]) == 1.0
    assert method.weights() == {"ce": 0.0, "distill": 1.0}
