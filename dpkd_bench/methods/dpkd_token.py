"""DPKD, token-level reading of the official code (microsoft/LMOps, dpkd/main.py).

At each teacher-forced position of the response the teacher's argmax token is the chosen token
and the student's argmax the rejected one; the DPO-style loss uses the teacher as the reference
model. Loss: (1 - r) * CE + r * DPKD-token, r = 0.5, beta = 0.1.

Data: the official runner (dpkd/scripts/dpkd-gpt2_base_runner.sh, ``--seqKD-DPO``) trains on
teacher-generated responses, so ``train_data`` defaults to the run's cached teacher samples
(``ground_truth`` selects the dataset's responses). Its ``--LMPT --lm-coef 0.5`` adds
``0.5 * [(1 - r) * CE + r * KD]`` on a pre-training corpus: ``pt_weight`` 0.5 with
``pt_kd_ratio`` 0.5 here (``pt_weight`` is 0 by default, as the default recipe has no corpus).
The official student keeps its dropout (``model.train()``), as here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.base import TEACHER_SAMPLES, TRAIN_DATA
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class DPKDTokenConfig(MixedConfig):
    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO (cDPO)
    reference_free: bool = False  # drop the teacher (reference) log-ratio
    ipo: bool = False  # IPO squared loss (h - 1/(2 beta))^2
    dpop_lambda: float = 0.0  # DPO-Positive penalty weight (0 = off)
    simpo_gamma: float | None = None  # SimPO target margin (None = off; reference-free)
    train_data: str = TEACHER_SAMPLES  # responses to train on: teacher_samples | ground_truth
    pt_kd_ratio: float = 0.5  # the official --LMPT term: half LM, half KD on the corpus

    def __post_init__(self):
        super().__post_init__()
        require(
            self.train_data in TRAIN_DATA,
            "train_data",
            f"must be one of {', '.join(TRAIN_DATA)} (got {self.train_data!r})",
        )
        require(self.beta > 0, "beta", "must be > 0")
        require(0.0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        require(self.dpop_lambda >= 0, "dpop_lambda", "must be >= 0")
        require(
            sum([self.ipo, self.dpop_lambda > 0, self.simpo_gamma is not None]) <= 1,
            "ipo",
            "ipo, dpop_lambda and simpo_gamma are alternative losses; set at most one",
        )


class DPKDToken(TokenLevelMethod):
    name = "dpkd_token"
    search_space = {"beta": (0.05, 0.1, 0.5)}  # the official code: 0.1
    paper = "Li et al. 2024, Direct Preference Knowledge Distillation, arXiv 2406.19774 (code)"
    Config = DPKDTokenConfig
    deviation = (
        "float32 instead of bfloat16 (log-softmax in bf16 in the official code); dpop_lambda "
        "puts the DPO-Positive penalty inside the "
        "sigmoid (Pal et al. 2024), the official --DPOP adds it outside with lambda 50; "
        "simpo_gamma follows the SimPO paper (margin), the official --simpo rescales the loss "
        "by the rejected length"
    )

    @property
    def train_data(self) -> str:  # type: ignore[override]
        return self.config.train_data

    def divergence(self, student_logits, teacher_logits):
        c = self.config
        return losses.token_dpkd(
            student_logits,
            teacher_logits,
            beta=c.beta,
            label_smoothing=c.label_smoothing,
            reference_free=c.reference_free,
            ipo=c.ipo,
            dpop_lambda=c.dpop_lambda,
            simpo_gamma=c.simpo_gamma,
        )
