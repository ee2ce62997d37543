"""Tokenisation and batching.

Training batches are right-padded; ``labels`` equal ``input_ids`` on response tokens (which end
with EOS) and -100 on the prompt and on padding, aligned with ``input_ids`` (the loss shifts).
Prompt batches for generation are left-padded so that every row ends at the same position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: prompt ids and response ids (EOS included)."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]


def encode_pair(tokenizer, prompt: str, response: str, max_length: int) -> Encoded:
    """Tokenise prompt and response separately (no merge across the boundary), add EOS."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids, tokenizer.eos_token_id][: max(1, max_length - len(prompt_ids))]
    return Encoded(tuple(prompt_ids), tuple(response_ids))


def encode_prompt(tokenizer, prompt: str) -> tuple[int, ...]:
    return tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def pad_sequences(
    rows: Sequence[Sequence[int]], pad_value: int, left: bool = False
) -> torch.Tensor:
    """Stack ragged rows into a [B, L] long tensor padded on the right (or left)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            values = torch.as_tensor(list(row), dtype=torch.long)
            if left:
                out[i, width - len(row) :] = values
            else:
                out[i, : len(row)] = values
    return out


def collate_pairs(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response batch with labels on the response only. [B, L] each."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    label_rows = [[IGNORE] * len(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    input_ids = pad_sequences(rows, pad_id)
    attention_mask = pad_sequences([[1] * len(r) for r in rows], 0)
    labels = pad_sequences(label_rows, IGNORE)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_prompts(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt batch for generation. [B, L] each."""
    input_ids = pad_sequences(prompts, pad_id, left=True)
    attention_mask = pad_sequences([[1] * len(p) for p in prompts], 0, left=True)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def count_tokens(labels: torch.Tensor) -> int:
    """Response tokens that enter a next-token loss (labels shifted by one)."""
    return int((labels[:, 1:] != IGNORE).sum())
