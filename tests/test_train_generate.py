"""Batching, decoding and the training loop on tiny random models (CPU, seconds)."""

from __future__ import annotations

import torch

from dpkd_bench.data.collate import IGNORE, collate_pairs, encode_pair, encode_prompt
from dpkd_bench.generate import DecodeSettings, generate_ids, response_lists
from dpkd_bench.methods import get_method
from dpkd_bench.methods.base import TrainContext
from dpkd_bench.train import BatchStream, accumulate

from .conftest import tiny_corpus


def context(tokenizer, student, teacher=None, seed=0):
    return TrainContext(
        student=student,
        teacher=teacher,
        tokenizer=tokenizer,
        sampling=DecodeSettings(max_new_tokens=8),
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )


def items(tokenizer, n=8):
    out = []
    for prompt, response in tiny_corpus()[:n]:
        pair = encode_pair(tokenizer, prompt, response * (1 + len(out) % 3), max_length=256)
        out.append({"prompts": pair.prompt_ids, "responses": pair.response_ids})
    return out


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
