"""The training settings of the single loop (``TrainConfig``): a recipe's ``train`` section,
``student.init_train``, ``teacher.train``, and a method's own ``train`` block."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from dpkd_bench.config import require
from dpkd_bench.trackers import TRACKERS

SCHEDULES = ("constant", "linear", "cosine")  # train.schedule, each after its linear warm-up
SELECTIONS = ("last", "best_dev")  # train.select
DEV_METRICS = ("rougeL", "exact_match")  # train.dev_metric


@dataclass
class TrainConfig:
    """Optimisation settings of the single training loop.

    The recipe's ``train`` section holds every unit's settings; a method's ``train:`` block
    (``method_args.<method>.train``, or ``<method>.train.<key>=value`` on the command line)
    changes them for that method's units (:meth:`Recipe.unit_train`).

    Validation: every ``eval_every`` optimiser steps (and before the first, and after the last)
    the student decodes the dev split greedily and is scored with ``dev_metric``;
    ``select: best_dev`` then keeps the weights of the best dev score (ties: the earlier step;
    the untrained start is never selected), as the official MiniLLM, DistiLLM and DPKD code keep
    the checkpoint of the best validation ROUGE-L. ``eval_every: 0`` turns validation off.
    """

    steps: int = 300
    # > 0: passes over the training items instead (steps = ceil(epochs x items / sequences per
    # step), resolved when the data is loaded), as the official scripts count their budgets
    epochs: float = 0.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    schedule: str = "cosine"  # constant | linear | cosine (to 0 at the last step)
    warmup_ratio: float = 0.05  # share of the steps with a linear warm-up from 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 50  # optimiser steps between resumable checkpoints; 0 = none
    mixed_precision: str = "no"  # "no", "bf16" or "fp16" autocast (GPUs)
    gradient_checkpointing: bool = False
    # optimiser steps between dev evaluations; 0 = none; -1 = once per epoch (the official
    # scripts' --eval-interval -1)
    eval_every: int = 0
    select: str = "last"  # last | best_dev: the weights the unit keeps
    dev_metric: str = "rougeL"  # rougeL | exact_match, on greedy decodes of the dev split
    dev_examples: int = 0  # dev examples scored (the first N); 0 = all
    # A method's units only: start from this model (Hub name or local path, loaded as the
    # student section loads its model) instead of the run's student_init, e.g. the pretrained
    # GPT-2 the official sft / kd / seqkd baselines start from. None: student_init.
    init_from: str | None = None
    # Experiment trackers of the units' training (the recipe's `train` section; the teacher's and
    # student_init's are not tracked): any of tensorboard, wandb, mlflow (dpkd_bench/trackers.py)
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self):
        require(self.steps >= 0, "steps", f"must be >= 0 (got {self.steps})")
        require(
            self.epochs >= 0, "epochs", f"must be >= 0 (0: train.steps counts) (got {self.epochs})"
        )
        require(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")
        require(self.grad_accum >= 1, "grad_accum", f"must be >= 1 (got {self.grad_accum})")
        require(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        require(
            self.schedule in SCHEDULES,
            "schedule",
            f"must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})",
        )
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        require(self.log_every >= 1, "log_every", "must be >= 1")
        require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0 turns it off)")
        require(
            self.mixed_precision in ("no", "bf16", "fp16"),
            "mixed_precision",
            f"must be one of no, bf16, fp16 (got {self.mixed_precision!r})",
        )
        require(
            self.eval_every >= -1,
            "eval_every",
            "must be >= 0 (0 turns validation off), or -1 (once per epoch)",
        )
        require(
            self.select in SELECTIONS,
            "select",
            f"must be one of {', '.join(SELECTIONS)} (got {self.select!r})",
        )
        require(
            self.select == "last" or self.eval_every != 0,
            "select",
            "best_dev needs validation during training: set eval_every > 0 (or -1) too",
        )
        require(
            self.dev_metric in DEV_METRICS,
            "dev_metric",
            f"must be one of {', '.join(DEV_METRICS)} (got {self.dev_metric!r})",
        )
        require(self.dev_examples >= 0, "dev_examples", "must be >= 0 (0 = the whole dev split)")
        unknown = [name for name in self.report_to if name not in TRACKERS]
        require(
            not unknown,
            "report_to",
            f"names unknown trackers {unknown}; known: {', '.join(TRACKERS)}",
        )

    def for_items(self, items: int) -> TrainConfig:
        """These settings for ``items`` training items: the steps of ``epochs``, the steps of
        one epoch for ``eval_every: -1``."""
        per_epoch = max(math.ceil(items / (self.batch_size * self.grad_accum)), 1)
        resolved = self
        if self.epochs:
            steps = max(math.ceil(self.epochs * items / (self.batch_size * self.grad_accum)), 1)
            resolved = dataclasses.replace(resolved, steps=steps)
        if self.eval_every == -1:
            resolved = dataclasses.replace(resolved, eval_every=per_epoch)
        return resolved

    def identity(self) -> dict[str, Any]:
        """The settings that decide the weights, as a content key sees them: without
        ``report_to`` (where the curves go), and without the settings added since keys were
        first written while they hold the value that trained like before (so that the cached
        and shipped teachers keep their keys)."""
        values = dataclasses.asdict(self)
        values.pop("report_to")
        for key, inert in INERT_TRAIN_VALUES.items():
            if values[key] == inert:
                values.pop(key)
        return values


# TrainConfig settings added after content keys were first written, at the value under which a
# unit trains as before they existed (validation off, the last weights kept).
INERT_TRAIN_VALUES: dict[str, Any] = {
    "schedule": "cosine",
    "eval_every": 0,
    "select": "last",
    "dev_metric": "rougeL",
    "dev_examples": 0,
    "epochs": 0.0,
    "init_from": None,
}
