"""MiniLLM (Gu et al. 2024, arXiv 2306.08543): on-policy reverse KL by policy gradient.

As the official trainer (microsoft/LMOps, minillm/: trainer.py, sampler.py, losses.py,
reward.py) does it:

* a **rollout store** of ``rollout_size`` (256) responses over all processes (the official
  ``--num-rollouts``, divided by the number of GPUs in minillm/arguments.py; here each process
  keeps ``rollout_size // processes``) is sampled with the current student,
  one micro-batch of prompts at a time, from the teacher-mixed distribution
  ``p_mix = alpha * p + (1 - alpha) * q`` in probability space (alpha = 0.2); the store then
  serves ``ppo_epochs`` (4) passes, each in a fresh shuffled order, in micro-batches of the
  training batch size (the last partial one dropped), and is sampled anew after the last pass;
  an optimiser step takes ``grad_accum`` consecutive micro-batches, so every rollout serves
  ``ppo_epochs`` optimiser steps;
* the per-token reward is ``r_t = (log p(y_t) - log q_old(y_t)) / reward_scaling``, clipped to
  +- ``reward_clip``, with the old log-probabilities taken at sampling time;
* the return is the length-normalised discounted sum
  ``R_t = sum_{k >= t} gamma^(k - t) r_k / L_t`` (L_t: response tokens from t to the end,
  gamma = 0.95); the advantages are the returns **whitened over the whole padded tensor**
  ``[batch, max_new_tokens]`` (padding zeros included, population variance, the mean not added
  back) of each optimiser step's batch, pooled over processes, as the official code whitens
  each (global) mini-batch;
* the policy-gradient term clips ``ratio * w`` to 1 +- epsilon (0.2), with
  ``ratio = q_theta(y_t) / q_old(y_t)`` and the importance weight ``w = q_old(y_t) / p_mix(y_t)``;
* the single-step regulariser is the exact reverse KL(q || p) over the vocabulary at every
  response position, with a fresh teacher forward per micro-batch;
* the student's dropout is off for sampling and training (the official PPO model keeps the
  student in eval mode), and the LM term on the pre-training corpus (``pt_weight``, 1 in the
  official scripts, off by default here because the default recipe has no corpus) is
  ``(1 - pt_kd_ratio) * CE + pt_kd_ratio * KL(p || q)`` with ``pt_kd_ratio`` = 0.5.

No value model, as in the official code. PG, single-step and the rewards are averaged over the
sampled response tokens of the accumulated batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    response_logits,
    response_token_count,
    row_logprobs,
    sample_student,
    scatter_rows,
    scatter_sum,
    shifted_labels,
    teacher_response_logits,
    to_device,
)
from dpkd_bench.methods.workload import Workload


@dataclass
class MiniLLMConfig(MethodConfig):
    mix_alpha: float = 0.2  # teacher share of the sampling mixture
    gamma: float = 0.95  # discount of future rewards
    clip_epsilon: float = 0.2  # PPO clip of ratio * importance weight
    ppo_epochs: int = 4  # shuffled passes over each rollout store
    rollout_size: int = 256  # responses per store (official --num-rollouts)
    reward_scaling: float = 0.5  # rewards are divided by this
    reward_clip: float = 100.0  # then clipped to +- this
    whiten_advantages: bool = True
    single_step_weight: float = 1.0
    pg_weight: float = 1.0
    pt_kd_ratio: float = 0.5  # forward-KL share of the pre-training term (official --kd-ratio)

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.mix_alpha < 1.0, "mix_alpha", "must be in [0, 1)")
        require(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        require(0.0 < self.clip_epsilon < 1.0, "clip_epsilon", "must be in (0, 1)")
        require(self.ppo_epochs >= 1, "ppo_epochs", "must be >= 1")
        require(self.rollout_size >= 1, "rollout_size", "must be >= 1")
        require(self.reward_scaling > 0, "reward_scaling", "must be > 0")
        require(self.reward_clip > 0, "reward_clip", "must be > 0")
        for key in ("single_step_weight", "pg_weight"):
            require(getattr(self, key) >= 0, key, "must be >= 0")


def length_normalised_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """R_t = sum_{k >= t} gamma^(k - t) r_k / L_t, L_t = response tokens in [t, end). [B, T]"""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    remaining = mask.flip(-1).cumsum(-1).flip(-1)
    return returns / remaining.clamp(min=1)


def padded_moments(values: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population variance) of the rows ``values`` (each [n_i] <= ``width``) as one
    ``[len(values), width]`` tensor padded with zeros, pooled over every process."""
    flat = torch.cat(values).double()
    stats = torch.stack([flat.sum(), flat.square().sum(), flat.new_tensor(len(values) * width)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    total, squares, count = stats.unbind()
    mean = total / count
    return mean, squares / count - mean.square()


class MiniLLM(Method):
    name = "minillm"
    search_space = {"mix_alpha": (0.1, 0.2, 0.4)}  # official 0.2
    paper = "Gu et al. 2024, MiniLLM: Knowledge Distillation of LLMs, arXiv 2306.08543"
    Config = MiniLLMConfig
    disables_dropout = True
    units = {"single_step": "sample_tokens", "pg": "sample_tokens", "reward": "sample_tokens"}

    def workload(self) -> Workload:
        c = self.config
        rollout = 1.0 / c.ppo_epochs  # each stored rollout serves ppo_epochs trained sequences
        return Workload(
            student_forward=rollout,
            teacher_forward=1.0
            + rollout,  # a fresh teacher forward per micro-batch, and at rollout
            samples=rollout,
            teacher_in_sampling=c.mix_alpha > 0,
        )

    deviation = (
        "float32 (the official runs use fp16 DeepSpeed); the store is sampled in chunks of the "
        "micro-batch size (official --chunk-size); the pre-training term's KD part is "
        "KL(p || q), the official soft cross-entropy minus the teacher's entropy (the same "
        "gradient); a response cut at max_new_tokens without EOS is scored as it is; the "
        "advantages are whitened over each optimiser step's batch, not each micro-batch: that "
        "keeps the update independent of grad_accum"
    )

    def __init__(self, config=None):
        super().__init__(config)
        self.start(None)

    def data_sources(self) -> list[str]:
        c = self.config
        return [
            f"teacher-mixed student samples (alpha {c.mix_alpha}) of the training prompts, a "
            f"store of {c.rollout_size} rollouts (over all processes) reused for {c.ppo_epochs} "
            "shuffled passes"
        ]

    def start(self, ctx) -> None:
        """A unit starts with an empty store."""
        self._store: list[dict] = []  # one rollout per sequence (token ids and values)
        self._schedule: list[list[int]] = []  # the store's micro-batches still to serve
        self._step: list[dict] = []  # micro-batches of the current optimiser step

    def state_dict(self) -> dict:
        """The store and its remaining schedule (a resume continues mid-store exactly)."""
        return {"store": self._store, "schedule": self._schedule}

    def load_state_dict(self, state: dict) -> None:
        self._store, self._schedule, self._step = state["store"], state["schedule"], []

    def weights(self):
        c = self.config
        return {"single_step": c.single_step_weight, "pg": c.pg_weight}

    # ---- the rollout store -------------------------------------------------------------
    def prepare(self, batch, ctx):
        raise TypeError("MiniLLM draws the batches of its rollout store: call prepare_next")

    def prepare_next(self, draw, ctx):
        if not self._step:
            self._step = self._next_step(draw, ctx)
        return self._step.pop(0)

    def _next_step(self, draw, ctx) -> list[dict]:
        """The micro-batches of one optimiser step, their advantages whitened together."""
        chosen = []
        for _ in range(ctx.grad_accum):
            if not self._schedule:
                self._fill(draw, ctx)
            chosen.append([self._store[i] for i in self._schedule.pop(0)])
        width = ctx.sampling.max_new_tokens
        mean, var = padded_moments([r["returns"] for rows in chosen for r in rows], width)
        scale = torch.rsqrt(var + 1e-8)
        return [self._micro_batch(rows, ctx, mean, scale) for rows in chosen]

    def _fill(self, draw, ctx) -> None:
        """Sample a new store with the current student and schedule its shuffled passes."""
        store = []
        size = None
        wanted = max(self.config.rollout_size // max(ctx.processes, 1), 1)  # this process's share
        while size is None or len(store) < max(wanted, size):
            batch = draw()
            size = size or len(batch["prompts"])
            store.extend(self._rollouts(batch["prompts"], ctx))
        keep = max(wanted // size, 1) * size
        self._store = store[:keep]
        self._schedule = []
        for _ in range(self.config.ppo_epochs):
            order = torch.randperm(keep, generator=ctx.generator).tolist()
            self._schedule += [order[i : i + size] for i in range(0, keep, size)]

    def _rollouts(self, prompts: list, ctx) -> list[dict]:
        """Teacher-mixed samples for ``prompts`` and, per sequence, the values PPO needs."""
        c = self.config
        samples = sample_student(prompts, ctx, mix_alpha=c.mix_alpha)
        pairs = to_device(collate_pairs(prompts, samples, ctx.tokenizer.pad_token_id), ctx.device)
        labels, mask = shifted_labels(pairs)
        log_q = row_logprobs(response_logits(ctx.student, pairs, mask), labels, mask)
        log_p = row_logprobs(teacher_response_logits(ctx, pairs, mask), labels, mask)
        log_mix = log_q
        if c.mix_alpha > 0:
            log_mix = torch.logaddexp(
                log_p + math.log(c.mix_alpha), log_q + math.log1p(-c.mix_alpha)
            )
        fmask = mask.float()
        rewards = ((log_p - log_q) / c.reward_scaling).clamp(-c.reward_clip, c.reward_clip) * fmask
        returns = length_normalised_returns(rewards, fmask, c.gamma)
        weight = (log_q - log_mix).exp()
        return [
            {
                "prompt": list(prompt),
                "sample": list(sample),
                **{
                    key: values[row][mask[row]].cpu()
                    for key, values in (
                        ("log_q_old", log_q),
                        ("weight", weight),
                        ("rewards", rewards),
                        ("returns", returns),
                    )
                },
            }
            for row, (prompt, sample) in enumerate(zip(prompts, samples, strict=True))
        ]

    def _micro_batch(self, rows: list[dict], ctx, mean, scale) -> dict:
        pairs = collate_pairs(
            [r["prompt"] for r in rows], [r["sample"] for r in rows], ctx.tokenizer.pad_token_id
        )
        pairs = to_device(pairs, ctx.device)
        _, mask = shifted_labels(pairs)

        def placed(key):
            return scatter_rows(torch.cat([r[key] for r in rows]).to(ctx.device), mask)

        returns = placed("returns")
        if self.config.whiten_advantages:
            returns = ((returns - mean) * scale).to(returns.dtype) * mask
        return {
            "pairs": pairs,
            "log_q_old": placed("log_q_old"),
            "weight": placed("weight"),
            "rewards": placed("rewards"),
            "advantages": returns,
            "counts": dict.fromkeys(
                ("sample_tokens", "tokens"), response_token_count(pairs["labels"])
            ),
        }

    def loss_terms(self, student, prepared, ctx):
        pairs, eps = prepared["pairs"], self.config.clip_epsilon
        labels, mask = shifted_labels(pairs)
        s_rows = response_logits(student, pairs, mask)  # [N, V]
        t_rows = teacher_response_logits(ctx, pairs, mask)  # fresh, as the official code
        single = losses.token_reverse_kl(s_rows[None], t_rows[None])[0]
        log_ratio = row_logprobs(s_rows, labels, mask) - prepared["log_q_old"]
        ratio = log_ratio.exp() * prepared["weight"]
        advantage = prepared["advantages"]
        surrogate = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - eps, 1 + eps))
        return {
            "single_step": scatter_sum(single, mask),
            "pg": losses.masked_sum(surrogate, mask),
            "reward": prepared["rewards"].sum(),
        }
