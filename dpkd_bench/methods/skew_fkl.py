"""DistiLLM skew KL (Ko et al. 2024, arXiv 2402.03898): SKL and SRKL with alpha = 0.1.

SKL:  KL(p || alpha p + (1 - alpha) q);  SRKL: KL(q || alpha q + (1 - alpha) p), token-level
and teacher-forced, on ground truth or, with DistiLLM's adaptive off-policy schedule
(``dpkd_bench.methods.distillm``), on student samples fresh or from a replay buffer. DistiLLM's
scripts use kd_ratio = 1.0 (no CE on the instruction data) and add an LM loss on a pre-training
corpus, which this toolkit leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpkd_bench import losses
from dpkd_bench.methods.base import prepare_ground_truth
from dpkd_bench.methods.distillm import AdaptiveConfig, AdaptiveOffPolicy
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod
from dpkd_bench.recipe import require


@dataclass
class SkewConfig(MixedConfig, AdaptiveConfig):
    kd_ratio: float = 1.0
    alpha: float = 0.1

    def __post_init__(self):
        MixedConfig.__post_init__(self)
        AdaptiveConfig.__post_init__(self)
        require(0.0 <= self.alpha < 1.0, "alpha", "must be in [0, 1)")


class SkewMethod(TokenLevelMethod):
    """A skew divergence on ground truth or DistiLLM's adaptive off-policy student samples."""

    Config = SkewConfig
    units = {"ce": "tokens", "distill": "tokens", "student_data": "batches", "threshold": "batches"}
    deviation = "no LM loss on a pre-training corpus"

    def __init__(self, config=None):
        super().__init__(config)
        self._schedule = AdaptiveOffPolicy(self.config)

    def start(self, ctx) -> None:
        self._schedule = AdaptiveOffPolicy(self.config)  # each unit starts at init_threshold

    def prepare(self, batch, ctx):
        source = "ground_truth"
        if self.config.adaptive:
            batch, source = self._schedule.batch(batch, ctx)
        prepared = prepare_ground_truth(batch, ctx)
        prepared["counts"]["batches"] = 1
        prepared["student_data"] = source != "ground_truth"
        prepared["threshold"] = self._schedule.threshold if self.config.adaptive else 0.0
        return prepared

    def loss_terms(self, student, prepared, ctx):
        terms = super().loss_terms(student, prepared, ctx)
        terms["student_data"] = torch.tensor(float(prepared["student_data"]))
        terms["threshold"] = torch.tensor(float(prepared["threshold"]))
        return terms

    def state_dict(self) -> dict:
        return {"adaptive": self._schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._schedule.load_state_dict(state["adaptive"])


class SkewFKL(SkewMethod):
    name = "skew_fkl"
    paper = "Ko et al. 2024, DistiLLM, arXiv 2402.03898 (skew KL)"

    def divergence(self, student_logits, teacher_logits):
        return losses.token_skew_forward_kl(student_logits, teacher_logits, self.config.alpha)
