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
    search_space = {"kd_ratio": (0.5, 1.0)}
    paper = (
        "token-level reverse KL, teacher-forced: the RKL baseline of DistiLLM (Ko et al. 2024, "
        "arXiv 2402.03898) and GKD (Agarwal et al. 2024, arXiv 2306.13649)"
    )
    Config = RKLConfig
    deviation = "mixed with CE at kd_ratio 0.5 like `kd` (a toolkit choice)"

    def divergence(self, student_logits, teacher_logits):
        return losses.token_reverse_kl(student_logits, teacher_logits)
