"""SeqKD (Kim & Rush 2016): distil on the teacher's sampled responses instead of ground truth.

Teacher responses are sampled once per recipe (top-k 0, top-p 1, T 1 by default), cached and
shared by every method and seed. As in the MiniLLM baselines, the loss on those responses is
(1 - r) * CE + r * forward KL with r = kd_ratio = 0.5 (r = 0 is plain SFT on teacher outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench.methods.base import TEACHER_SAMPLES
from dpkd_bench.methods.kd import KD, KDConfig


@dataclass
class SeqKDConfig(KDConfig):
    pass


class SeqKD(KD):
    name = "seqkd"
    paper = "Kim & Rush 2016, Sequence-Level Knowledge Distillation, arXiv 1606.07947"
    Config = SeqKDConfig
    train_data = TEACHER_SAMPLES
