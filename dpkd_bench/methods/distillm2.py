"""DistiLLM-2 (Ko et al., ICML 2025, arXiv 2503.07067): skew forward KL on teacher responses and
skew reverse KL on student responses, a contrastive pair (official code: jongwooko/distillm-2,
src/distillm_trainer.py, loss type ``distillm_v2``).

Per prompt, y_t is a teacher response (the run's cached teacher samples) and y_s a response of
the *starting* student, drawn once per prompt before it trains on it (the official code
generates both with vLLM before training and never regenerates; here the copy of the starting
weights samples each prompt the first time it is drawn, at the official temperature 0.8 and
top-p 0.95). The loss of a pair is

    (2 - b) * mean_t SKL(y_t) + b * mean_t SRKL(y_s),
    SKL = KL(p || a p + (1 - a) q),   SRKL = KL(q || (1 - a) p + a sg(q)),   a = 0.1,

each term averaged over its response's tokens, then over the pairs. b = 1 in the released code;
``gradual_beta`` turns on its curriculum, b = 1 + 0.5 min(1, 2 s / N) after s of N steps (the
chosen weight falls from 1 to 0.5 and the rejected one rises to 1.5 over the first half).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods.base import (
    Method,
    MethodConfig,
    response_logits,
    sample_student,
    scatter_rows,
    shifted_labels,
    teacher_response_logits,
    to_device,
)
from dpkd_bench.methods.workload import Workload


@dataclass
class DistiLLM2Config(MethodConfig):
    alpha: float = 0.1  # the skew of both terms (hard-coded 0.1 officially)
    gradual_beta: bool = False  # the code's curriculum of the two weights (off as released)
    temperature: float = 0.8  # the student responses' sampling (generate_vllm.py)
    top_p: float = 0.95

    def __post_init__(self):
        super().__post_init__()
        require(0.0 <= self.alpha < 1.0, "alpha", "must be in [0, 1)")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")


def pair_weight(step: int, total: int, gradual: bool) -> float:
    """b, the student responses' weight (the teacher responses' is 2 - b), before step ``step``
    (0-based) of ``total``."""
    return 1.0 + 0.5 * min(1.0, 2.0 * step / max(total, 1)) if gradual else 1.0


def sequence_means(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean of per-token ``values`` [N] placed at ``mask`` [B, T] (0 for an empty
    row). -> [B]"""
    return scatter_rows(values, mask).sum(-1) / mask.sum(-1).clamp(min=1)


class DistiLLM2(Method):
    name = "distillm2"
    paper = "Ko et al. 2025, DistiLLM-2, ICML 2025, arXiv 2503.07067"
    Config = DistiLLM2Config
    needs_teacher_samples = True
    disables_dropout = True  # the trainer's disable_dropout (default True)
    units = {"teacher_skl": "pairs", "student_srkl": "pairs", "beta": "batches"}
    search_space = {"alpha": (0.05, 0.1, 0.3), "gradual_beta": (False, True)}
    deviation = (
        "teacher responses are the run's cached teacher samples (recipe sampling), not vLLM's "
        "at temperature 0.8 and top-p 0.95; the student responses are drawn lazily, each prompt "
        "the first time it is drawn, by a copy of the starting weights; the released code's "
        "per-sequence adaptive alpha is off there (update_alpha=False) and is not implemented; "
        "with several processes each keeps the responses it drew, so a prompt that reaches "
        "another process in a later epoch is drawn again there"
    )

    def __init__(self, config=None):
        super().__init__(config)
        self.start_model = None
        self.responses: dict[tuple, list[int]] = {}
        self.steps_done = 0
        self.total_steps = 0

    def weights(self):
        return {"teacher_skl": 1.0, "student_srkl": 1.0}

    def workload(self) -> Workload:
        return Workload(
            student_train=2.0,
            teacher_forward=2.0,
            note="one student sample per training prompt, by a copy of the starting weights "
            "(held in memory for the unit)",
        )

    def data_sources(self) -> list[str]:
        c = self.config
        return [
            "cached teacher samples (skew forward KL)",
            f"one sample per prompt of the starting student (temperature {c.temperature}, "
            f"top-p {c.top_p}; skew reverse KL)",
        ]

    def start(self, ctx) -> None:
        self.start_model = copy.deepcopy(ctx.student).eval()
        self.responses, self.steps_done = {}, 0
        self.total_steps = ctx.total_steps

    def student_responses(self, prompts: list, ctx) -> list[list[int]]:
        """The starting student's response to each prompt, sampled once per prompt."""
        missing = [p for p in dict.fromkeys(map(tuple, prompts)) if p not in self.responses]
        if missing:
            c = self.config
            settings = replace(ctx.sampling, temperature=c.temperature, top_p=c.top_p, top_k=0)
            start_ctx = replace(ctx, student=self.start_model)
            drawn = sample_student([list(p) for p in missing], start_ctx, settings)
            self.responses.update(zip(missing, drawn, strict=True))
        return [self.responses[tuple(p)] for p in prompts]

    def prepare(self, batch, ctx):
        """Rows [teacher response y_t; starting student's response y_s] of one padded batch."""
        prompts = batch["prompts"]
        responses = [*batch["teacher_responses"], *self.student_responses(prompts, ctx)]
        pairs = to_device(
            collate_pairs(prompts * 2, responses, ctx.tokenizer.pad_token_id), ctx.device
        )
        n = len(prompts)
        return {"pairs": pairs, "n": n, "counts": {"pairs": n, "batches": 1}}

    def loss_terms(self, student, prepared, ctx):
        n, pairs = prepared["n"], prepared["pairs"]
        _, mask = shifted_labels(pairs)
        s_rows = response_logits(student, pairs, mask)  # [N, V]: y_t rows, then y_s rows
        t_rows = teacher_response_logits(ctx, pairs, mask)
        split = int(mask[:n].sum())
        alpha = self.config.alpha
        skl = losses.token_skew_forward_kl(s_rows[None, :split], t_rows[None, :split], alpha)[0]
        srkl = losses.token_distillm2_skew_reverse_kl(
            s_rows[None, split:], t_rows[None, split:], alpha
        )[0]
        b = pair_weight(self.steps_done, self.total_steps, self.config.gradual_beta)
        return {
            "teacher_skl": (2 - b) * sequence_means(skl, mask[:n]).sum(),
            "student_srkl": b * sequence_means(srkl, mask[n:]).sum(),
            "beta": torch.tensor(b),
        }

    def end_step(self, step, logged):
        self.steps_done = step

    def state_dict(self) -> dict:
        return {
            "steps_done": self.steps_done,
            "responses": [[list(p), r] for p, r in self.responses.items()],
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = int(state["steps_done"])
        self.responses = {tuple(p): list(r) for p, r in state["responses"]}
