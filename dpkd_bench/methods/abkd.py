"""ABKD (ICML 2025, arXiv 2505.04560): the alpha-beta divergence between teacher
and student, teacher-forced, as its official GPT-2 scripts run it (ghwang-s/abkd,
distillation_llm/scripts/gpt2/ab/train_{0.3B,0.7B}_1.5B.sh: ``--type ab``, alpha 0.2, beta 0.7,
``--kd-ratio 1.0``).

alpha = 1, beta = 0 is forward KL and alpha = 0, beta = 1 reverse KL
(:func:`dpkd_bench.losses.token_ab_divergence`). The scripts pass ``--student-gen``, but the
``ab`` loss type never takes DistiLLM's student-sample branches, so training is on the fixed
data, as here. They add ``1.0 * CE`` on OpenWebText (``--lm-coef`` 1): ``pt_weight`` 1.0 with a
corpus, off by default because the default recipe has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class ABKDConfig(MixedConfig):
    kd_ratio: float = 1.0  # the official scripts: --kd-ratio 1.0 (no CE on the responses)
    alpha: float = 0.2
    beta: float = 0.7

    def __post_init__(self):
        super().__post_init__()
        for key in ("alpha", "beta"):
            require(math.isfinite(getattr(self, key)), key, "must be a finite number")


class ABKD(TokenLevelMethod):
    name = "abkd"
    paper = "ABKD: alpha-beta divergence KD, ICML 2025, arXiv 2505.04560"
    Config = ABKDConfig
    search_space = {"alpha": (0.2, 0.5), "beta": (0.7, 0.5)}  # official GPT-2: 0.2, 0.7
    deviation = (
        "defaults are the 0.3B and 0.7B scripts' alpha 0.2, beta 0.7: the released 0.1B script "
        "hard-codes alpha 0, beta 1 (reverse KL) with a GPT-2 medium teacher path, so the "
        "setting behind the published 120M figure is not in the code; no OpenWebText term by "
        "default (pt_weight 0)"
    )

    def divergence(self, student_logits, teacher_logits):
        c = self.config
        return losses.token_ab_divergence(student_logits, teacher_logits, c.alpha, c.beta)
