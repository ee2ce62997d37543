"""Teacher-fidelity figures on tiny random GPT-2 models, and the fidelity.json they write."""

from __future__ import annotations

import json

import pytest
import torch

from dpkd_bench import losses
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.data.example import Example
from dpkd_bench.data.prepare import EvalSet, encode_eval_set
from dpkd_bench.fidelity import (
    FIDELITY_FILE,
    forced_pairs,
    length_ratio,
    mean_words,
    teacher_fidelity,
    write_fidelity,
)
from dpkd_bench.methods.base import forward_logits, shifted_labels
from dpkd_bench.report import FIDELITY
from dpkd_bench.results import write_jsonl
from tests.conftest import tiny_corpus

CPU = torch.device("cpu")


def eval_set(tokenizer, n: int = 6, name: str = "tiny") -> EvalSet:
    examples = [
        Example(f"ex{i}", prompt, response, (response, "another answer"))
        for i, (prompt, response) in enumerate(tiny_corpus()[::7][:n])
    ]
    return encode_eval_set(name, examples, tokenizer, max_prompt_len=200)


def test_student_that_is_the_teacher_has_zero_kl_and_full_agreement(tokenizer, make_model):
    model = make_model(seed=3)
    out = teacher_fidelity(model, model, eval_set(tokenizer), tokenizer, CPU, batch_size=4)
    assert out["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)
    assert out["kl_student_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert out["top1_agreement"] == 1.0
    assert out["n_examples"] == 6 and out["n_tokens"] > 6


def test_kept_teacher_rows_give_the_same_figures_without_a_teacher_forward(
    tokenizer, make_model, monkeypatch
):
    from dpkd_bench.fidelity import TeacherRows

    student, teacher = make_model(seed=1), make_model(n_layer=2, seed=2)
    data, kept = eval_set(tokenizer), TeacherRows()
    first = teacher_fidelity(student, teacher, data, tokenizer, CPU, 4, teacher_rows=kept)
    assert kept.rows and kept.used > 0
    calls = []
    real = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = teacher_fidelity(student, teacher, data, tokenizer, CPU, 4, teacher_rows=kept)
    assert again == first and not calls
    tight = TeacherRows(budget=0)  # nothing fits: every batch recomputed, same figures
    assert teacher_fidelity(student, teacher, data, tokenizer, CPU, 4, teacher_rows=tight) == first
    assert not tight.rows and calls  # the patched forward does see teacher calls


def test_figures_match_the_losses_on_one_batch_and_do_not_depend_on_batching(tokenizer, make_model):
    student, teacher = make_model(seed=1), make_model(n_layer=2, seed=2)
    data = eval_set(tokenizer)
    one = teacher_fidelity(student, teacher, data, tokenizer, CPU, batch_size=1)
    many = teacher_fidelity(student, teacher, data, tokenizer, CPU, batch_size=4)
    for key in ("kl_teacher_student", "kl_student_teacher", "top1_agreement"):
        assert one[key] == pytest.approx(many[key], rel=1e-5)
    prompts, responses = zip(*forced_pairs(data, tokenizer, 256), strict=True)
    batch = collate_pairs(prompts, responses, tokenizer.pad_token_id)
    _, mask = shifted_labels(batch)
    with torch.no_grad():
        s_logits, t_logits = forward_logits(student, batch), forward_logits(teacher, batch)
    assert one["kl_teacher_student"] == pytest.approx(
        float(losses.forward_kl(s_logits, t_logits, mask)), rel=1e-5
    )
    assert one["kl_student_teacher"] == pytest.approx(
        float(losses.reverse_kl(s_logits, t_logits, mask)), rel=1e-5
    )
    assert one["kl_teacher_student"] > 0 and one["kl_student_teacher"] > 0
    assert 0.0 <= one["top1_agreement"] < 1.0


def test_first_reference_is_the_forced_response(tokenizer):
    data = eval_set(tokenizer, n=1)
    ((prompt_ids, response_ids),) = forced_pairs(data, tokenizer, 256)
    expected = tokenizer(data.examples[0].references[0], add_special_tokens=False)["input_ids"]
    assert list(response_ids) == [*expected, tokenizer.eos_token_id]
    assert prompt_ids == data.prompt_ids[0]


def test_models_keep_their_training_mode(tokenizer, make_model):
    student, teacher = make_model(seed=1), make_model(seed=2)
    student.train()
    teacher.eval()
    teacher_fidelity(student, teacher, eval_set(tokenizer, n=2), tokenizer, CPU)
    assert student.training and not teacher.training


def test_length_ratio_counts_words_over_every_generation_seed():
    student = [{"predictions": ["a b c", "a b c d e"]}, {"predictions": ["x"]}]
    teacher = [{"predictions": ["a b"]}, {"predictions": ["x y"]}]
    assert mean_words(student) == pytest.approx(3.0)
    assert length_ratio(student, teacher) == pytest.approx(1.5)
    assert length_ratio(student, []) is None
    assert length_ratio(student, [{"predictions": [""]}]) is None


def test_write_fidelity_writes_every_eval_set_with_its_length_ratio(
    tmp_path, tokenizer, make_model
):
    unit, teacher_unit = tmp_path / "runs/kd/seed-1", tmp_path / "runs/teacher/seed-1"
    write_jsonl(unit / "generations/a.jsonl", [{"predictions": ["one two three four"]}])
    write_jsonl(teacher_unit / "generations/a.jsonl", [{"predictions": ["one two"]}])
    model = make_model()
    sets = {"a": eval_set(tokenizer, 2, "a"), "b": eval_set(tokenizer, 3, "b")}
    written = write_fidelity(unit, model, model, sets, tokenizer, CPU, 2, teacher_unit)
    on_disk = json.loads((unit / FIDELITY_FILE).read_text(encoding="utf-8"))
    assert on_disk == written and FIDELITY_FILE == FIDELITY
    assert on_disk["length_unit"] == "words"
    assert on_disk["eval"]["a"]["length_ratio"] == pytest.approx(2.0)
    assert on_disk["eval"]["b"]["length_ratio"] is None  # no generation files for b
    assert on_disk["eval"]["b"]["n_examples"] == 3
    assert on_disk["eval"]["a"]["top1_agreement"] == 1.0


def test_an_eval_set_without_examples_is_an_error(tokenizer, make_model):
    empty = EvalSet("empty", [], [])
    model = make_model()
    with pytest.raises(ValueError, match="no response token"):
        teacher_fidelity(model, model, empty, tokenizer, CPU)
