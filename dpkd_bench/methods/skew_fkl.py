"""DistiLLM skew KL (Ko et al. 2024, arXiv 2402.03898): SKL and SRKL with alpha = 0.1.

SKL:  KL(p || alpha p + (1 - alpha) q);  SRKL: KL(q || alpha q + (1 - alpha) p), token-level
and teacher-forced, on ground truth or, with DistiLLM's adaptive off-policy schedule
(``dpkd_bench.methods.distillm``), on student samples fresh or from a replay buffer. DistiLLM's
scripts use kd_ratio = 1.0 (no CE on the instruction data) and add ``1.0 * CE`` on a
pre-training corpus (``--lm-coef`` 1, OpenWebText): ``pt_weight`` 1.0 with ``pt_kd_ratio`` 0
here, off by default because the default recipe has no corpus.

Student samples are aligned as the official sampler and loss align them (distillm/sampler.py):
the generated EOS is stripped and the loss covers the positions from the first response token's
input to the last token's, i.e. the prediction of the first response token (from the prompt's
last token) is left out and the prediction that follows the last generated token (its EOS) is
kept. Here the EOS stays in the response and the first response position is dropped from the
mask, which selects those same positions. The official student keeps its dropout while training
(``model.train()`` after sampling), as here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.data.collate import IGNORE
from dpkd_bench.methods.base import prepare_ground_truth, response_token_count
from dpkd_bench.methods.distillm import AdaptiveConfig, AdaptiveOffPolicy
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod
from dpkd_bench.methods.workload import Workload


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

    search_space = {"alpha": (0.05, 0.1, 0.3)}  # DistiLLM: 0.1
    Config = SkewConfig
    units = {"ce": "tokens", "distill": "tokens", "student_data": "batches", "threshold": "batches"}
    teacher_forced = {"adaptive": False}  # no student samples
    deviation = (
        "on student samples the CE term (weight 1 - kd_ratio, 0 in the official scripts) is "
        "on the same positions as the divergence, next-token aligned (the official code "
        "pairs each logit with its own input token there); a sample cut at max_new_tokens "
        "without EOS has no position after its last token"
    )

    def workload(self) -> Workload:
        base = super().workload()
        if not self.config.adaptive:
            return base
        return replace(
            base, note="adaptive: student samples start when validation CE rises (not counted)"
        )

    def data_sources(self) -> list[str]:
        if not self.config.adaptive:
            return ["ground-truth responses"]
        return [
            "ground-truth responses; with probability rising from "
            f"{self.config.init_threshold} by 0.1 when validation CE rises, student samples "
            f"(fresh, or from a replay buffer of {self.config.capacity})"
        ]

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
        if source != "ground_truth":
            drop_first_response_position(prepared, batch["prompts"])
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


def drop_first_response_position(prepared: dict, prompts: list) -> None:
    """Leave the first response token of every row out of the loss (DistiLLM's alignment of
    student samples), in place; the token count follows."""
    labels = prepared["pairs"]["labels"]
    for row, prompt in enumerate(prompts):
        labels[row, len(prompt)] = IGNORE
    prepared["counts"]["tokens"] = response_token_count(labels)


class SkewFKL(SkewMethod):
    name = "skew_fkl"
    paper = "Ko et al. 2024, DistiLLM, arXiv 2402.03898 (skew KL)"

    def divergence(self, student_logits, teacher_logits):
        return losses.token_skew_forward_kl(student_logits, teacher_logits, self.config.alpha)
