"""The single training loop, on ``accelerate``, for every method.

Per optimiser step: draw ``grad_accum`` micro-batches, let the method prepare each (samples,
tensors, unit counts), add the counts over the whole accumulated batch, then for each
micro-batch back-propagate ``sum_term weight * term_sum / total_count(term)``. The loss is thus
normalised by the token (or sequence) count of the whole accumulated batch, never per
micro-batch. AdamW, cosine schedule with linear warm-up, gradient clipping.

Resume: given a checkpoint directory, ``train`` continues from the checkpoint found there and
writes a new one every ``checkpoint_every`` steps and after the last step
(``dpkd_bench.checkpoint``); a resumed unit ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from dpkd_bench.checkpoint import Trainables, load_checkpoint, save_checkpoint
from dpkd_bench.errors import DataError
from dpkd_bench.methods.base import Method, TrainContext
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.results import append_jsonl


class NonFiniteLoss(RuntimeError):
    """A NaN or inf loss: the unit stops with the first such step and every term's value."""


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

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": list(self._order)}

    def load_state_dict(self, state: dict) -> None:
        if state["order"] and len(state["order"]) != len(self.items):
            raise DataError(
                f"the checkpoint was written for {len(state['order'])} training items but the "
                f"data has {len(self.items)}; resume with the data of the original run"
            )
        self.epoch, self.position, self._order = state["epoch"], state["position"], state["order"]


@dataclass
class TrainResult:
    steps: int
    wall_s: float
    tokens: int
    skipped_steps: int


@dataclass
class Progress:
    """The loop's counters; a checkpoint saves them with the step they were reached at."""

    step: int = 0
    tokens: int = 0
    skipped: int = 0  # steps without any unit to learn from (e.g. every response empty)
    elapsed_s: float = 0.0  # training wall time, over every run of the unit


class FiniteGuard:
    """The first step whose loss is NaN or inf, and its term values, kept on the device.

    ``observe`` runs every step without a host sync; ``check`` (one sync) raises
    :class:`NonFiniteLoss` naming that step and its terms.
    """

    def __init__(self):
        self.step: torch.Tensor | None = None  # -1 while every loss was finite
        self.terms: dict[str, torch.Tensor] = {}

    def observe(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        loss = loss.detach()
        if self.step is None:
            self.step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        for name, value in {"loss": loss, **terms}.items():
            value = torch.as_tensor(value).detach().to(loss.device, torch.float32)
            before = self.terms.get(name, torch.full_like(value, float("nan")))
            self.terms[name] = torch.where(first, value, before)

    def check(self) -> None:
        if self.step is None or int(self.step) < 0:
            return
        values = ", ".join(f"{name}={float(v):.4g}" for name, v in self.terms.items())
        raise NonFiniteLoss(
            f"non-finite loss at step {int(self.step)} (the first one): {values}; "
            "lower train.lr or train.max_grad_norm, or check the method's inputs"
        )


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


def weighted_loss(logged: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The step's loss as back-propagated: the weighted sum of its (normalised) terms."""
    return sum(weight * logged[term] for term, weight in weights.items() if weight)


@dataclass
class _Throughput:
    """Tokens per second since the last log record."""

    tokens: int = 0
    since: float = field(default_factory=time.time)

    def rate(self) -> float:
        now = time.time()
        rate = self.tokens / max(now - self.since, 1e-9)
        self.tokens, self.since = 0, now
        return rate


def _log_record(step, lr, logged, weights, throughput, elapsed_s) -> dict:
    values = {k: float(v) for k, v in logged.items()}
    loss = sum(weight * values[term] for term, weight in weights.items() if weight)
    return {
        "step": step,
        "lr": lr,
        "loss": loss,
        **values,
        "tokens_per_s": throughput.rate(),
        "elapsed_s": elapsed_s,
    }


def _restore(checkpoint_dir: Path | None, parts: Trainables, cfg: TrainConfig) -> Progress:
    found = load_checkpoint(checkpoint_dir, parts) if checkpoint_dir is not None else None
    progress = Progress(**found) if found is not None else Progress()
    if progress.step > cfg.steps:
        raise DataError(
            f"checkpoint {checkpoint_dir} is at step {progress.step}, past train.steps="
            f"{cfg.steps}; resume with the recipe of the original run"
        )
    return progress


def _due(step: int, every: int, last: int) -> bool:
    return every > 0 and (step % every == 0 or step == last)


def train(
    method: Method,
    student,
    cfg: TrainConfig,
    stream: BatchStream,
    ctx: TrainContext,
    accelerator: Accelerator,
    log_path: Path | None = None,
    desc: str = "train",
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train ``student`` in place with ``method`` for ``cfg.steps`` optimiser steps.

    With ``checkpoint_dir``, training starts from the checkpoint there if any (weights,
    optimiser, schedule, RNG states, data position, method state, counters) and writes one every
    ``cfg.checkpoint_every`` steps and after the last step; the caller deletes it when the unit
    is done. One process: with several, each would need its own RNG states and data shard.

    Non-finite losses are caught without a host sync per step: a device-side guard keeps the
    first non-finite step and its term values, and is checked at every log record, before every
    checkpoint and at the end, raising :class:`NonFiniteLoss` with that step and those values.
    The optimiser steps taken from that step to the check are not undone; the unit fails, its
    weights are never saved, and its last checkpoint predates the non-finite step.
    """
    student.train()
    optimizer, scheduler = make_optimizer(student, cfg)
    parts = Trainables(student, optimizer, scheduler, stream, method, ctx.generator)
    model, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    progress = _restore(checkpoint_dir, parts, cfg)
    weights, guard, throughput = method.weights(), FiniteGuard(), _Throughput()
    started = time.time() - progress.elapsed_s
    steps = range(progress.step + 1, cfg.steps + 1)
    bar = tqdm(
        steps, initial=progress.step, total=cfg.steps, desc=desc, leave=False, dynamic_ncols=True
    )
    for step in bar:
        with torch.no_grad():
            micro = [method.prepare(stream.next_batch(), ctx) for _ in range(cfg.grad_accum)]
        logged = accumulate(method, model, micro, ctx, accelerator.backward)
        if logged is None:
            progress.skipped += 1  # nothing to learn from (e.g. every response empty): never NaN
        else:
            guard.observe(step, weighted_loss(logged, weights), logged)
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = sum(m["counts"].get("tokens", 0) for m in micro)
            progress.tokens += step_tokens
            throughput.tokens += step_tokens
        progress.step, progress.elapsed_s = step, time.time() - started
        if logged is not None and _due(step, cfg.log_every, cfg.steps):
            guard.check()
            lr = scheduler.get_last_lr()[0]
            record = _log_record(step, lr, logged, weights, throughput, progress.elapsed_s)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if log_path is not None:
                append_jsonl(log_path, record)
        if checkpoint_dir is not None and _due(step, cfg.checkpoint_every, cfg.steps):
            guard.check()
            save_checkpoint(checkpoint_dir, parts, asdict(progress))
    guard.check()
    accelerator.free_memory()
    return TrainResult(cfg.steps, progress.elapsed_s, progress.tokens, progress.skipped)
