"""Teacher, student and tokenizer loading; preflight checks that they fit together."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from dpkd_bench.errors import UserError
from dpkd_bench.recipe import ModelConfig


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """A pretrained tokenizer (local path or Hub name) with a pad token and left/right sides set."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load tokenizer '{name_or_path}' ({type(err).__name__}); "
            "check the path or Hub name (and HF_HUB_OFFLINE / your network)"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def gpt2_config(cfg: ModelConfig, tokenizer) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(cfg: ModelConfig, tokenizer, seed: int = 0):
    """From ``cfg.name_or_path`` (pretrained) or a freshly initialised GPT-2 of ``cfg``'s shape."""
    if cfg.name_or_path:
        return load_pretrained(cfg.name_or_path, cfg)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(gpt2_config(cfg, tokenizer))


def load_pretrained(name_or_path: str | Path, cfg: ModelConfig | None = None):
    """``from_pretrained`` with safetensors only unless the recipe opts in to pickle files."""
    cfg = cfg or ModelConfig()
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(name_or_path),
            use_safetensors=None if cfg.allow_pickle else True,
            trust_remote_code=cfg.trust_remote_code,
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load model '{name_or_path}': {str(err).splitlines()[0][:200]}; "
            "check the path or Hub name; weights must be safetensors unless the recipe sets "
            "allow_pickle: true"
        ) from None


def save_model(model, tokenizer, path: Path) -> None:
    """save_pretrained as safetensors, with the tokenizer beside the weights."""
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def embedding_size(model) -> int:
    return model.get_input_embeddings().weight.shape[0]


def preflight_models(teacher, student, tokenizer, max_length: int) -> None:
    """Teacher and student must share the vocabulary and fit the sequence length."""
    t_vocab, s_vocab = embedding_size(teacher), embedding_size(student)
    if t_vocab != s_vocab:
        raise UserError(
            f"teacher vocabulary size {t_vocab} != student vocabulary size {s_vocab}: "
            "token-level distillation compares distributions over the same tokens; use a "
            "teacher and student that share one tokenizer (or resize the smaller embedding)"
        )
    if len(tokenizer) > s_vocab:
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens but the models' embeddings have {s_vocab}; "
            "use the tokenizer the models were trained with"
        )
    for role, model in (("teacher", teacher), ("student", student)):
        limit = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None
        )
        if limit is not None and max_length > limit:
            raise UserError(
                f"data.max_length={max_length} exceeds the {role}'s {limit} positions; "
                f"lower data.max_length to at most {limit}"
            )


def freeze(model):
    """Put a model in eval mode with no gradients (the teacher)."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model
