"""Token-level reverse KL(q || p) on teacher-forced ground truth, mixed with CE like ``kd``."""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class RKLConfig(MixedConfig):
    pass


class RKL(TokenLevelMethod):
    name = "rkl"
    paper = "reverse-KL baseline of MiniLLM (Gu et al. 2024, arXiv 2306.08543), teacher-forced"
    Config = RKLConfig

    def divergence(self, student_logits, teacher_logits):
        return losses.token_reverse_kl(student_logits, teacher_logits)
