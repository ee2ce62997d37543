"""Every method trains the same whatever ``grad_accum`` is: ``k`` micro-batches of ``b``
examples give the parameter update of one batch of ``k * b`` (the same samples, the same
generator state), within float tolerance.

Sampling is replaced by a deterministic function of each prompt, so that a sampled response
does not depend on the batch it was drawn in, and the optimiser by plain SGD at a constant rate,
so that the update is the gradient itself (Adam's first steps hide a gradient's scale).
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

import dpkd_bench.methods.base as method_base
import dpkd_bench.train as train_module
from dpkd_bench.data.collate import encode_pair
from dpkd_bench.methods import METHODS, get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train

from .conftest import context, tiny_corpus

K, B, STEPS = 2, 3, 2

# Settings that make every micro-batch of a method take the same branch whatever the batch
# size: GKD always on-policy, DistiLLM always on fresh student samples, and a MiniLLM rollout
# store of one accumulated batch (so each optimiser step is one shuffled pass over it).
OVERRIDES = {
    "gkd": {"lmbda": 1.0},
    "skew_fkl": {"init_threshold": 1.0, "replay_ratio": "constant", "capacity": 10_000},
    "skew_rkl": {"init_threshold": 1.0, "replay_ratio": "constant", "capacity": 10_000},
    "minillm": {"rollout_size": K * B, "ppo_epochs": STEPS},
}


def fake_decode(model, input_ids, attention_mask, settings, eos_id, pad_id, generator, **_):
    """A response that depends on its prompt alone: 1 to max_new_tokens - 1 tokens, then EOS."""
    vocab = model.config.vocab_size
    width = settings.max_new_tokens
    rows = []
    for ids, keep in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        prompt = [t for t, k in zip(ids, keep, strict=True) if k]
        seed = sum((i + 1) * t for i, t in enumerate(prompt))
        body = [3 + (seed * (j + 7)) % (vocab - 3) for j in range(1 + seed % (width - 1))]
        body = [t if t not in (eos_id, pad_id) else 3 for t in body]
        rows.append((body + [eos_id] + [pad_id] * width)[:width])
    return torch.tensor(rows, dtype=torch.long)


def sgd(model, cfg):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def training_items(tokenizer, n=8):
    out = []
    for index, (prompt, response) in enumerate(tiny_corpus()[: n * 7 : 7]):
        pair = encode_pair(tokenizer, prompt, response * (1 + index % 3), max_length=256)
        teacher = encode_pair(tokenizer, prompt, response * (1 + (index + 1) % 2), 256)
        out.append(
            {
                "prompts": pair.prompt_ids,
                "responses": pair.response_ids,
                "teacher_responses": teacher.response_ids,
            }
        )
    return out


def trained(name, tokenizer, make_model, batch_size, grad_accum, pt_weight=0.0):
    method = get_method(name, pt_weight=pt_weight, **OVERRIDES.get(name, {}))
    student, teacher = make_model(seed=5), make_model(seed=6)
    teacher.eval().requires_grad_(False)
    ctx = context(tokenizer, student, teacher if method.uses_teacher else None, seed=3)
    cfg = TrainConfig(
        steps=STEPS,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=0.5,
        warmup_ratio=0.0,
        max_grad_norm=1e9,
        checkpoint_every=0,
    )
    stream = BatchStream(training_items(tokenizer), batch_size, seed=0)
    chunks = [
        {"chunks": item["prompts"][: 8 + i]} for i, item in enumerate(training_items(tokenizer))
    ]
    pretrain = BatchStream(chunks, batch_size, seed=1)
    train(method, student, cfg, stream, ctx, Accelerator(cpu=True), pretrain=pretrain)
    return torch.cat([p.detach().flatten() for p in student.parameters()])


@pytest.mark.parametrize(
    ("name", "pt_weight"),
    [(name, 0.0) for name in sorted(METHODS)]
    + [("sft", 1.0), ("skew_rkl", 1.0), ("minillm", 1.0), ("dpkd_token", 0.5)],
)
def test_k_micro_batches_update_like_one_batch(name, pt_weight, tokenizer, make_model, monkeypatch):
    """Every method, and with the pre-training term (plain LM, and LM + KD) for a few."""
    monkeypatch.setattr(method_base, "decode", fake_decode)
    monkeypatch.setattr(train_module, "make_optimizer", sgd)
    start = torch.cat([p.detach().flatten() for p in make_model(seed=5).parameters()])
    whole = trained(name, tokenizer, make_model, K * B, 1, pt_weight)
    split = trained(name, tokenizer, make_model, B, K, pt_weight)
    assert not torch.equal(whole, start), f"{name}: the student did not move"
    torch.testing.assert_close(split - start, whole - start, rtol=1e-4, atol=1e-6)
