"""MiniLLM (Gu et al. 2024, arXiv 2306.08543): on-policy reverse KL by policy gradient.

As in the official code (microsoft/LMOps, minillm/):

* rollouts are sampled from the teacher-mixed distribution
  ``p_mix = alpha * p + (1 - alpha) * q_old`` in probability space (alpha = 0.2);
* the per-token reward is ``r_t = (log p(y_t) - log q_old(y_t)) / reward_scaling``;
* the advantage is the length-normalised discounted return
  ``A_t = sum_{k >= t} gamma^(k - t) r_k / L_t`` (L_t: response tokens from t to the end,
  gamma = 0.95), whitened over the batch;
* the PPO-style objective clips ``ratio * w`` to 1 +- epsilon (0.2), where
  ``ratio = q_theta(y_t) / q_old(y_t)`` and ``w = q_old(y_t) / p_mix(y_t)`` corrects for sampling
  from the mixture;
* the single-step regulariser is the exact reverse KL(q || p) over the vocabulary at every
  position of the rollout;
* each rollout is reused for ``ppo_epochs`` (4) optimiser steps.

MiniLLM also adds an LM loss on a pre-training corpus; here an optional CE term on the
ground-truth responses (``ce_weight``, off by default) stands in for it.
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
    prepare_ground_truth,
    response_ce_sum,
    response_logits,
    response_token_count,
    row_logprobs,
    scatter_sum,
    shifted_labels,
    teacher_response_logits,
    to_device,
)
from dpkd_bench.recipe import require


@dataclass
class MiniLLMConfig:
    mix_alpha: float = 0.2  # teacher share of the sampling mixture
    gamma: float = 0.95  # discount of future rewards
    clip_epsilon: float = 0.2  # PPO clip of ratio * importance weight
    ppo_epochs: int = 4  # optimiser steps per rollout
    reward_scaling: float = 0.5  # rewards are divided by this
    reward_clip: float = 100.0  # then clipped to +- this
    whiten_advantages: bool = True
    single_step_weight: float = 1.0
    pg_weight: float = 1.0
    ce_weight: float = 0.0

    def __post_init__(self):
        require(0.0 <= self.mix_alpha < 1.0, "mix_alpha", "must be in [0, 1)")
        require(0.0 < self.gamma <= 1.0, "gamma", "must be in (0, 1]")
        require(0.0 < self.clip_epsilon < 1.0, "clip_epsilon", "must be in (0, 1)")
        require(self.ppo_epochs >= 1, "ppo_epochs", "must be >= 1")
        require(self.reward_scaling > 0, "reward_scaling", "must be > 0")
        require(self.reward_clip > 0, "reward_clip", "must be > 0")
        for key in ("single_step_weight", "pg_weight", "ce_weight"):
            require(getattr(self, key) >= 0, key, "must be >= 0")


def length_normalised_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """A_t = sum_{k >= t} gamma^(k - t) r_k / L_t, L_t = response tokens in [t, end). [B, T]"""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    remaining = mask.flip(-1).cumsum(-1).flip(-1)
    return returns / remaining.clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the masked positions; zero elsewhere."""
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / count
    return (values - mean) * torch.rsqrt(var + 1e-8) * mask


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
        "no LM loss on a pre-training corpus (an optional CE on the ground truth, ce_weight, "
        "stands in for it); no value model, as in the official code"
    )

    def __init__(self, config=None):
        super().__init__(config)
        self._rollout: dict | None = None
        self._uses_left = 0
        self._device = None

    def start(self, ctx) -> None:
        """A unit starts with a fresh rollout."""
        self._rollout, self._uses_left, self._device = None, 0, ctx.device

    def state_dict(self) -> dict:
        """The rollout in use and how many PPO epochs it still serves (resume mid-rollout)."""
        return {"rollout": self._rollout, "uses_left": self._uses_left}

    def load_state_dict(self, state: dict) -> None:
        self._rollout = _moved(state["rollout"], self._device)
        self._uses_left = state["uses_left"]

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
        log_q_old = row_logprobs(response_logits(ctx.student, pairs, mask), labels, mask)
        ctx.student.train(was_training)
        t_rows = teacher_response_logits(ctx, pairs, mask)  # [N, V]: reused by every PPO epoch
        log_p = row_logprobs(t_rows, labels, mask)
        alpha = self.config.mix_alpha
        log_mix = (
            log_q_old
            if alpha == 0
            else torch.logaddexp(log_p + math.log(alpha), log_q_old + math.log1p(-alpha))
        )
        c, fmask = self.config, mask.float()
        rewards = ((log_p - log_q_old) / c.reward_scaling).clamp(-c.reward_clip, c.reward_clip)
        advantages = length_normalised_returns(rewards * fmask, fmask, c.gamma)
        gt = prepare_ground_truth(batch, ctx)
        return {
            "pairs": pairs,
            "gt_pairs": gt["pairs"],
            "log_q_old": log_q_old,
            "teacher_rows": t_rows,
            "weight": (log_q_old - log_mix).exp() * fmask,
            "rewards": rewards * fmask,
            "advantages": whiten(advantages, fmask) if c.whiten_advantages else advantages,
            "counts": {"sample_tokens": response_token_count(pairs["labels"]), **gt["counts"]},
        }

    def loss_terms(self, student, prepared, ctx):
        pairs, eps = prepared["pairs"], self.config.clip_epsilon
        labels, mask = shifted_labels(pairs)
        s_rows = response_logits(student, pairs, mask)  # [N, V]
        single = losses.token_reverse_kl(s_rows[None], prepared["teacher_rows"][None])[0]
        log_ratio = row_logprobs(s_rows, labels, mask) - prepared["log_q_old"]
        ratio = log_ratio.exp() * prepared["weight"]
        advantage = prepared["advantages"]
        surrogate = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - eps, 1 + eps))
        terms = {
            "single_step": scatter_sum(single, mask),
            "pg": losses.masked_sum(surrogate, mask),
            "reward": prepared["rewards"].sum(),
        }
        if self.config.ce_weight:
            gt = prepared["gt_pairs"]
            terms["ce"] = response_ce_sum(student, gt)
        return terms


def _moved(value, device):
    """``value`` (tensors inside dicts) with every tensor on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    return value
