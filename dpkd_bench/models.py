"""Teacher, student and tokenizer loading; preflight checks that they fit together."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from dpkd_bench.errors import UserError, hub_offline, load_error

if TYPE_CHECKING:
    from dpkd_bench.recipe import ModelConfig


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """A pretrained tokenizer (local path or Hub name) that has a pad token.

    A tokenizer without one (GPT-2's) pads with its EOS token, as MiniLLM does: batches mark
    padding in their attention masks and labels by position, never by token id, so the choice
    of pad id changes no loss and no generation. Without EOS either, it cannot be used.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(name_or_path),
            trust_remote_code=trust_remote_code,
            local_files_only=hub_offline(),
        )
    except (OSError, ValueError, KeyError) as err:
        raise load_error(
            "tokenizer", str(name_or_path), err, "the tokenizer's path or name"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"tokenizer '{name_or_path}' has neither a pad nor an EOS token; batching needs "
                "a pad token and generation an EOS: add them to the tokenizer (e.g. "
                "tokenizer.add_special_tokens({'eos_token': '</s>', 'pad_token': '<pad>'}) and "
                "save_pretrained) or use another tokenizer"
            )
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
    """``from_pretrained`` with safetensors only unless the recipe opts in to pickle files.

    Pickle checkpoints (``pytorch_model.bin``) can run arbitrary code when loaded; remote code
    runs only with ``trust_remote_code: true``.
    """
    allow_pickle = bool(cfg and cfg.allow_pickle)
    name = str(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(
            name,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=bool(cfg and cfg.trust_remote_code),
            local_files_only=hub_offline(),
        )
    except (OSError, ValueError, KeyError) as err:
        if not allow_pickle and "safetensors" in str(err).lower():
            raise UserError(
                f"cannot load model '{name}': no safetensors weights found, and pickle "
                "checkpoints (pytorch_model.bin) can run arbitrary code when loaded; convert "
                "them to safetensors, or set allow_pickle: true in the model's recipe section "
                "if you trust the file"
            ) from None
        raise load_error("model", name, err, "the model's path or name") from None


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
