"""DistiLLM skew reverse KL (Ko et al. 2024, arXiv 2402.03898): KL(q || alpha q + (1 - alpha) p).

Shares its config (alpha = 0.1, kd_ratio, the adaptive off-policy schedule) with ``skew_fkl``.
"""

from __future__ import annotations

from dpkd_bench import losses
from dpkd_bench.methods.skew_fkl import SkewMethod


class SkewRKL(SkewMethod):
    name = "skew_rkl"
    paper = "Ko et al. 2024, DistiLLM, arXiv 2402.03898 (skew reverse KL)"

    def divergence(self, student_logits, teacher_logits):
        return losses.token_skew_reverse_kl(student_logits, teacher_logits, self.config.alpha)
