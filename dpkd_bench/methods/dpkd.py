"""DPKD as in the paper (Li et al. 2024, arXiv 2406.19774, Eq. 8/9): sequence-level preference.

For each prompt the teacher's sampled output y_t (generated once per recipe and cached) is
preferred over an on-policy student sample y_s. With q the student and p the teacher (the
reference model), the preference term is

    -log sigma( beta/|y_t| * (log q(y_t) - log p(y_t)) - beta/|y_s| * (log q(y_s) - log p(y_s)) )

i.e. the implicit reward beta * log(q/p) of the teacher's output must beat the student's.
The loss adds, with explicit weights, a token-level reverse KL(q || p) on the student's samples
(the KL term of the reward-maximisation objective the preference loss is derived from) and the
CE (LM) term on the ground-truth responses, so reward-vs-KL ablations are one override each:

    loss = pref_weight * preference + rkl_weight * reverse_kl + ce_weight * CE

Defaults: beta = 0.1, 0.5 * CE + 0.5 * preference, no extra KL term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    response_logits,
    response_token_count,
    row_logprobs,
    sample_student,
    scatter_sum,
    shifted_labels,
    teacher_response_logits,
    to_device,
)
from dpkd_bench.methods.workload import Workload


@dataclass
class DPKDConfig(MethodConfig):
    beta: float = 0.1
    pref_weight: float = 0.5
    rkl_weight: float = 0.0
    ce_weight: float = 0.5
    length_normalize: bool = True
    reference_free: bool = False
    pt_kd_ratio: float = 0.5  # pre-training term as the official code's --LMPT: half LM, half KD

    def __post_init__(self):
        super().__post_init__()
        require(self.beta > 0, "beta", "must be > 0")
        for key in ("pref_weight", "rkl_weight", "ce_weight"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(
            self.pref_weight + self.rkl_weight + self.ce_weight > 0,
            "pref_weight",
            "pref_weight, rkl_weight and ce_weight are all 0: nothing to train",
        )


def _rows(pairs: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    return {k: v[rows] for k, v in pairs.items()}


class DPKD(Method):
    name = "dpkd"
    search_space = {"beta": (0.05, 0.1, 0.5)}  # the paper: 0.1
    paper = "Li et al. 2024, Direct Preference Knowledge Distillation, arXiv 2406.19774 (Eq. 8/9)"
    Config = DPKDConfig
    needs_teacher_samples = True
    units = {
        "pref": "sequences",
        "rkl": "sample_tokens",
        "ce": "tokens",
        "reward_acc": "sequences",
        "reward_margin": "sequences",
    }

    def workload(self) -> Workload:
        # the student trains on its sample, the teacher sample and the ground truth; the teacher
        # scores both preference responses; one student sample per prompt
        return Workload(student_train=3.0, teacher_forward=2.0, samples=1.0)

    deviation = (
        "sequence-level loss of the paper; the official code's token-level argmax loss is "
        "`dpkd_token`"
    )

    def data_sources(self) -> list[str]:
        return [
            "cached teacher samples y_t (preferred)",
            "on-policy student samples y_s of the same prompts (dispreferred)",
            "ground-truth responses (the CE term)",
        ]

    def weights(self):
        c = self.config
        return {"pref": c.pref_weight, "rkl": c.rkl_weight, "ce": c.ce_weight}

    def prepare(self, batch, ctx):
        """Rows [ground truth; teacher sample y_t; student sample y_s] of one padded batch."""
        prompts = batch["prompts"]
        student_samples = sample_student(prompts, ctx)
        responses = [*batch["responses"], *batch["teacher_responses"], *student_samples]
        pairs = collate_pairs(prompts * 3, responses, ctx.tokenizer.pad_token_id)
        pairs = to_device(pairs, ctx.device)
        n = len(prompts)
        counts = {
            "tokens": response_token_count(pairs["labels"][:n]),
            "sequences": n,
            "sample_tokens": response_token_count(pairs["labels"][2 * n :]),
        }
        return {"pairs": pairs, "n": n, "counts": counts}

    def loss_terms(self, student, prepared, ctx):
        c, n, pairs = self.config, prepared["n"], prepared["pairs"]
        labels, mask = shifted_labels(pairs)
        # response rows only, in row order: [ground truth; y_t; y_s] for the student, [y_t; y_s]
        # for the teacher; the blocks' row counts split them
        s_rows = response_logits(student, pairs, mask)  # [N, V]
        t_rows = teacher_response_logits(ctx, _rows(pairs, slice(n, None)), mask[n:])
        s_logp = row_logprobs(s_rows, labels, mask)  # [3n, T]
        t_logp = row_logprobs(t_rows, labels[n:], mask[n:])  # [2n, T]
        s_seq, t_seq = s_logp[n:].sum(-1), t_logp.sum(-1)  # [2n]: 0 off the responses
        lengths = mask[n:].sum(-1)
        first, chosen = int(mask[:n].sum()), int(mask[n : 2 * n].sum())
        margin = losses.dpkd_implicit_reward_margin(
            *(s_seq[:n], t_seq[:n], s_seq[n:], t_seq[n:], lengths[:n], lengths[n:]),
            beta=c.beta,
            length_normalize=c.length_normalize,
            reference_free=c.reference_free,
        )
        pref = -F.logsigmoid(margin)  # the paper's Eq. 8/9, per example
        margin = margin.detach()
        rkl = losses.token_reverse_kl(s_rows[None, first + chosen :], t_rows[None, chosen:])[0]
        return {
            "pref": pref.sum(),
            "rkl": scatter_sum(rkl, mask[2 * n :]),
            "ce": losses.masked_sum(-s_logp[:n], mask[:n]),
            "reward_acc": (margin > 0).float().sum(),
            "reward_margin": margin.sum(),
        }
