"""Shared shape of the teacher-forced, token-level methods: (1 - r) * CE + r * divergence.

A token-level method names one per-token divergence of ``dpkd_bench.losses``; the CE and the
divergence are both averaged over the response tokens of the whole accumulated batch, with one
student forward and one teacher forward per micro-batch. The logits, the CE and the divergence
are computed on the response positions only (the rows of ``labels[:, 1:] != -100``; see
``base.response_logits``) and scattered back before the masked sum, so the values and gradients
are those of the full ``[B, T, V]`` computation up to the rounding of the output projection.

Teacher-logit cache (``teacher_cache_k`` > 0 and a cache attached with
:meth:`TokenLevelMethod.use_teacher_cache`): a micro-batch whose every (prompt, response) pair
is in the cache -- or whose prepared dict carries ``teacher_topk``, the cached rows
``(ids [N, k], logp [N, k], rest [N])`` -- skips the teacher forward and compares the student
with the teacher's cached top-k (an approximation, see ``dpkd_bench.teacher_cache``). Any other
micro-batch (on-policy samples, ...) runs the teacher as without a cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dpkd_bench import losses, teacher_cache
from dpkd_bench.config import require
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    response_logits,
    scatter_sum,
    shifted_labels,
    teacher_response_logits,
)


def check_cache_k(value: int) -> None:
    require(value >= 0, "teacher_cache_k", "must be >= 0 (0 = exact teacher forward)")


@dataclass
class MixedConfig(MethodConfig):
    """``kd_ratio`` r weights the divergence; 1 - r weights the CE (MiniLLM scripts: 0.5).

    ``teacher_cache_k``: 0 runs the teacher at every step (exact); k > 0 reads the teacher's
    top-k log-probabilities from a cache built once per recipe (an approximation).
    """

    kd_ratio: float = 0.5
    teacher_cache_k: int = 0

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.kd_ratio <= 1.0, "kd_ratio", "must be in [0, 1]")
        check_cache_k(self.teacher_cache_k)


class TokenLevelMethod(Method):
    """Loss (1 - r) * CE + r * divergence, both over the teacher-forced response tokens."""

    units: ClassVar[dict[str, str]] = {"ce": "tokens", "distill": "tokens"}
    teacher_forced: ClassVar[dict | None] = {}  # always teacher-forced on the training items
    teacher_cache: teacher_cache.TeacherCache | None = None

    def divergence(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        """Per-token divergence [B, T] from logits [B, T, V]."""
        raise NotImplementedError

    def cached_divergence(
        self, student_logits: torch.Tensor, cached: teacher_cache.CachedRows
    ) -> torch.Tensor:
        """Per-token divergence [N] against the cached teacher (top-k exact, rest spread
        uniformly; see ``dpkd_bench.teacher_cache``). [N, V] -> [N]"""
        return teacher_cache.spread(self.divergence, student_logits, cached)

    def use_teacher_cache(self, cache: teacher_cache.TeacherCache) -> None:
        """Read the teacher from ``cache`` for the micro-batches it holds."""
        k = self.config.teacher_cache_k
        if not 1 <= k <= cache.k:
            raise ValueError(
                f"{self.name}: teacher_cache_k={k} but the cache holds the top {cache.k}; set "
                f"{self.name}.teacher_cache_k to a value in [1, {cache.k}] or build a larger cache"
            )
        self.teacher_cache = cache

    def weights(self):
        ratio = self.config.kd_ratio
        return {"ce": 1.0 - ratio, "distill": ratio}

    def cached_teacher(self, prepared: dict) -> teacher_cache.CachedRows | None:
        """The micro-batch's cached teacher rows, or None when it needs the teacher forward."""
        cached = prepared.get("teacher_topk")
        k = self.config.teacher_cache_k
        if cached is not None or not k:
            return cached
        if self.teacher_cache is None:
            raise RuntimeError(
                f"{self.name}: teacher_cache_k={k} asks for the teacher-logit cache but none is "
                f"attached (Method.use_teacher_cache); set {self.name}.teacher_cache_k=0 for the "
                "exact teacher"
            )
        return self.teacher_cache.rows_for_pairs(prepared["pairs"], k)

    def distill_values(self, student_rows, prepared, ctx, mask) -> torch.Tensor:
        """Per-token divergence of the response rows [N, V] -> [N]."""
        cached = self.cached_teacher(prepared)
        if cached is None:
            teacher_rows = teacher_response_logits(ctx, prepared["pairs"], mask)
            return self.divergence(student_rows[None], teacher_rows[None])[0]
        device = student_rows.device
        return self.cached_divergence(student_rows, tuple(t.to(device) for t in cached))

    def loss_terms(self, student, prepared, ctx):
        pairs = prepared["pairs"]
        labels, mask = shifted_labels(pairs)
        student_rows = response_logits(student, pairs, mask)  # [N, V], response positions
        ce = losses.token_cross_entropy(student_rows[None], labels[mask][None])[0]
        distill = self.distill_values(student_rows, prepared, ctx, mask)
        return {"ce": scatter_sum(ce, mask), "distill": scatter_sum(distill, mask)}
