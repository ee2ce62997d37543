"""Batching, decoding and the training loop on tiny random models (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.data.collate import IGNORE, collate_pairs, encode_prompt
from dpkd_bench.errors import UserError
from dpkd_bench.generate import DecodeSettings, generate_ids, response_lists, shard_slice
from dpkd_bench.methods import get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import (
    BatchStream,
    accumulate,
    check_shardable,
    shard_batch,
    train,
)
from dpkd_bench.unit_scopes import checkpointed_activations

from .conftest import context, items, tiny_corpus


def test_labels_mask_prompt_and_padding_and_end_with_eos(tokenizer):
    batch = items(tokenizer, 3)
    pairs = collate_pairs([b["prompts"] for b in batch], [b["responses"] for b in batch], 1)
    for row, item in enumerate(batch):
        n_prompt, n_resp = len(item["prompts"]), len(item["responses"])
        labels = pairs["labels"][row]
        assert (labels[:n_prompt] == IGNORE).all()
        assert labels[n_prompt + n_resp - 1] == tokenizer.eos_token_id
        assert (labels[n_prompt + n_resp :] == IGNORE).all()
        assert pairs["attention_mask"][row].sum() == n_prompt + n_resp


def test_batched_left_padded_greedy_equals_one_by_one(tokenizer, make_model):
    model = make_model(n_layer=2).eval()
    prompts = [encode_prompt(tokenizer, p) for p, _ in tiny_corpus()[::7][:6]]
    settings = DecodeSettings(greedy=True, max_new_tokens=6)
    kwargs = {"eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id, "seed": 0}
    batched = generate_ids(model, prompts, settings, batch_size=6, **kwargs)
    single = [generate_ids(model, [p], settings, batch_size=1, **kwargs)[0] for p in prompts]
    assert batched == single


def test_seeded_sampling_is_reproducible(tokenizer, make_model):
    model = make_model()
    prompts = [encode_prompt(tokenizer, p) for p, _ in tiny_corpus()[:5]]
    kwargs = {"eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id, "batch_size": 2}
    settings = DecodeSettings(max_new_tokens=6)
    first = generate_ids(model, prompts, settings, seed=3, **kwargs)
    assert first == generate_ids(model, prompts, settings, seed=3, **kwargs)
    assert first != generate_ids(model, prompts, settings, seed=4, **kwargs)


def test_decode_stops_each_row_at_its_first_eos(tokenizer, make_model):
    model = make_model()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompts = [encode_prompt(tokenizer, p) for p, _ in tiny_corpus()[:8]]
    ids = generate_ids(
        model,
        prompts,
        DecodeSettings(max_new_tokens=12),
        eos_id=eos,
        pad_id=pad,
        seed=0,
        batch_size=8,
        keep_eos=True,
    )
    for row in ids:
        assert pad not in row
        assert eos not in row[:-1]
    forced = torch.tensor([[9, eos, 11, 12], [9, 10, eos, pad]])
    assert response_lists(forced, eos, keep_eos=True) == [[9, eos], [9, 10, eos]]
    assert response_lists(forced, eos, keep_eos=False) == [[9], [9, 10]]


def test_batch_stream_is_deterministic_and_covers_an_epoch():
    data = [{"x": i} for i in range(10)]
    a, b = BatchStream(data, 5, seed=1), BatchStream(data, 5, seed=1)
    first = a.next_batch()["x"] + a.next_batch()["x"]
    assert sorted(first) == list(range(10))
    assert first == b.next_batch()["x"] + b.next_batch()["x"]


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_gradient_accumulation_normalises_by_the_whole_batch(tokenizer, make_model):
    """Two micro-batches of unequal token counts give the gradient of one batch of both."""
    data = items(tokenizer, 6)
    method = get_method("kd")
    teacher = make_model(seed=1).eval()
    whole, split = make_model(seed=2), make_model(seed=2)
    ctx = context(tokenizer, whole, teacher)
    big = {k: [d[k] for d in data] for k in data[0]}
    halves = [{k: [d[k] for d in part] for k in data[0]} for part in (data[:1], data[1:])]
    accumulate(method, whole, [method.prepare(big, ctx)], ctx, lambda loss: loss.backward())
    micro = [method.prepare(h, ctx) for h in halves]
    assert micro[0]["counts"]["tokens"] != micro[1]["counts"]["tokens"]
    accumulate(method, split, micro, ctx, lambda loss: loss.backward())
    torch.testing.assert_close(grads(whole), grads(split), rtol=1e-5, atol=1e-7)


def test_empty_batch_is_skipped_not_nan(tokenizer, make_model):
    method = get_method("sft")
    model = make_model()
    ctx = context(tokenizer, model)
    prepared = {"pairs": None, "counts": {"tokens": 0}}
    assert accumulate(method, model, [prepared], ctx, lambda loss: loss.backward()) is None


def test_dpkd_student_samples_padding_never_counts(tokenizer, make_model):
    data = items(tokenizer, 4)
    method = get_method("dpkd")
    student, teacher = make_model(seed=3), make_model(seed=4).eval()
    ctx = context(tokenizer, student, teacher)
    batch = {k: [d[k] for d in data] for k in data[0]}
    batch["teacher_responses"] = batch["responses"]
    prepared = method.prepare(batch, ctx)
    labels = prepared["pairs"]["labels"][2 * len(data) :]
    for row in labels:
        kept = row[row != IGNORE].tolist()
        assert tokenizer.pad_token_id not in kept
        assert tokenizer.eos_token_id not in kept[:-1]
    assert prepared["counts"]["sample_tokens"] == int((labels[:, 1:] != IGNORE).sum())


# ---- lean hot-loop options and sharding helpers ---------------------------------------------
def one_step(tokenizer, make_model, **options):
    """The student after one ``kd`` optimiser step of ``train`` with TrainConfig ``options``."""
    student, teacher = make_model(seed=2), make_model(seed=1).eval()
    cfg = TrainConfig(steps=1, batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=0, **options)
    stream = BatchStream(items(tokenizer, 8), 4, seed=0)
    ctx = context(tokenizer, student, teacher)
    train(get_method("kd"), student, cfg, stream, ctx, Accelerator(cpu=True))
    return student


def max_difference(a, b) -> float:
    return max(
        float((x - y).detach().abs().max())
        for x, y in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_bf16_autocast_step_runs_and_moves_the_weights(tokenizer, make_model):
    initial, full = make_model(seed=2), one_step(tokenizer, make_model)
    bf16 = one_step(tokenizer, make_model, mixed_precision="bf16")
    assert all(torch.isfinite(p).all() for p in bf16.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # weights stay fp32
    assert max_difference(bf16, initial) > 1e-3  # it learned
    assert max_difference(bf16, full) > 0  # another step than fp32's: the forward ran in bf16
    # AdamW's first step is lr * sign(gradient): bf16 can only flip the sign of tiny gradients
    assert max_difference(bf16, full) <= 2 * 1e-2 + 1e-6


def test_bf16_autocast_loss_is_close_to_the_fp32_loss(tokenizer, make_model):
    method, student, teacher = get_method("kd"), make_model(seed=2), make_model(seed=1).eval()
    ctx = context(tokenizer, student, teacher)
    data = items(tokenizer, 6)
    micro = [method.prepare({k: [d[k] for d in data] for k in data[0]}, ctx)]
    losses = {}
    for name, autocast in (("fp32", None), ("bf16", lambda: torch.autocast("cpu", torch.bfloat16))):
        logged = accumulate(method, student, micro, ctx, lambda loss: None, autocast=autocast)
        losses[name] = float(logged["ce"])
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def checkpointing(model) -> bool:
    """Whether activation checkpointing is on (no deprecated property read)."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer, make_model):
    method, teacher = get_method("kd"), make_model(seed=1).eval()
    data = items(tokenizer, 6)
    halves = [{k: [d[k] for d in part] for k in data[0]} for part in (data[:3], data[3:])]
    results = []
    for enabled in (False, True):
        student = make_model(seed=2).train()
        ctx = context(tokenizer, student, teacher)
        with checkpointed_activations(student, enabled):
            assert checkpointing(student) == enabled
            micro = [method.prepare(h, ctx) for h in halves]
            logged = accumulate(method, student, micro, ctx, lambda loss: loss.backward())
        assert not checkpointing(student)  # off again after the block
        results.append((logged, grads(student)))
    (plain_logged, plain_grads), (ckpt_logged, ckpt_grads) = results
    for term, value in plain_logged.items():
        torch.testing.assert_close(ckpt_logged[term], value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ckpt_grads, plain_grads, rtol=1e-5, atol=1e-7)
    stepped = one_step(tokenizer, make_model, gradient_checkpointing=True)
    assert max_difference(stepped, one_step(tokenizer, make_model)) < 1e-6
    assert not checkpointing(stepped)


def test_global_batches_shard_evenly_or_fail_with_a_user_error():
    batch = {"x": list(range(8)), "y": list("abcdefgh")}
    parts = [shard_batch(batch, rank, 2) for rank in (0, 1)]
    assert parts == [{"x": [0, 1, 2, 3], "y": list("abcd")}, {"x": [4, 5, 6, 7], "y": list("efgh")}]
    check_shardable(8, 2)
    with pytest.raises(UserError, match="batch_size 6 does not split over 4 processes"):
        check_shardable(6, 4)
    for n in (0, 1, 5, 8):
        shares = [list(range(n))[shard_slice(n, rank, 3)] for rank in range(3)]
        assert sum(shares, []) == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
