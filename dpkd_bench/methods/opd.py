"""On-policy distillation with a sampled-token reverse-KL advantage (Thinking Machines'
tinker-cookbook, tinker_cookbook/distillation/train_on_policy.py, after the on-policy
distillation of Qwen3's small models).

The student samples one response per prompt at temperature 1. Each sampled token y_t gets the
advantage A_t = -kl_coef * (log q_old(y_t) - log p(y_t)), the per-token reverse KL of the
token drawn, with no discount, no baseline, no value model and no other reward; the student
trains on it by policy gradient with Tinker's ``importance_sampling`` loss,
-exp(log q(y_t) - log q_old(y_t)) * A_t (:func:`dpkd_bench.losses.token_opd`), one optimiser
step per batch of fresh samples. Unlike ``minillm``: no teacher-mixed sampling, no
length-normalised return over future tokens, no single-step regulariser, no clipping and no
store of rollouts served over several epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    prepare_ground_truth,
    response_logits,
    row_logprobs,
    sample_student,
    shifted_labels,
    teacher_response_logits,
)
from dpkd_bench.methods.workload import Workload


@dataclass
class OPDConfig(MethodConfig):
    temperature: float = 1.0  # of the student's sampling (tinker-cookbook: 1.0)
    kl_coef: float = 1.0  # kl_penalty_coef

    def __post_init__(self):
        super().__post_init__()
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.kl_coef > 0, "kl_coef", "must be > 0")


class OPD(Method):
    name = "opd"
    paper = (
        "on-policy distillation, a sampled-token reverse-KL advantage: Thinking Machines' "
        "tinker-cookbook (2025), after Qwen3's on-policy distillation (arXiv 2505.09388)"
    )
    Config = OPDConfig
    units = {"policy": "tokens", "sampled_rkl": "tokens"}
    disables_dropout = True  # the sampled policy and the trained one are the same network
    # the learning rate alone: kl_coef only scales the loss, and a temperature other than 1
    # samples off the policy being trained
    search_space: dict = {}
    deviation = (
        "one sample per prompt (tinker-cookbook's recipe draws 4, with no baseline between "
        "them); the loss is averaged over the sampled tokens of the accumulated batch (Tinker "
        "sums it: a factor of the step's token count); dropout off; q_old is the student's "
        "untempered log-probability, so a temperature other than 1 (an ablation, not the "
        "recipe) trains on samples of another distribution without correcting for it"
    )

    def weights(self):
        return {"policy": 1.0}

    def workload(self) -> Workload:
        return Workload(samples=1.0)

    def data_sources(self) -> list[str]:
        return [f"on-policy student samples (temperature {self.config.temperature})"]

    def prepare(self, batch, ctx):
        settings = replace(ctx.sampling, temperature=self.config.temperature, top_k=0, top_p=1.0)
        samples = sample_student(batch["prompts"], ctx, settings)
        prepared = prepare_ground_truth({**batch, "responses": samples}, ctx)
        pairs = prepared["pairs"]
        labels, mask = shifted_labels(pairs)
        teacher = teacher_response_logits(ctx, pairs, mask)
        prepared["teacher"] = row_logprobs(teacher, labels, mask)
        return prepared

    def loss_terms(self, student, prepared, ctx):
        pairs = prepared["pairs"]
        labels, mask = shifted_labels(pairs)
        current = row_logprobs(response_logits(student, pairs, mask), labels, mask)
        # these weights drew the samples (every micro-batch of a step is prepared before its
        # update, dropout off): q_old is the current log-probability, detached; ratio 1
        sampler = current.detach()
        policy = losses.token_opd(current, sampler, prepared["teacher"], self.config.kl_coef)
        sampled_rkl = sampler - prepared["teacher"]
        return {
            "policy": losses.masked_sum(policy, mask),
            "sampled_rkl": losses.masked_sum(sampled_rkl, mask),
        }
