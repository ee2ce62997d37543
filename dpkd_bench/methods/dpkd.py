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

Defaults: beta = 0.1, 0.5 * CE + 0.5 * preference, no extra KL term. The CE term is on the
ground truth by default; ``ce_data: teacher_samples`` puts it on the teacher's outputs y_t, as the
official code's LM term on its teacher pseudo-data (dpkd/finetune.py in microsoft/LMOps).
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
    ce_data: str = "ground_truth"  # or "teacher_samples": the CE term on y_t (official code)
    pt_kd_ratio: float = 0.5  # pre-training term as the official code's --LMPT: half LM, half KD

    def __post_init__(self):
        super().__post_init__()
        require(self.beta > 0, "beta", "must be > 0")
        require(
            self.ce_data in ("ground_truth", "teacher_samples"),
            "ce_data",
            f"must be 'ground_truth' or 'teacher_samples' (got {self.ce_data!r})",
        )
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
        # the student trains on its sample, the teacher sample and the ground truth (unless the
        # CE term is on the teacher sample); the teacher scores both preference responses; one
        # student sample per prompt
        rows = 3.0 if self.config.ce_data == "ground_truth" else 2.0
        return Workload(student_train=rows, teacher_forward=2.0, samples=1.0)

    deviation = (
        "sequence-level loss of the paper; the official code's token-level argmax loss is "
        "`dpkd_token`; the CE term is on the ground truth by default, the official code's on "
        "its teacher pseudo-data (ce_data=teacher_samples)"
    )

    def data_sources(self) -> list[str]:
        ce = "ground-truth responses" if self.config.ce_data == "ground_truth" else "y_t"
        return [
            "cached teacher samples y_t (preferred)",
            "on-policy student samples y_s of the same prompts (dispreferred)",
            f"{ce} (the CE term)",
        ]

    def weights(self):
        c = self.config
        return {"pref": c.pref_weight, "rkl": c.rkl_weight, "ce": c.ce_weight}

    def prepare(self, batch, ctx):
        """Rows [ground truth; teacher sample y_t; student sample y_s] of one padded batch, the
        ground-truth block only when the CE term is on it (``ce_data``)."""
        prompts = batch["prompts"]
        student_samples = sample_student(prompts, ctx)
        truth = list(batch["responses"]) if self.config.ce_data == "ground_truth" else []
        responses = [*truth, *batch["teacher_responses"], *student_samples]
        g, n = len(truth), len(prompts)
        pairs = collate_pairs(prompts * (2 + bool(g)), responses, ctx.tokenizer.pad_token_id)
        pairs = to_device(pairs, ctx.device)
        counts = {
            "tokens": response_token_count(pairs["labels"][: g or n]),  # the CE term's block
            "sequences": n,
            "sample_tokens": response_token_count(pairs["labels"][g + n :]),
        }
        return {"pairs": pairs, "n": n, "g": g, "counts": counts}

    def loss_terms(self, student, prepared, ctx):
        c, n, g, pairs = self.config, prepared["n"], prepared["g"], prepared["pairs"]
        labels, mask = shifted_labels(pairs)
        # response rows only, in row order: [ground truth (g rows, maybe none); y_t; y_s] for the
        # student, [y_t; y_s] for the teacher; the blocks' row counts split them
        s_rows = response_logits(student, pairs, mask)  # [N, V]
        t_rows = teacher_response_logits(ctx, _rows(pairs, slice(g, None)), mask[g:])
        s_logp = row_logprobs(s_rows, labels, mask)  # [g + 2n, T]
        t_logp = row_logprobs(t_rows, labels[g:], mask[g:])  # [2n, T]
        s_seq, t_seq = s_logp[g:].sum(-1), t_logp.sum(-1)  # [2n]: 0 off the responses
        lengths = mask[g:].sum(-1)
        first, chosen = int(mask[:g].sum()), int(mask[g : g + n].sum())
        margin = losses.dpkd_implicit_reward_margin(
            *(s_seq[:n], t_seq[:n], s_seq[n:], t_seq[n:], lengths[:n], lengths[n:]),
            beta=c.beta,
            length_normalize=c.length_normalize,
            reference_free=c.reference_free,
        )
        pref = -F.logsigmoid(margin)  # the paper's Eq. 8/9, per example
        margin = margin.detach()
        rkl = losses.token_reverse_kl(s_rows[None, first + chosen :], t_rows[None, chosen:])[0]
        ce_rows = slice(0, g or n)  # the ground truth, or y_t
        return {
            "pref": pref.sum(),
            "rkl": scatter_sum(rkl, mask[g + n :]),
            "ce": losses.masked_sum(-s_logp[ce_rows], mask[ce_rows]),
            "reward_acc": (margin > 0).float().sum(),
            "reward_margin": margin.sum(),
        }
