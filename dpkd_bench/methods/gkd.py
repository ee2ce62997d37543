"""GKD (Agarwal et al. 2024, arXiv 2306.13649) with TRL's GKDTrainer semantics.

With probability ``lmbda`` a batch's responses are replaced by on-policy student samples for
its prompts, drawn at ``temperature`` (0.9) with top-k 0 and top-p 1 (else the ground truth is
used, or, with ``seq_kd``, teacher samples drawn fresh for the batch at that same temperature,
as TRL's GKDTrainer generates them). The loss is the generalised JSD with ``beta`` between
teacher and student (temperature 1), over the response tokens only, up to the first EOS;
no CE term.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.base import MethodConfig, prepare_ground_truth, sample_student
from dpkd_bench.methods.token_level import TokenLevelMethod, check_cache_k
from dpkd_bench.methods.workload import Workload


@dataclass
class GKDConfig(MethodConfig):
    beta: float = 0.5
    lmbda: float = 0.5  # fraction of on-policy (student-generated) batches
    temperature: float = 0.9  # of the on-policy sampling
    seq_kd: bool = False  # off-policy batches use fresh teacher samples instead of ground truth
    teacher_cache_k: int = 0  # > 0: off-policy batches read the cached teacher top-k

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.beta <= 1.0, "beta", "must be in [0, 1]")
        require(0.0 <= self.lmbda <= 1.0, "lmbda", "must be in [0, 1]")
        require(self.temperature > 0, "temperature", "must be > 0")
        check_cache_k(self.teacher_cache_k)


class GKD(TokenLevelMethod):
    name = "gkd"
    search_space = {"beta": (0.1, 0.5, 0.9)}  # GKD's JSD interpolation
    paper = "Agarwal et al. 2024, On-Policy Distillation of LMs (GKD), arXiv 2306.13649; TRL"
    Config = GKDConfig
    disables_dropout = True  # TRL's GKDConfig.disable_dropout defaults to True (student only)
    units = {"distill": "tokens", "ce": "tokens", "on_policy": "batches"}
    teacher_forced = {"lmbda": 0.0, "seq_kd": False}  # no sampled batches

    def workload(self) -> Workload:
        lmbda = self.config.lmbda
        teacher = lmbda if self.uses_teacher_cache else 1.0  # cached: on-policy batches only
        note = (
            f"the teacher samples {1 - lmbda:g} of the batches (seq_kd)"
            if self.config.seq_kd
            else ""
        )
        return Workload(teacher_forward=teacher, samples=lmbda, note=note)

    def data_sources(self) -> list[str]:
        c = self.config
        off = "fresh teacher samples (same temperature)" if c.seq_kd else "ground-truth responses"
        return [
            f"on-policy student samples (temperature {c.temperature}) in a fraction "
            f"lmbda = {c.lmbda} of the batches, {off} in the others"
        ]

    def weights(self):
        return {"distill": 1.0}

    def prepare(self, batch, ctx):
        on_policy = float(torch.rand(1, generator=ctx.generator)) < self.config.lmbda
        settings = replace(ctx.sampling, temperature=self.config.temperature, top_k=0, top_p=1.0)
        if on_policy:
            batch = {**batch, "responses": sample_student(batch["prompts"], ctx, settings)}
        elif self.config.seq_kd:
            teacher_ctx = replace(ctx, student=ctx.teacher)  # the teacher samples, as TRL's
            batch = {**batch, "responses": sample_student(batch["prompts"], teacher_ctx, settings)}
        prepared = prepare_ground_truth(batch, ctx)
        prepared["counts"]["batches"] = 1
        prepared["on_policy"] = on_policy
        return prepared

    def loss_terms(self, student, prepared, ctx):
        terms = super().loss_terms(student, prepared, ctx)
        terms["on_policy"] = torch.tensor(float(prepared["on_policy"]))
        return terms

    def divergence(self, student_logits, teacher_logits):
        # TRL's GKDTrainer.compute_loss calls generalized_jsd_loss at its default temperature 1;
        # ``temperature`` only shapes the on-policy sampling.
        return losses.token_generalized_jsd(student_logits, teacher_logits, self.config.beta)
