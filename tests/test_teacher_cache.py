"""Teacher-logit cache: top-k rows, shards on disk, bucketed losses, and the methods' two paths."""

from __future__ import annotations

import pytest
import torch

from dpkd_bench import losses, teacher_cache
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods import TEACHER_FORCED, get_method
from dpkd_bench.methods.base import forward_logits, shifted_labels
from dpkd_bench.teacher_cache import (
    bucketed,
    build_cache,
    fold_rest,
    pair_keys,
    spread_teacher,
    topk_rows,
)

from .conftest import context, items

TOKEN_LEVEL = TEACHER_FORCED
DIVERGENCES = [
    losses.token_forward_kl,
    losses.token_reverse_kl,
    losses.token_total_variation,
    losses.token_skew_forward_kl,
    losses.token_skew_reverse_kl,
    losses.token_generalized_jsd,
]


def batch_of(data):
    return {key: [d[key] for d in data] for key in data[0]}


def test_topk_rows_hold_the_teacher_distribution():
    logits = torch.randn(5, 40)
    ids, logp, rest = topk_rows(logits, 8)
    log_p = torch.log_softmax(logits, -1)
    assert torch.equal(logp, log_p.gather(-1, ids))
    assert torch.equal(ids, log_p.topk(8, -1).indices)
    total = torch.logaddexp(torch.logsumexp(logp, -1), rest)
    assert torch.allclose(total, torch.zeros(5), atol=1e-6)


