"""How a method uses the models per training sequence, for the dry-run planner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """Per training sequence of a micro-batch: passes each model makes (fractions allowed)."""

    student_train: float = 1.0  # student forward + backward passes
    student_forward: float = 0.0  # forward-only student passes
    teacher_forward: float = 1.0  # teacher forward passes
    samples: float = 0.0  # on-policy samples drawn by the student
    teacher_in_sampling: bool = False  # the teacher steps with the student (mixed sampling)
    note: str = ""
