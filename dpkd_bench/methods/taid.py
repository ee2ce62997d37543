"""TAID (Shing et al., ICLR 2025, arXiv 2501.16937): forward KL to a target interpolated from the
student toward the teacher, with an adaptive schedule (official code: SakanaAI/TAID,
src/distil_losses/taid.py; :func:`dpkd_bench.losses.token_taid`).

The target is p_t = softmax((1 - t) z_s.detach() + t z_T). After each optimiser step, with L the
step's loss (the official value: the cross-entropy H(p_t, q) = KL + H(p_t)):

    r = (L_prev - L) / (L_prev + 1e-15);  m = beta m + (1 - beta) r
    t = min(t_end, max(t_start + (t_end - t_start) * s / N, t + alpha sigmoid(m) (1 - t)))

where s is the number of steps taken before this one and N the unit's steps; the first step only
records L. ``adaptive=False`` keeps the linear schedule alone (``--taid_disable_adaptive``).
t, m and L_prev are part of the unit's checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.methods.token_level import MixedConfig, TokenLevelMethod


@dataclass
class TAIDConfig(MixedConfig):
    kd_ratio: float = 1.0  # official distil_ratio 1.0: no CE term
    t_start: float = 0.4
    t_end: float = 1.0
    alpha: float = 5e-4  # the step size of the adaptive update (--taid_alpha)
    beta: float = 0.99  # the momentum of the relative loss change (--taid_beta)
    adaptive: bool = True

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.t_start < 1.0, "t_start", "must be in [0, 1)")
        require(self.t_start < self.t_end <= 1.0, "t_end", "must be in (t_start, 1]")
        require(0.0 <= self.alpha <= 1.0, "alpha", "must be in [0, 1]")
        require(0.0 <= self.beta < 1.0, "beta", "must be in [0, 1)")


def next_t(cfg: TAIDConfig, state: dict, loss: float, progress: float) -> dict:
    """The schedule's state {t, momentum, prev_loss} after a step of ``loss``, taken when
    ``progress`` = steps before it / all steps. The first step records its loss only."""
    linear = cfg.t_start + (cfg.t_end - cfg.t_start) * progress
    if not cfg.adaptive:
        return {**state, "t": min(cfg.t_end, linear), "prev_loss": loss}
    if math.isinf(state["prev_loss"]):
        return {**state, "prev_loss": loss}
    change = (state["prev_loss"] - loss) / (state["prev_loss"] + 1e-15)
    momentum = cfg.beta * state["momentum"] + (1 - cfg.beta) * change
    t = state["t"]
    sigmoid = 0.5 * (1 + math.tanh(momentum / 2))  # stable for any momentum
    step = cfg.alpha * sigmoid * (1 - t)
    return {"t": min(cfg.t_end, max(linear, t + step)), "momentum": momentum, "prev_loss": loss}


class TAID(TokenLevelMethod):
    name = "taid"
    paper = "Shing et al. 2025, TAID, ICLR 2025, arXiv 2501.16937"
    Config = TAIDConfig
    units = {"ce": "tokens", "distill": "tokens", "t": "batches"}
    search_space = {"t_start": (0.2, 0.4), "alpha": (5e-4, 5e-3)}  # official: 0.4 or 0.2, 5e-4
    deviation = (
        "t advances once per optimiser step on the loss of the whole accumulated batch of every "
        "process (officially on every forward: each micro-batch of each GPU, and the validation "
        "batches too); the loss covers the response tokens (officially every token of the chat "
        "text)"
    )

    def __init__(self, config=None):
        super().__init__(config)
        self.schedule = self.initial_schedule()
        self.total_steps = 0

    def initial_schedule(self) -> dict:
        return {"t": self.config.t_start, "momentum": 0.0, "prev_loss": math.inf}

    def start(self, ctx) -> None:
        self.schedule = self.initial_schedule()
        self.total_steps = max(ctx.total_steps, 1)

    def divergence(self, student_logits, teacher_logits):
        # the official value H(p_t, q) = KL + H(p_t): the KL's gradient, the schedule's signal
        return losses.token_taid_cross_entropy(student_logits, teacher_logits, self.schedule["t"])

    def prepare(self, batch, ctx):
        prepared = super().prepare(batch, ctx)
        prepared["counts"]["batches"] = 1  # the logged t is a mean over micro-batches
        return prepared

    def loss_terms(self, student, prepared, ctx):
        terms = super().loss_terms(student, prepared, ctx)
        terms["t"] = torch.tensor(float(self.schedule["t"]))
        return terms

    def end_step(self, step, logged):
        loss = float(logged["distill"])
        self.schedule = next_t(self.config, self.schedule, loss, (step - 1) / self.total_steps)

    def state_dict(self) -> dict:
        return {"schedule": dict(self.schedule)}

    def load_state_dict(self, state: dict) -> None:
        self.schedule = dict(state["schedule"])
