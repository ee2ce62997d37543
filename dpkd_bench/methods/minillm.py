"""MiniLLM (Gu et al. 2024, arXiv 2306.08543): on-policy reverse KL by policy gradient.

Per prompt a response is sampled from the teacher-mixed distribution
``p_mix = alpha * p + (1 - alpha) * q_old`` (alpha = 0.2). With per-token reward
``r_t = log p(y_t | y_<t) - log q_old(y_t | y_<t)`` the reverse-KL gradient splits into

* the single-step part: the exact reverse KL(q || p) over the vocabulary at every step of the
  sampled response (no sampling noise for r_t itself), and
* the long-term part: a PPO-style clipped policy-gradient term whose advantage is the
  length-normalised, gamma-discounted sum of *future* rewards
  ``R_t = sum_{t' > t} gamma^(t'-t-1) r_t' / (number of future tokens)``.

Both are importance-weighted by ``w_t = q_old(y_t) / p_mix(y_t)`` (responses were sampled from
the mixture, not from q), and the policy ratio ``q_theta / q_old`` is clipped to 1 +- epsilon
(0.2). A rollout is reused for ``ppo_epochs`` optimiser steps, so the ratio moves away from 1
after the first. An optional CE term on the ground truth stands in for MiniLLM's LM loss on a
pre-training corpus (weight ``ce_weight``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dpkd_bench import losses
from dpkd_bench.data.collate import collate_pairs, collate_prompts
from dpkd_bench.generate import decode, response_lists
from dpkd_bench.methods.base import (
    Method,
    ce_sum,
    forward_logits,
    prepare_ground_truth,
    response_token_count,
    shifted_labels,
    teacher_logits,
    to_device,
)
from dpkd_bench.recipe import require


@dataclass
class MiniLLMConfig:
    mix_alpha: float = 0.2  # teacher share of the sampling mixture
    gamma: float = 0.99  # discount of future rewards
    clip_epsilon: float = 0.2  # PPO ratio clip
    ppo_epochs: int = 1  # optimiser steps per rollout
    max_importance_weight: float = 3.0  # cap on w_t = q_old / p_mix (variance control)
    single_step_weight: float = 1.0
    pg_weight: float = 1.0
    ce_weight: float = 0.0

    def __post_init__(self):
        require(0.0 <= self.mix_alpha < 1.0, "mix_alpha", "must be in [0, 1)")
        require(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        require(0.0 < self.clip_epsilon < 1.0, "clip_epsilon", "must be in (0, 1)")
        require(self.ppo_epochs >= 1, "ppo_epochs", "must be >= 1")
        require(self.max_importance_weight >= 1.0, "max_importance_weight", "must be >= 1")
        for key in ("single_step_weight", "pg_weight", "ce_weight"):
            require(getattr(self, key) >= 0, key, "must be >= 0")


def normalised_future_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """R_t = sum_{t'>t} gamma^(t'-t-1) r_t' / #(t' > t in the response). [B, T] -> [B, T]"""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        returns[:, t] = running
        running = rewards[:, t] + gamma * running
    remaining = mask.flip(-1).cumsum(-1).flip(-1) - mask  # future tokens after t
    return returns / remaining.clamp(min=1)


class MiniLLM(Method):
    name = "minillm"
    paper = "Gu et al. 2024, MiniLLM: Knowledge Distillation of LLMs, arXiv 2306.08543"
    Config = MiniLLMConfig
    units = {
        "single_step": "sample_tokens",
        "pg": "sample_tokens",
        "ce": "tokens",
        "reward": "sample_tokens",
    }
    deviation = (
        "CE on the ground-truth responses replaces the LM loss on a pre-training corpus "
        "(off by default); importance weights are capped at max_importance_weight"
    )

    def __init__(self, config=None):
        super().__init__(config)
        self._rollout: dict | None = None
        self._uses_left = 0

    def weights(self):
        c = self.config
        return {"single_step": c.single_step_weight, "pg": c.pg_weight, "ce": c.ce_weight}

    def prepare(self, batch, ctx):
        if self._uses_left == 0:
            self._rollout = self._new_rollout(batch, ctx)
            self._uses_left = self.config.ppo_epochs
        self._uses_left -= 1
        return self._rollout

    def _new_rollout(self, batch, ctx) -> dict:
        prompts = batch["prompts"]
        left = to_device(collate_prompts(prompts, ctx.tokenizer.pad_token_id), ctx.device)
        was_training = ctx.student.training
        ctx.student.eval()
        out = decode(
            ctx.student,
            left["input_ids"],
            left["attention_mask"],
            ctx.sampling,
            ctx.tokenizer.eos_token_id,
            ctx.tokenizer.pad_token_id,
            ctx.generator,
            mix_model=ctx.teacher,
            mix_alpha=self.config.mix_alpha,
        )
        samples = response_lists(out.cpu(), ctx.tokenizer.eos_token_id, keep_eos=True)
        pairs = to_device(collate_pairs(prompts, samples, ctx.tokenizer.pad_token_id), ctx.device)
        labels, mask = shifted_labels(pairs)
        log_q_old = losses.token_logprobs(forward_logits(ctx.student, pairs), labels)
        ctx.student.train(was_training)
        log_p = losses.token_logprobs(teacher_logits(ctx, pairs), labels)
        alpha = self.config.mix_alpha
        log_mix = (
            log_q_old
            if alpha == 0
            else torch.logaddexp(log_p + math.log(alpha), log_q_old + math.log1p(-alpha))
        )
        weight = (log_q_old - log_mix).exp().clamp(max=self.config.max_importance_weight)
        rewards = (log_p - log_q_old) * mask
        gt = prepare_ground_truth(batch, ctx)
        return {
            "pairs": pairs,
            "gt_pairs": gt["pairs"],
            "log_q_old": log_q_old,
            "weight": weight * mask,
            "rewards": rewards,
            "advantages": normalised_future_returns(rewards, mask.float(), self.config.gamma),
            "counts": {"sample_tokens": response_token_count(pairs["labels"]), **gt["counts"]},
        }

    def loss_terms(self, student, prepared, ctx):
        pairs, eps = prepared["pairs"], self.config.clip_epsilon
        labels, mask = shifted_labels(pairs)
        s_logits = forward_logits(student, pairs)
        t_logits = teacher_logits(ctx, pairs)
        weight = prepared["weight"]
        single = losses.token_reverse_kl(s_logits, t_logits) * weight
        ratio = (losses.token_logprobs(s_logits, labels) - prepared["log_q_old"]).exp()
        advantage = prepared["advantages"] * weight
        surrogate = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - eps, 1 + eps))
        terms = {
            "single_step": losses.masked_sum(single, mask),
            "pg": losses.masked_sum(surrogate, mask),
            "reward": prepared["rewards"].sum(),
        }
        if self.config.ce_weight:
            gt = prepared["gt_pairs"]
            terms["ce"] = ce_sum(forward_logits(student, gt), gt)
        return terms
