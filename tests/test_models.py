"""Model preflight and safe loading."""

from __future__ import annotations

import pytest

from dpkd_bench.errors import UserError
from dpkd_bench.models import load_pretrained, preflight_models, save_model


def test_vocab_mismatch_names_both_sizes(tokenizer, make_model):
    teacher, student = make_model(), make_model()
    student.resize_token_embeddings(len(tokenizer) + 8)
    sizes = (
        rf"teacher vocabulary size {len(tokenizer)} != student vocabulary size {len(tokenizer) + 8}"
    )
    with pytest.raises(UserError, match=sizes):
        preflight_models(teacher, student, tokenizer, max_length=64)


def test_max_length_beyond_positions(tokenizer, make_model):
    with pytest.raises(UserError, match="exceeds the teacher's 256 positions"):
        preflight_models(make_model(), make_model(), tokenizer, max_length=300)


def test_save_and_load_round_trip_as_safetensors(tmp_path, tokenizer, make_model):
    model = make_model()
    save_model(model, tokenizer, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.config.n_embd == model.config.n_embd


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load model"):
        load_pretrained(tmp_path / "nothing-here")
