"""The single training loop, on ``accelerate``, for every method.

Per optimiser step: draw ``grad_accum`` micro-batches, let the method prepare each (samples,
tensors, unit counts), add the counts over the whole accumulated batch, then for each
micro-batch back-propagate ``sum_term weight * term_sum / total_count(term)``. The loss is thus
normalised by the token (or sequence) count of the whole accumulated batch, never per
micro-batch. AdamW, cosine schedule with linear warm-up, gradient clipping.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from dpkd_bench.methods.base import Method, TrainContext
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.results import append_jsonl


class NonFiniteLoss(RuntimeError):
    """A NaN or inf loss: the unit stops with the step and every term's value."""


@dataclass
class BatchStream:
    """Shuffled, epoch-wise batches of training items, reproducible from ``seed``."""

    items: Sequence[dict]
    batch_size: int
    seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _shuffle(self) -> None:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self._order = torch.randperm(len(self.items), generator=generator).tolist()

    def next_batch(self) -> dict[str, list]:
        if not self._order:
            self._shuffle()
        chosen = []
        while len(chosen) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._shuffle()
            chosen.append(self.items[self._order[self.position]])
            self.position += 1
        return {key: [item[key] for item in chosen] for key in chosen[0]}


@dataclass
class TrainResult:
    steps: int
    wall_s: float
    tokens: int
    skipped_steps: int


def make_optimizer(model, cfg: TrainConfig):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    warmup = int(cfg.warmup_ratio * cfg.steps)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, max(cfg.steps, 1))


def _step_loss(terms, weights, units, totals):
    """Weighted sum of term sums, each divided by its unit's total over the accumulated batch."""
    loss = None
    for term, weight in weights.items():
        if weight == 0:
            continue
        value = weight * terms[term] / max(totals[units[term]], 1)
        loss = value if loss is None else loss + value
    return loss


def accumulate(method: Method, model, micro: list[dict], ctx: TrainContext, backward):
    """Back-propagate one optimiser step's micro-batches; return the logged term values.

    Each term is divided by its unit's count over *all* micro-batches of the step, so the
    gradient equals that of one big batch. Returns None when no weighted term has any unit.
    """
    weights, units = method.weights(), method.units
    totals = sum((Counter(m["counts"]) for m in micro), Counter())
    if all(totals[units[t]] == 0 for t, w in weights.items() if w):
        return None
    logged: dict[str, torch.Tensor] = {}
    for prepared in micro:
        terms = method.loss_terms(model, prepared, ctx)
        backward(_step_loss(terms, weights, units, totals))
        for term, value in terms.items():
            part = value.detach() / max(totals[units[term]], 1)
            logged[term] = logged.get(term, 0) + part
    return logged


def _check_finite(step: int, loss: torch.Tensor, logged: dict[str, float]) -> None:
    if not math.isfinite(float(loss)):
        values = ", ".join(f"{k}={v:.4g}" for k, v in logged.items())
        raise NonFiniteLoss(f"non-finite loss at step {step}: {values}")


def train(
    method: Method,
    student,
    cfg: TrainConfig,
    stream: BatchStream,
    ctx: TrainContext,
    accelerator: Accelerator,
    log_path: Path | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``student`` in place with ``method`` for ``cfg.steps`` optimiser steps."""
    student.train()
    optimizer, scheduler = make_optimizer(student, cfg)
    model, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    weights = method.weights()
    start, tokens, skipped, window_tokens, window_start = time.time(), 0, 0, 0, time.time()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, leave=False, dynamic_ncols=True)
    for step in bar:
        with torch.no_grad():
            micro = [method.prepare(stream.next_batch(), ctx) for _ in range(cfg.grad_accum)]
        logged = accumulate(method, model, micro, ctx, accelerator.backward)
        if logged is None:
            skipped += 1  # nothing to learn from (e.g. every response empty): never NaN
            continue
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_tokens = sum(m["counts"].get("tokens", 0) for m in micro)
        tokens += step_tokens
        window_tokens += step_tokens
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {k: float(v) for k, v in logged.items()}
            loss = sum(weights.get(k, 0.0) * v for k, v in values.items())
            _check_finite(step, torch.tensor(loss), values)
            now = time.time()
            record = {
                "step": step,
                "lr": scheduler.get_last_lr()[0],
                "loss": loss,
                **values,
                "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                "elapsed_s": now - start,
            }
            window_tokens, window_start = 0, now
            bar.set_postfix(loss=f"{loss:.4f}")
            if log_path is not None:
                append_jsonl(log_path, record)
    accelerator.free_memory()
    return TrainResult(cfg.steps, time.time() - start, tokens, skipped)
