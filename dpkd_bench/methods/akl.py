"""AKL, adaptive KL (Wu et al., COLING 2025, arXiv 2404.02657): per token, forward KL weighted by
the teacher's head gap and reverse KL by its tail gap (official code: wutaiqiang/LLM_KD_AKL,
AKL.py; :func:`dpkd_bench.losses.token_akl`).

The official file is a loss to put in MiniLLM's ``get_distil_loss``, so it trains like MiniLLM's
KD baseline: ``(1 - kd_ratio) * CE + kd_ratio * AKL`` on the teacher-forced ground truth, with
kd_ratio 0.5 (minillm/scripts/gpt2/kd/kd_base.sh).
"""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class AKLConfig(MixedConfig):
    mu: float = 0.5  # the head: the teacher's top tokens up to this cumulative probability

    def __post_init__(self):
        super().__post_init__()
        require(0.0 < self.mu < 1.0, "mu", "must be in (0, 1)")


class AKL(TokenLevelMethod):
    name = "akl"
    paper = "Wu et al. 2025, Rethinking KL Divergence in KD for LLMs (AKL), arXiv 2404.02657"
    Config = AKLConfig
    search_space = {"kd_ratio": (0.5, 1.0), "mu": (0.3, 0.5, 0.7)}  # official: 0.5, 0.5
    deviation = (
        "the official AKL.py is a loss alone, with no CE term: the mix (1 - kd_ratio) CE + "
        "kd_ratio AKL at 0.5 is MiniLLM's KD, where its README puts it (assumed, not an official "
        "AKL setting); where teacher and student agree exactly (both gaps 0) the weights are 1/2 "
        "each instead of the official 0/0 (NaN); both KLs are 0 there"
    )

    def divergence(self, student_logits, teacher_logits):
        return losses.token_akl(student_logits, teacher_logits, self.config.mu)
