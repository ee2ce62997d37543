"""Supervised fine-tuning: cross-entropy on the ground-truth responses, no teacher."""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    forward_logits,
    response_ce_sum,
    shifted_labels,
)


@dataclass
class SFTConfig(MethodConfig):
    """``response_rows``: project only the response positions onto the vocabulary (the default;
    ``base.response_logits``). False computes the logits of every position first: the same loss
    up to float rounding, kept because the default benchmark's shipped teacher was trained so,
    and a run that trains that teacher itself must reproduce its weights."""

    response_rows: bool = True

    def __post_init__(self):
        super().__post_init__()
        require(self.pt_kd_ratio == 0, "pt_kd_ratio", "must be 0: sft has no teacher")


class SFT(Method):
    name = "sft"
    paper = "supervised fine-tuning baseline (MiniLLM, arXiv 2306.08543, Sec. 3)"
    Config = SFTConfig
    uses_teacher = False
    units = {"ce": "tokens"}

    def weights(self):
        return {"ce": 1.0}

    def loss_terms(self, student, prepared, ctx):
        pairs = prepared["pairs"]
        if self.config.response_rows:
            return {"ce": response_ce_sum(student, pairs)}
        labels, mask = shifted_labels(pairs)
        ce = losses.token_cross_entropy(forward_logits(student, pairs), labels)
        return {"ce": losses.masked_sum(ce, mask)}
