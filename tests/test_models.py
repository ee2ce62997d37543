"""Model preflight and safe loading."""

from __future__ import annotations

import json

import pytest
import torch

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


def _pickle_checkpoint(path, model, tokenizer):
    """A model directory holding only ``pytorch_model.bin`` (a pickle), no safetensors."""
    path.mkdir(parents=True)
    model.config.save_pretrained(path)
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    tokenizer.save_pretrained(path)
    return path


def test_pickle_checkpoint_refused_unless_allowed(tmp_path, tokenizer, make_model):
    from dpkd_bench.recipe import ModelConfig

    path = _pickle_checkpoint(tmp_path / "m", make_model(), tokenizer)
    with pytest.raises(UserError, match="set allow_pickle: true"):
        load_pretrained(path)
    loaded = load_pretrained(path, ModelConfig(allow_pickle=True))
    assert loaded.config.n_embd == 32


def test_remote_code_and_pickle_off_by_default(monkeypatch):
    from dpkd_bench import models
    from dpkd_bench.recipe import ModelConfig, load_recipe

    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        return "model"

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", fake)
    load_pretrained("some/model")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True
    load_pretrained("some/model", ModelConfig(trust_remote_code=True, allow_pickle=True))
    assert seen["trust_remote_code"] is True and seen["use_safetensors"] is None
    for recipe in ("synthetic", "recipes/paper/gpt2-1.5b-to-120m-dolly.yaml"):
        loaded = load_recipe(recipe)
        for cfg in (loaded.teacher.model, loaded.student.model):
            assert cfg.trust_remote_code is False and cfg.allow_pickle is False


def test_tokenizer_without_pad_pads_with_eos(tmp_path, tokenizer):
    from dpkd_bench.models import load_tokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    config = tmp_path / "tok" / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("pad_token", None)
    config.write_text(json.dumps(data))
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.pad_token == loaded.eos_token == tokenizer.eos_token


def test_offline_hub_model_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        load_pretrained("nobody-dpkd/not-cached-model")
