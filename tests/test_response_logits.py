"""``response_logits``: the output projection runs on the response positions only, whatever
slicing the model's forward supports, and the rows are those of the full logits; decoding
projects the last position only."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from dpkd_bench import generate
from dpkd_bench.data.collate import collate_pairs, collate_prompts
from dpkd_bench.generate import DecodeSettings, decode
from dpkd_bench.methods import METHODS, base, get_method
from dpkd_bench.methods.base import (
    forward_logits,
    keeps_masked_logits,
    response_ce_sum,
    response_logits,
    shifted_labels,
)

from .conftest import context, items


class IntegerKeep(GPT2LMHeadModel):
    """A causal LM whose ``logits_to_keep`` takes a count of last positions only."""

    def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0):
        assert isinstance(logits_to_keep, int)
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep
        )


class NoKeep(GPT2LMHeadModel):
    """A causal LM that always returns the logits of every position."""

    def forward(self, input_ids=None, attention_mask=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask)


class Wrapper(torch.nn.Module):
    """Stands for DDP / FSDP: the model under ``.module``, the forward passed through."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def same_weights(cls, model):
    other = cls(model.config)
    other.load_state_dict(model.state_dict())
    return other.eval()


def projected_rows(model) -> list[int]:
    """Rows the output projection sees, per forward (a hook on the ``lm_head``)."""
    seen: list[int] = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].reshape(-1, 1).numel()))
    return seen


@pytest.fixture
def pairs(tokenizer):
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]  # prompts of 6, 2, 4 tokens
    responses = [[20, 21, 2], [22, 23, 24, 25, 2], [26, 2]]
    return collate_pairs(prompts, responses, tokenizer.pad_token_id)


@pytest.mark.parametrize(
    ("cls", "rows"),
    [
        (GPT2LMHeadModel, lambda mask: int(mask.sum())),  # exactly the response rows
        (IntegerKeep, lambda mask: mask.shape[0] * mask.shape[1]),  # positions 1..L-1
        (NoKeep, lambda mask: mask.shape[0] * (mask.shape[1] + 1)),  # every position
    ],
)
def test_rows_equal_the_full_logits_and_only_needed_ones_are_projected(
    cls, rows, pairs, make_model
):
    model = same_weights(cls, make_model(seed=3))
    _, mask = shifted_labels(pairs)
    with torch.no_grad():
        full = forward_logits(model, pairs)[mask]
        seen = projected_rows(model)
        got = response_logits(model, pairs, mask)
    hidden = model.config.n_embd
    assert seen == [rows(mask) * hidden]
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-6)


def test_wrapped_models_are_seen_through(make_model, pairs):
    model = make_model(seed=3).eval()
    assert keeps_masked_logits(Wrapper(model)) and keeps_masked_logits(model)
    assert not keeps_masked_logits(Wrapper(same_weights(NoKeep, model)))
    _, mask = shifted_labels(pairs)
    with torch.no_grad():
        torch.testing.assert_close(
            response_logits(Wrapper(model), pairs, mask), forward_logits(model, pairs)[mask]
        )


def test_no_response_position_gives_no_rows(make_model, pairs):
    model = make_model(seed=3).eval()
    _, mask = shifted_labels(pairs)
    for cls in (GPT2LMHeadModel, IntegerKeep, NoKeep):
        with torch.no_grad():
            got = response_logits(same_weights(cls, model), pairs, torch.zeros_like(mask))
        assert got.shape == (0, model.config.vocab_size)


def test_response_ce_sum_is_the_masked_cross_entropy(make_model, pairs):
    model = make_model(seed=3)
    labels, mask = shifted_labels(pairs)
    logits = forward_logits(model, pairs)
    want = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
    got = response_ce_sum(model, pairs)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.backward()  # the gradient reaches the body through the kept rows
    assert model.transformer.wte.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_the_terms_of_the_full_projection(
    name, tokenizer, make_model, monkeypatch
):
    """Each method's terms and gradients with the response rows only equal those computed from
    the logits of every position (``response_logits``' fallback, forced here)."""
    overrides = {"gkd": {"lmbda": 1.0}, "minillm": {"rollout_size": 6}}
    method = get_method(name, **overrides.get(name, {}))
    student, teacher = make_model(seed=5), make_model(n_layer=2, seed=6).eval()
    data = [{**d, "teacher_responses": d["responses"][1:]} for d in items(tokenizer, 6)]
    ctx = context(tokenizer, student, teacher)
    method.start(ctx)
    batch = {key: [d[key] for d in data] for key in data[0]}

    def terms_and_grads():
        student.zero_grad()
        seen = projected_rows(student)
        terms = method.loss_terms(student, prepared, ctx)
        sum(value for value in terms.values() if value.requires_grad).backward()
        student.get_output_embeddings()._forward_hooks.clear()
        return terms, [p.grad.clone() for p in student.parameters()], sum(seen)

    with torch.no_grad():
        prepared = method.prepare_next(lambda: batch, ctx)
    rows_terms, rows_grads, rows_projected = terms_and_grads()
    monkeypatch.setattr(base, "_forward_source", lambda model: "")  # full logits, then [mask]
    full_terms, full_grads, full_projected = terms_and_grads()
    assert rows_projected < full_projected  # the fast path projected fewer positions
    assert rows_terms.keys() == full_terms.keys()
    for key, value in rows_terms.items():
        torch.testing.assert_close(value, full_terms[key], rtol=1e-5, atol=1e-6, msg=key)
    for got, want in zip(rows_grads, full_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_decoding_projects_only_the_last_position_and_decodes_the_same(
    tokenizer, make_model, monkeypatch
):
    model = make_model(seed=3).eval()
    prompts = collate_prompts([[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]], 0)
    settings = DecodeSettings(greedy=True, max_new_tokens=4)

    def greedy():
        seen = projected_rows(model)
        out = decode(model, prompts["input_ids"], prompts["attention_mask"], settings, 2, 0)
        model.get_output_embeddings()._forward_hooks.clear()
        return out, seen

    fast, seen = greedy()
    assert seen[0] == 3 * model.config.n_embd  # the prefill: one position per prompt
    original = generate._CachedModel.__init__

    def full_logits(self, *args):
        original(self, *args)
        self.keep = {}

    monkeypatch.setattr(generate._CachedModel, "__init__", full_logits)
    slow, seen = greedy()
    assert seen[0] == prompts["input_ids"].numel() * model.config.n_embd
    assert torch.equal(fast, slow)


def test_sft_on_every_position_is_the_same_loss(tokenizer, make_model, pairs):
    model = make_model(seed=3)
    prepared = {"pairs": pairs}
    fast, full = get_method("sft"), get_method("sft", response_rows=False)
    seen = projected_rows(model)
    rows_ce = fast.loss_terms(model, prepared, None)["ce"]
    full_ce = full.loss_terms(model, prepared, None)["ce"]
    assert seen[0] < seen[1] == pairs["input_ids"].numel() * model.config.n_embd
    torch.testing.assert_close(rows_ce, full_ce, rtol=1e-6, atol=1e-6)
