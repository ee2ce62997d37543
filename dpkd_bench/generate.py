"""Batched decoding with left padding and a KV cache: greedy or seeded sampling.

One decoding loop serves evaluation, teacher sampling (SeqKD, DPKD's y_t) and on-policy student
sampling (DPKD's y_s, GKD, MiniLLM). It can sample from a mixture ``alpha * p_mix + (1 - alpha)
* p_model`` of two models (MiniLLM's teacher-mixed sampling). Rows stop at their first EOS;
everything after it is padding and is never part of a response.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dpkd_bench import console
from dpkd_bench.data.collate import collate_prompts


@dataclass(frozen=True)
class DecodeSettings:
    """Greedy, or sampling with temperature / top-k (0 = off) / top-p (1 = off)."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k set and the top-p nucleus with -inf. [B, V] -> [B, V]."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token crossing top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class _CachedModel:
    """A model stepped one token at a time over a left-padded batch, with its KV cache."""

    def __init__(self, model, attention_mask: torch.Tensor):
        self.model = model
        self.mask = attention_mask
        self.cache = None
        # transformers >= 5.2x names the KV cache ``cache``; older releases ``past_key_values``.
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        # only the last position's logits are used: the prompt's prefill skips the output
        # projection of every other position where the model allows it
        self.keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def next_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ``ids`` [B, L] (the prompt first, then one token) and return logits [B, V]."""
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            **{self.cache_arg: self.cache},
            **self.keep,
        )
        self.cache = getattr(out, self.cache_arg)
        return out.logits[:, -1].float()

    def grow(self) -> None:
        ones = torch.ones_like(self.mask[:, :1])
        self.mask = torch.cat([self.mask, ones], dim=-1)


def _pick(log_probs: torch.Tensor, settings: DecodeSettings, generator) -> torch.Tensor:
    if settings.greedy:
        return log_probs.argmax(-1)
    return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)


def _step_log_probs(
    logits: torch.Tensor, mix_logits: torch.Tensor | None, alpha: float, s: DecodeSettings
) -> torch.Tensor:
    log_probs = filter_logits(logits / s.temperature, s.top_k, s.top_p).log_softmax(-1)
    if mix_logits is None:
        return log_probs
    mix = filter_logits(mix_logits / s.temperature, s.top_k, s.top_p).log_softmax(-1)
    weights = torch.tensor([alpha, 1.0 - alpha], device=logits.device).log()
    return torch.logsumexp(torch.stack([mix + weights[0], log_probs + weights[1]]), dim=0)


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    settings: DecodeSettings,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    mix_model=None,
    mix_alpha: float = 0.0,
) -> torch.Tensor:
    """Decode a left-padded batch [B, L]; return responses [B, N] (EOS kept, then pad)."""
    stepper = _CachedModel(model, attention_mask)
    mixer = _CachedModel(mix_model, attention_mask) if mix_model is not None else None
    feed = input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens = []
    for _ in range(settings.max_new_tokens):
        logits = stepper.next_logits(feed)
        mix_logits = mixer.next_logits(feed) if mixer is not None else None
        token = _pick(_step_log_probs(logits, mix_logits, mix_alpha, settings), settings, generator)
        token = token.masked_fill(done, pad_id)
        tokens.append(token)
        done |= token == eos_id
        if bool(done.all()):
            break
        feed = token[:, None]
        stepper.grow()
        if mixer is not None:
            mixer.grow()
    return torch.stack(tokens, dim=1)


def cut_at_eos(row: Sequence[int], eos_id: int, keep_eos: bool = False) -> list[int]:
    """A response up to its first EOS (kept or not); all of it when it has none."""
    row = list(row)
    end = row.index(eos_id) + (1 if keep_eos else 0) if eos_id in row else len(row)
    return row[:end]


def response_lists(responses: torch.Tensor, eos_id: int, keep_eos: bool) -> list[list[int]]:
    """Cut each decoded row at its first EOS (kept or not); drop the padding after it."""
    return [cut_at_eos(row, eos_id, keep_eos) for row in responses.tolist()]


def response_texts(tokenizer, responses: Sequence[Sequence[int]]) -> list[str]:
    """Response texts as evaluation scores them: special tokens dropped, stripped."""
    return [tokenizer.decode(list(r), skip_special_tokens=True).strip() for r in responses]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    settings: DecodeSettings,
    *,
    eos_id: int,
    pad_id: int,
    seed: int,
    batch_size: int,
    keep_eos: bool = False,
    progress: str | None = None,
    mix_model=None,
    mix_alpha: float = 0.0,
) -> list[list[int]]:
    """Decode many prompts in length-sorted batches; results come back in input order."""
    device = _device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    results: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    shown = progress is not None and console.bars()
    for start in tqdm(starts, desc=progress, disable=not shown, leave=False):
        chunk = order[start : start + batch_size]
        batch = collate_prompts([prompts[i] for i in chunk], pad_id)
        responses = decode(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            settings,
            eos_id,
            pad_id,
            generator,
            mix_model,
            mix_alpha,
        )
        for i, ids in zip(chunk, response_lists(responses.cpu(), eos_id, keep_eos), strict=True):
            results[i] = ids
    model.train(was_training)
    return results


def generate_texts(
    model, tokenizer, prompts: Sequence[Sequence[int]], settings, **kwargs
) -> list[str]:
    """Decode prompts (token ids) and return the response texts, stripped."""
    ids = generate_ids(
        model,
        prompts,
        settings,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        **kwargs,
    )
    return response_texts(tokenizer, ids)


# ---- several processes: each decodes its share of the prompts --------------------------------
def shard_slice(n: int, index: int, count: int) -> slice:
    """Contiguous share ``index`` of ``count`` of ``n`` items (sizes differ by at most one);
    the shares, concatenated in index order, are the items in order."""
    return slice(index * n // count, (index + 1) * n // count)


def shard_seed(seed: int, index: int) -> int:
    """The decoding seed of share ``index``: ``seed`` itself for the first share."""
    return seed + 1_000_003 * index
