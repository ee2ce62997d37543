"""DistiLLM's adaptive off-policy student-generated outputs (Ko et al. 2024, arXiv 2402.03898).

Shared by ``skew_fkl`` and ``skew_rkl``. A threshold ``th`` starts at ``init_threshold`` (0) and
rises by 0.1 (up to 1) whenever the student's validation CE has risen by at least ``loss_eps``
since the last rise; validation runs before training and then every ``eval_every`` optimiser
steps (default: once per epoch, as the official scripts' ``--eval-interval -1``). Before each
micro-batch, with ``r ~ U(0, 1)`` and a sampling threshold ``s`` that decays from ``th`` to 0
over training (``replay_ratio="decreasing"``; or ``th / 2`` constant, or increasing):

- ``r < s``, or ``r < th`` while the replay buffer is not full: the student samples responses
  for the batch's prompts (top-k 0, top-p 1, T 1); they are trained on and pushed to the buffer;
- otherwise ``r < th``: a batch of ``batch_size`` (prompt, response) pairs drawn from the buffer;
- otherwise the ground-truth batch.

The buffer keeps the last ``capacity`` (1000) sequences. With the default threshold of 0 the
method trains on ground truth until validation CE rises, exactly as the official code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import torch

from dpkd_bench.config import require
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods.base import (
    TrainContext,
    response_ce_sum,
    response_token_count,
    sample_student,
    to_device,
)

REPLAY_RATIOS = ("decreasing", "constant", "increasing")


@dataclass
class AdaptiveConfig:
    """The adaptive off-policy settings of DistiLLM's scripts (``--student-gen``)."""

    adaptive: bool = True
    init_threshold: float = 0.0
    loss_eps: float = 0.1
    capacity: int = 1000
    replay_ratio: str = "decreasing"
    eval_every: int = 0  # optimiser steps between validations; 0 = once per epoch

    def __post_init__(self):
        require(0.0 <= self.init_threshold <= 1.0, "init_threshold", "must be in [0, 1]")
        require(self.loss_eps >= 0, "loss_eps", "must be >= 0")
        require(self.capacity >= 1, "capacity", "must be >= 1")
        require(
            self.replay_ratio in REPLAY_RATIOS,
            "replay_ratio",
            f"must be one of {', '.join(REPLAY_RATIOS)} (got {self.replay_ratio!r})",
        )
        require(self.eval_every >= 0, "eval_every", "must be >= 0 (0 = once per epoch)")


def sampling_threshold(threshold: float, progress: float, replay_ratio: str) -> float:
    """The probability of fresh student samples at training progress ``step / total`` in [0, 1]."""
    if replay_ratio == "constant":
        return threshold * 0.5
    if replay_ratio == "increasing":
        return threshold * progress
    return threshold * (1.0 - progress)


def choose_source(r: float, threshold: float, samp: float, buffer_full: bool) -> str:
    """Where a micro-batch comes from: ``"student"``, ``"replay"`` or ``"ground_truth"``."""
    if r < samp or (r < threshold and not buffer_full):
        return "student"
    if r < threshold:
        return "replay"
    return "ground_truth"


def raised_threshold(threshold: float, prev: float, current: float, eps: float):
    """(threshold, reference loss) after a validation: +0.1 when the loss rose by ``eps``."""
    if current >= prev + eps:
        return min(threshold + 0.1, 1.0), current
    return threshold, prev


@torch.no_grad()
def validation_ce(ctx: TrainContext, batch_size: int) -> float:
    """Mean token cross-entropy of the student on the validation items (ground truth)."""
    student, items = ctx.student, ctx.dev_items
    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        pairs = to_device(
            collate_pairs(
                [i["prompts"] for i in chunk],
                [i["responses"] for i in chunk],
                ctx.tokenizer.pad_token_id,
            ),
            ctx.device,
        )
        total += float(response_ce_sum(student, pairs))
        count += response_token_count(pairs["labels"])
    student.train(was_training)
    return total / max(count, 1)


class AdaptiveOffPolicy:
    """The threshold, its validation schedule and the replay buffer of one training unit."""

    def __init__(self, config: AdaptiveConfig):
        self.config = config
        self.threshold = config.init_threshold
        self.prev_loss: float | None = None
        self.buffer: deque = deque(maxlen=config.capacity)
        self.micro_steps = 0

    # ---- schedule ----------------------------------------------------------------------
    def _step(self, ctx: TrainContext) -> int:
        return self.micro_steps // max(ctx.grad_accum, 1)

    def _eval_every(self, ctx: TrainContext) -> int:
        return self.config.eval_every or max(ctx.steps_per_epoch, 1)

    def _maybe_validate(self, ctx: TrainContext, batch_size: int) -> None:
        if not ctx.dev_items:
            return
        step = self._step(ctx)
        at_boundary = self.micro_steps % max(ctx.grad_accum, 1) == 0
        if self.prev_loss is None:
            self.prev_loss = validation_ce(ctx, batch_size)
        elif at_boundary and step > 0 and step % self._eval_every(ctx) == 0:
            current = validation_ce(ctx, batch_size)
            self.threshold, self.prev_loss = raised_threshold(
                self.threshold, self.prev_loss, current, self.config.loss_eps
            )

    # ---- data --------------------------------------------------------------------------
    def batch(self, batch: dict, ctx: TrainContext) -> tuple[dict, str]:
        """The micro-batch to train on and where it came from."""
        size = len(batch["prompts"])
        self._maybe_validate(ctx, size)
        progress = min(self._step(ctx) / max(ctx.total_steps, 1), 1.0)
        self.micro_steps += 1
        samp = sampling_threshold(self.threshold, progress, self.config.replay_ratio)
        r = float(torch.rand(1, generator=ctx.generator))
        full = len(self.buffer) >= self.config.capacity
        source = choose_source(r, self.threshold, samp, full)
        if source == "student":
            settings = replace(ctx.sampling, greedy=False, temperature=1.0, top_k=0, top_p=1.0)
            responses = sample_student(batch["prompts"], ctx, settings)
            self.buffer.extend(zip(batch["prompts"], map(tuple, responses), strict=True))
            return {"prompts": batch["prompts"], "responses": responses}, source
        if source == "replay":
            picks = torch.randperm(len(self.buffer), generator=ctx.generator)[:size].tolist()
            pairs = [self.buffer[i] for i in picks]
            return {"prompts": [p for p, _ in pairs], "responses": [s for _, s in pairs]}, source
        return batch, source

    # ---- resumable state ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "prev_loss": self.prev_loss,
            "buffer": [[list(p), list(s)] for p, s in self.buffer],
            "micro_steps": self.micro_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.threshold = state["threshold"]
        self.prev_loss = state["prev_loss"]
        self.buffer = deque(
            ((tuple(p), tuple(s)) for p, s in state["buffer"]), maxlen=self.config.capacity
        )
        self.micro_steps = state["micro_steps"]