def test_fold_rest_equals_a_smaller_k():
    logits = torch.randn(4, 30)
    _, logp, rest = topk_rows(logits, 10)
    _, logp3, rest3 = topk_rows(logits, 3)
    folded_logp, folded_rest = fold_rest(logp, rest, 3)
    assert torch.equal(folded_logp, logp3)
    assert torch.allclose(folded_rest, rest3, atol=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_buckets_never_exceed_the_exact_divergence(divergence):
    # data-processing inequality: coarsening both distributions can only lose divergence
    student, teacher = torch.randn(6, 50) * 2, torch.randn(6, 50) * 2
    exact = divergence(student[None], teacher[None])[0]
    cached = bucketed(divergence, student, topk_rows(teacher, 5))
    assert (cached <= exact + 1e-5).all()


@pytest.mark.parametrize("divergence", [*DIVERGENCES, losses.token_dpkd])
def test_one_token_in_the_rest_bucket_is_exact(divergence):
    # k = V - 1: the rest bucket is a single token, so the buckets are the distributions
    student, teacher = torch.randn(6, 20), torch.randn(6, 20)
    cached = topk_rows(teacher, 19)
    exact = divergence(student[None], teacher[None])[0]
    assert torch.allclose(bucketed(divergence, student, cached), exact, atol=1e-5)
    assert torch.allclose(teacher_cache.spread(divergence, student, cached), exact, atol=1e-5)


def test_spread_teacher_is_exact_on_top_k_and_uniform_elsewhere():
    ids, logp, rest = topk_rows(torch.randn(3, 12), 4)
    full = spread_teacher(ids, logp, rest, 12)
    assert torch.allclose(full.logsumexp(-1), torch.zeros(3), atol=1e-6)
    assert torch.equal(full.gather(-1, ids), logp)
    outside = full.scatter(-1, ids, float("nan"))
    assert torch.allclose(
        outside[~outside.isnan()].view(3, 8),
        (rest - torch.log(torch.tensor(8.0)))[:, None].expand(3, 8),
    )


def test_pair_keys_recover_prompts_and_responses(tokenizer):
    data = items(tokenizer, 5)
    pairs = collate_pairs([d["prompts"] for d in data], [d["responses"] for d in data], 0)
    assert pair_keys(pairs) == [(tuple(d["prompts"]), tuple(d["responses"])) for d in data]


@pytest.fixture
def cache_setup(tokenizer, make_model, tmp_path):
    teacher = make_model(n_layer=2, seed=3).eval().requires_grad_(False)
    data = items(tokenizer, 8)
    cache = build_cache(
        teacher, data, k=16, path=tmp_path, batch_size=3, pad_id=tokenizer.pad_token_id
    )
    return teacher, data, cache


def test_build_then_lookup_matches_the_teacher(cache_setup, tokenizer):
    teacher, data, cache = cache_setup
    batch = batch_of(data[:4])
    pairs = collate_pairs(batch["prompts"], batch["responses"], tokenizer.pad_token_id)
    _, mask = shifted_labels(pairs)
    with torch.no_grad():
        logits = forward_logits(teacher, pairs)[mask]
    ids, logp, rest = topk_rows(logits, 16)
    got_ids, got_logp, got_rest = cache.rows([0, 1, 2, 3])
    assert torch.equal(got_ids, ids)
    assert torch.allclose(got_logp, logp, atol=2e-2, rtol=1e-3)  # fp16 storage
    assert torch.allclose(got_rest, rest, atol=2e-2, rtol=1e-3)
    padded_ids, padded_logp, padded_rest = cache.lookup([0, 1, 2, 3])
    lengths = [len(d["responses"]) for d in data[:4]]
    assert padded_ids.shape == (4, max(lengths), 16) and padded_rest.shape == (4, max(lengths))
    valid = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    assert torch.equal(padded_ids[valid], got_ids) and torch.equal(padded_logp[valid], got_logp)
    assert (padded_logp[~valid] == float("-inf")).all()


def test_cache_is_reused_not_recomputed(cache_setup, tokenizer, tmp_path, monkeypatch):
    teacher, data, cache = cache_setup
    assert cache.path.parent == tmp_path and cache.path.name.startswith("teacher-topk-")
    monkeypatch.setattr(teacher_cache, "_write_shard", lambda *a, **k: pytest.fail("recomputed"))
    again = build_cache(teacher, data, k=16, path=tmp_path, pad_id=tokenizer.pad_token_id)
    assert again.path == cache.path and len(again) == len(data)


def test_shards_split_items(tokenizer, make_model, tmp_path):
    teacher = make_model(seed=3).eval()
    data = items(tokenizer, 7)
    pad = tokenizer.pad_token_id
    sharded = build_cache(teacher, data, 8, tmp_path / "a", pad_id=pad, shard_items=3)
    single = build_cache(teacher, data, 8, tmp_path / "b", pad_id=pad)
    assert len(list(sharded.path.glob("shard-*.ids.npy"))) == 3
    for got, want in zip(sharded.rows(range(7)), single.rows(range(7)), strict=True):
        assert torch.allclose(got.float(), want.float(), atol=2e-3)


def terms_and_grads(method, student, prepared, ctx):
    student.zero_grad()
    terms = method.loss_terms(student, prepared, ctx)
    (terms["ce"] + terms["distill"]).backward()
    return terms, [p.grad.clone() for p in student.parameters()]


@pytest.mark.parametrize("name", TOKEN_LEVEL)
def test_exact_path_is_the_full_tensor_formula(name, tokenizer, make_model):
    method = get_method(name, **TOKEN_LEVEL[name])
    student, teacher = make_model(seed=5), make_model(n_layer=2, seed=6).eval()
    ctx = context(tokenizer, student, teacher)
    prepared = method.prepare(batch_of(items(tokenizer, 6)), ctx)
    terms, grads = terms_and_grads(method, student, prepared, ctx)
    # the formula before response-row selection: per-position values over [B, T, V], masked sum
    student.zero_grad()
    pairs = prepared["pairs"]
    s_logits = forward_logits(student, pairs)
    with torch.no_grad():
        t_logits = forward_logits(teacher, pairs)
    labels, mask = shifted_labels(pairs)
    ce = losses.masked_sum(losses.token_cross_entropy(s_logits, labels), mask)
    distill = losses.masked_sum(method.divergence(s_logits, t_logits), mask)
    (ce + distill).backward()
    # the same per-row values, summed the same way: only the output projection's matmul (over
    # the response rows instead of every position) may round differently
    torch.testing.assert_close(terms["ce"], ce, rtol=1e-6, atol=0)
    torch.testing.assert_close(terms["distill"], distill, rtol=1e-6, atol=1e-7)
    for g, p in zip(grads, student.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TOKEN_LEVEL)
def test_cached_path_skips_the_teacher_and_is_close_at_full_support(
    name, tokenizer, make_model, tmp_path
):
    student, teacher = make_model(seed=5), make_model(n_layer=2, seed=6).eval()
    data = items(tokenizer, 6)
    k = teacher.get_output_embeddings().weight.shape[0] - 1  # the rest bucket is one token
    cache = build_cache(teacher, data, k=k, path=tmp_path, pad_id=tokenizer.pad_token_id)
    exact = get_method(name, **TOKEN_LEVEL[name])
    cached = get_method(name, teacher_cache_k=k, **TOKEN_LEVEL[name])
    cached.use_teacher_cache(cache)
    batch = batch_of(data)
    with_teacher = context(tokenizer, student, teacher)
    exact_terms = exact.loss_terms(student, exact.prepare(batch, with_teacher), with_teacher)
    no_teacher = context(tokenizer, student, None)  # a teacher forward would fail
    cached_terms = cached.loss_terms(student, cached.prepare(batch, no_teacher), no_teacher)
    assert torch.equal(cached_terms["ce"], exact_terms["ce"])
    assert torch.allclose(cached_terms["distill"], exact_terms["distill"], rtol=1e-2, atol=1e-3)


def test_uncached_pairs_fall_back_to_the_teacher(cache_setup, tokenizer, make_model):
    teacher, data, cache = cache_setup
    student = make_model(seed=5)
    ctx = context(tokenizer, student, teacher)
    other = [{"prompts": d["prompts"], "responses": d["responses"][:-1] + (7,)} for d in data]
    exact, cached = get_method("kd"), get_method("kd", teacher_cache_k=16)
    cached.use_teacher_cache(cache)
    prepared = exact.prepare(batch_of(other[:4]), ctx)
    assert cache.rows_for_pairs(prepared["pairs"]) is None
    assert torch.equal(
        exact.loss_terms(student, prepared, ctx)["distill"],
        cached.loss_terms(student, prepared, ctx)["distill"],
    )


def test_prepared_teacher_topk_is_used(cache_setup, tokenizer, make_model):
    teacher, data, cache = cache_setup
    student = make_model(seed=5)
    method = get_method("rkl", teacher_cache_k=16)
    ctx = context(tokenizer, student, None)
    prepared = method.prepare(batch_of(data[:3]), ctx)
    prepared["teacher_topk"] = cache.rows([0, 1, 2])
    assert torch.isfinite(method.loss_terms(student, prepared, ctx)["distill"])


def test_cache_settings_are_checked(cache_setup, tokenizer):
    teacher, data, cache = cache_setup
    with pytest.raises(ValueError, match="teacher_cache_k=0"):
        get_method("kd").use_teacher_cache(cache)
    with pytest.raises(ValueError, match="the cache holds the top 16"):
        get_method("kd", teacher_cache_k=32).use_teacher_cache(cache)
    with pytest.raises(ValueError, match="temperature"):
        get_method("kd", teacher_cache_k=8, temperature=2.0).use_teacher_cache(cache)
    with pytest.raises(RuntimeError, match="none is attached"):
        method = get_method("tvd", teacher_cache_k=8)
        ctx = context(tokenizer, None, teacher)
        method.loss_terms(teacher, method.prepare(batch_of(data[:2]), ctx), ctx)
    with pytest.raises(ValueError, match="below the vocabulary"):
        build_cache(teacher, data, k=teacher.get_output_embeddings().weight.shape[0])
