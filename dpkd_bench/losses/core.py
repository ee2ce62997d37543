"""Argument checks, shared maths and masked reductions of the losses (``dpkd_bench.losses``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------- argument checks


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_in(name: str, value: float, low: float, high: float, *, high_closed: bool) -> None:
    """``low <= value <= high`` (or ``< high``); NaN fails."""
    inside = low <= value <= high if high_closed else low <= value < high
    bracket = "]" if high_closed else ")"
    _require(inside, f"{name} must be in [{low:g}, {high:g}{bracket}, got {value}")


def _check_positive(name: str, value: float) -> None:
    _require(value > 0, f"{name} must be > 0, got {value}")


def _check_logit_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student vocab {student_logits.shape[-1]}, teacher vocab "
            f"{teacher_logits.shape[-1]}: the vocabularies differ, so the two distributions are "
            "not over the same tokens; use a teacher and a student that share one tokenizer"
        )
    _require(
        student_logits.shape == teacher_logits.shape,
        f"student logits {tuple(student_logits.shape)} and teacher logits "
        f"{tuple(teacher_logits.shape)} differ in shape; both must be [B, T, V] for the same "
        "batch and positions",
    )


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    _require(len(set(shapes.values())) == 1, f"shapes must match, got {shapes}")


# ---------------------------------------------------------------------------- shared maths


def _log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q, log p) in float32 from logits divided by ``temperature``; teacher detached.

    [B, T, V], [B, T, V] -> [B, T, V], [B, T, V]
    """
    _check_logit_pair(student_logits, teacher_logits)
    _check_positive("temperature", temperature)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return log_q, log_p


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) over the last axis from log-probabilities. [B, T, V] -> [B, T]

    Entries with a == 0 contribute exactly 0 (value and gradient), also where b == 0 too.
    """
    a = log_a.exp()
    log_ratio = (log_a - log_b).masked_fill(a == 0, 0.0)
    return (a * log_ratio).sum(-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w * a + (1 - w) * b) for 0 < w < 1, in log space. [B, T, V] -> [B, T, V]

    ``-inf`` inputs are floored to the lowest finite float first, so an entry where both a and
    b are zero has a finite (huge negative) log and a zero, not NaN, gradient.
    """
    floor = torch.finfo(log_a.dtype).min
    return torch.logaddexp(
        log_a.clamp(min=floor) + math.log(weight_a),
        log_b.clamp(min=floor) + math.log1p(-weight_a),
    )


def _skew_kl(log_a: torch.Tensor, log_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(a || alpha a + (1 - alpha) b); alpha = 0 is exactly KL(a || b). [B, T, V] -> [B, T]"""
    _check_in("alpha", alpha, 0.0, 1.0, high_closed=False)
    mixture = log_b if alpha == 0 else _log_mixture(log_a, log_b, alpha)
    return _kl(log_a, mixture)


def _where_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` in float32 where ``mask`` is set, exactly 0 elsewhere (even if NaN/inf there).

    [B, T], [B, T] -> [B, T]
    """
    _require(
        values.shape == mask.shape,
        f"mask shape {tuple(mask.shape)} != values shape {tuple(values.shape)}; "
        "the mask must be [B, T] like the per-token values",
    )
    values = values.float()
    return torch.where(mask.bool(), values, torch.zeros_like(values))


# ---------------------------------------------------------------------------- reductions


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over positions where ``mask`` is set. [B, T], [B, T] -> scalar"""
    return _where_mask(values, mask).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked positions / number of masked positions. [B, T], [B, T] -> scalar

    ``mask`` is bool or 0/1. An all-zero mask raises ``ValueError`` instead of returning NaN.
    """
    total = masked_sum(values, mask)
    count = mask.bool().sum()
    _require(
        int(count) > 0,
        "mask selects no token: there is nothing to average; check that the batch has at "
        "least one response token (labels != -100) before calling the loss",
    )
    return total / count
