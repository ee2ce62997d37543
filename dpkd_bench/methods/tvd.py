"""Total variation distance 0.5 * sum_v |p - q| on teacher-forced ground truth, mixed with CE."""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class TVDConfig(MixedConfig):
    pass


class TVD(TokenLevelMethod):
    name = "tvd"
    search_space = {"kd_ratio": (0.5, 1.0)}
    paper = "total variation distance baseline (Wen et al. 2023, f-divergence KD, arXiv 2307.15190)"
    Config = TVDConfig

    def divergence(self, student_logits, teacher_logits):
        return losses.token_total_variation(student_logits, teacher_logits)
