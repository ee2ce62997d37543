"""DistiLLM skew KL (Ko et al. 2024, arXiv 2402.03898): SKL and SRKL with alpha = 0.1.

SKL:  KL(p || alpha p + (1 - alpha) q);  SRKL: KL(q || alpha q + (1 - alpha) p), on
teacher-forced ground truth. DistiLLM's scripts use kd_ratio = 1.0 (no CE on the instruction
data) and add an LM loss on a pre-training corpus, which this toolkit leaves out; the adaptive
off-policy student samples (replay buffer) are not implemented yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod
from dpkd_bench.recipe import require


@dataclass
class SkewConfig(MixedConfig):
    kd_ratio: float = 1.0
    alpha: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.alpha < 1.0, "alpha", "must be in [0, 1)")


class SkewFKL(TokenLevelMethod):
    name = "skew_fkl"
    paper = "Ko et al. 2024, DistiLLM, arXiv 2402.03898 (skew KL)"
    Config = SkewConfig
    deviation = "no LM loss on a pre-training corpus; no adaptive off-policy replay buffer yet"

    def divergence(self, student_logits, teacher_logits):
        return losses.token_skew_forward_kl(student_logits, teacher_logits, self.config.alpha)
