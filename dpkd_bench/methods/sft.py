"""Supervised fine-tuning: cross-entropy on the ground-truth responses, no teacher."""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench.methods.base import Method, response_ce_sum


@dataclass
class SFTConfig:
    pass


class SFT(Method):
    name = "sft"
    paper = "supervised fine-tuning baseline (MiniLLM, arXiv 2306.08543, Sec. 3)"
    Config = SFTConfig
    uses_teacher = False
    units = {"ce": "tokens"}

    def weights(self):
        return {"ce": 1.0}

    def loss_terms(self, student, prepared, ctx):
        return {"ce": response_ce_sum(student, prepared["pairs"])}
