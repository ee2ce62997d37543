"""The loop counts the sequences through the teacher's forward, for metrics.json and the report."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.generate import DecodeSettings, decode
from dpkd_bench.methods import get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train
from dpkd_bench.unit_scopes import counted_forwards

from .conftest import context, items


def test_a_forward_counts_its_rows_and_a_decode_counts_each_sequence_once(make_model):
    model = make_model(seed=1).eval()
    ids = torch.randint(3, 50, (3, 5))
    with torch.no_grad(), counted_forwards(model) as counted:
        model(input_ids=ids)
        assert counted[0] == 3
        settings = DecodeSettings(max_new_tokens=6, temperature=1.0)
        decode(model, ids, torch.ones_like(ids), settings, 0, 1, torch.Generator())
        assert counted[0] == 6  # the prefill of 3 rows; the cached steps do not count
    model(input_ids=ids)
    assert counted[0] == 6  # closed: the hook is gone


def run(tokenizer, make_model, name, steps=2, batch=4, **overrides):
    student, teacher = make_model(seed=2), make_model(seed=1).eval()
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-3, checkpoint_every=0)
    data = items(tokenizer, 8)
    for item in data:
        item["teacher_responses"] = item["responses"]
    stream = BatchStream(data, batch, seed=0)
    ctx = context(tokenizer, student, teacher)
    return train(get_method(name, **overrides), student, cfg, stream, ctx, Accelerator(cpu=True))


@pytest.mark.parametrize(
    ("name", "per_sequence"),
    [("sft", 0), ("kd", 1), ("dpkd", 3)],  # dpkd: the teacher scores y_t and y_s, and samples
)
def test_train_records_the_teachers_sequences(name, per_sequence, tokenizer, make_model):
    result = run(tokenizer, make_model, name)
    if name == "dpkd":
        # the student samples alone (the teacher is not in its decode): y_t and y_s per prompt
        per_sequence = 2
    assert result.teacher_forwards == per_sequence * 2 * 4
