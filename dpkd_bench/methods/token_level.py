"""Shared shape of the teacher-forced, token-level methods: (1 - r) * CE + r * divergence.

A token-level method names one per-token divergence of ``dpkd_bench.losses``; the CE and the
divergence are both averaged over the response tokens of the whole accumulated batch, with one
student forward and one teacher forward per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dpkd_bench import losses
from dpkd_bench.methods.base import (
    Method,
    ce_sum,
    forward_logits,
    shifted_labels,
    teacher_logits,
)
from dpkd_bench.recipe import require


@dataclass
class MixedConfig:
    """``kd_ratio`` r weights the divergence; 1 - r weights the CE (MiniLLM scripts: 0.5)."""

    kd_ratio: float = 0.5

    def __post_init__(self):
        require(0.0 <= self.kd_ratio <= 1.0, "kd_ratio", "must be in [0, 1]")


class TokenLevelMethod(Method):
    """Loss (1 - r) * CE + r * divergence, both over the teacher-forced response tokens."""

    units: ClassVar[dict[str, str]] = {"ce": "tokens", "distill": "tokens"}

    def divergence(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        """Per-token divergence [B, T] from logits [B, T, V]."""
        raise NotImplementedError

    def weights(self):
        ratio = self.config.kd_ratio
        return {"ce": 1.0 - ratio, "distill": ratio}

    def loss_terms(self, student, prepared, ctx):
        pairs = prepared["pairs"]
        s_logits = forward_logits(student, pairs)
        t_logits = teacher_logits(ctx, pairs)
        _, mask = shifted_labels(pairs)
        distill = losses.masked_sum(self.divergence(s_logits, t_logits), mask)
        return {"ce": ce_sum(s_logits, pairs), "distill": distill}
