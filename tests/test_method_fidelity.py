"""What each method takes from its official code beyond its loss: dropout, the data it trains
on, DistiLLM's alignment of student samples, and the shared pre-training term."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.cli import main
from dpkd_bench.data.collate import IGNORE
from dpkd_bench.errors import RecipeError
from dpkd_bench.methods import METHODS, get_method
from dpkd_bench.models import build_model
from dpkd_bench.recipe import ModelConfig, TrainConfig, load_recipe
from dpkd_bench.train import BatchStream, train

from .conftest import context
from .test_grad_accum import training_items

# Official code that turns the student's dropout off: MiniLLM's PPO model keeps the student in
# eval mode; TRL's GKDConfig.disable_dropout defaults to True. DistiLLM and the DPKD code train
# in train mode with the model's own dropout.
DROPOUT_OFF = {"minillm", "gkd", "opd", "distillm2"}


def dropout_rates(model) -> set[float]:
    return {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_dropout_is_off_exactly_where_the_official_code_turns_it_off(name, tokenizer):
    """On a Hub-style GPT-2 with dropout 0.1 (resid, embd, attn)."""
    method = get_method(name, **({"rollout_size": 3} if name == "minillm" else {}))
    hub_style = ModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=256, dropout=0.1)
    student = build_model(hub_style, tokenizer, seed=5)
    teacher = build_model(hub_style, tokenizer, seed=6).eval()
    seen = []
    loss_terms = method.loss_terms

    def spy(model, prepared, ctx):
        seen.append((dropout_rates(model), model.training))
        return loss_terms(model, prepared, ctx)

    method.loss_terms = spy
    ctx = context(tokenizer, student, teacher if method.uses_teacher else None)
    cfg = TrainConfig(steps=1, batch_size=3, warmup_ratio=0.0, checkpoint_every=0)
    train(method, student, cfg, BatchStream(training_items(tokenizer), 3, 0), ctx, Accelerator())
    assert method.disables_dropout == (name in DROPOUT_OFF)
    expected = {0.0} if name in DROPOUT_OFF else {0.1}
    assert seen and all(rates == expected and training for rates, training in seen)
    assert dropout_rates(student) == {0.1}  # restored after the unit


def test_dpkd_token_trains_on_teacher_samples_like_the_official_runner():
    method = get_method("dpkd_token")
    assert method.train_data == "teacher_samples" and method.uses_teacher_samples
    assert get_method("dpkd_token", train_data="ground_truth").uses_teacher_samples is False
    with pytest.raises(RecipeError, match="train_data"):
        load_recipe("synthetic-quick", ["dpkd_token.train_data=pseudo"])


def test_distillm_student_samples_leave_out_the_first_response_position(tokenizer, make_model):
    """DistiLLM's sampler strips EOS and its loss starts one position later than on ground
    truth: with the EOS kept here, the first response position leaves the mask."""
    method = get_method("skew_fkl", init_threshold=1.0, replay_ratio="constant")
    student, teacher = make_model(seed=5), make_model(seed=6).eval()
    ctx = dataclasses.replace(context(tokenizer, student, teacher), total_steps=4)
    data = training_items(tokenizer, 3)
    batch = {k: [d[k] for d in data] for k in ("prompts", "responses")}
    prepared = method.prepare(batch, ctx)
    assert prepared["student_data"]
    labels = prepared["pairs"]["labels"]
    for row, prompt in enumerate(batch["prompts"]):
        assert labels[row, len(prompt)] == IGNORE
        response = int(prepared["pairs"]["attention_mask"][row].sum()) - len(prompt)
        assert int((labels[row] != IGNORE).sum()) == response - 1  # every later position stays
    assert prepared["counts"]["tokens"] == int((labels[:, 1:] != IGNORE).sum())
    ground = get_method("skew_fkl").prepare(batch, ctx)  # threshold 0: ground truth as it is
    first = ground["pairs"]["labels"][0, len(batch["prompts"][0])]
    assert first == batch["responses"][0][0]


def test_a_pre_training_term_without_a_corpus_is_a_recipe_error(capsys):
    with pytest.raises(RecipeError, match="data.pretrain_source"):
        load_recipe("synthetic-quick", ["methods=[kd]", "kd.pt_weight=0.5"])
    assert main(["validate", "synthetic-quick", "methods=[kd]", "kd.pt_weight=0.5"]) == 2
    assert capsys.readouterr().err.startswith("error: kd.pt_weight=0.5")
    load_recipe("synthetic-quick", ["methods=[kd]", "kd.pt_weight=0.5", "data.pretrain_source=x"])


def test_the_pre_training_term_is_logged_and_moves_the_weights(tokenizer, make_model):
    chunks = [{"chunks": item["prompts"][:12]} for item in training_items(tokenizer)]
    runs = {}
    for weight in (0.0, 1.0):
        method = get_method("minillm", rollout_size=3, pt_weight=weight)
        student, teacher = make_model(seed=5), make_model(seed=6).eval()
        ctx = context(tokenizer, student, teacher)
        cfg = TrainConfig(steps=1, batch_size=3, warmup_ratio=0.0, checkpoint_every=0)
        stream = BatchStream(training_items(tokenizer), 3, 0)
        result = train(
            method, student, cfg, stream, ctx, Accelerator(), pretrain=BatchStream(chunks, 3, 1)
        )
        assert result.steps == 1
        runs[weight] = torch.cat([p.detach().flatten() for p in student.parameters()])
    assert not torch.equal(runs[0.0], runs[1.0])
    method = get_method("minillm", pt_weight=2.0)
    assert method.term_weights() == {"single_step": 1.0, "pg": 1.0, "pt": 1.0, "pt_kd": 1.0}
    skew = get_method("skew_fkl", pt_weight=1.0).term_weights()  # DistiLLM: LM only
    assert skew["pt"] == 1.0 and skew["pt_kd"] == 0.0
