"""Per-token divergences of teacher-forced distillation and their masked means (contract)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpkd_bench.losses.core import (
    IGNORE_INDEX,
    _check_in,
    _kl,
    _log_mixture,
    _log_probs,
    _require,
    _skew_kl,
    masked_mean,
)

# ---------------------------------------------------------------------------- per-token values


def token_forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p || q) at every position, both logits divided by ``temperature``.

    No T^2 factor is applied (multiply outside if a method wants Hinton's scaling).
    [B, T, V], [B, T, V] -> [B, T]
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(log_p, log_q)


def token_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(q || p) at every position, both logits divided by ``temperature`` (no T^2 factor).

    [B, T, V], [B, T, V] -> [B, T]
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(log_q, log_p)


def token_skew_forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.1
) -> torch.Tensor:
    """DistiLLM skew KL: KL(p || alpha p + (1 - alpha) q); alpha in [0, 1), 0 = KL(p || q).

    [B, T, V], [B, T, V] -> [B, T]
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _skew_kl(log_p, log_q, alpha)


def token_skew_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.1
) -> torch.Tensor:
    """DistiLLM skew reverse KL: KL(q || alpha q + (1 - alpha) p); alpha = 0 is KL(q || p).

    [B, T, V], [B, T, V] -> [B, T]
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _skew_kl(log_q, log_p, alpha)


def token_generalized_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """GKD's generalised Jensen-Shannon divergence, with TRL's conventions.

    beta = 0: KL(p || q); beta = 1: KL(q || p); otherwise, with m = beta p + (1 - beta) q,
    beta KL(p || m) + (1 - beta) KL(q || m). [B, T, V], [B, T, V] -> [B, T]
    """
    _check_in("beta", beta, 0.0, 1.0, high_closed=True)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    if beta == 0:
        return _kl(log_p, log_q)
    if beta == 1:
        return _kl(log_q, log_p)
    log_m = _log_mixture(log_p, log_q, beta)
    return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)


def token_total_variation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """Total variation distance 0.5 * sum_v |p - q|. [B, T, V], [B, T, V] -> [B, T]"""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] at every position; 0 where label == -100.

    Labels must be in [0, V) or -100. [B, T, V], [B, T] -> [B, T]
    """
    vocab = logits.shape[-1]
    _require(
        labels.shape == logits.shape[:-1],
        f"labels {tuple(labels.shape)} must be logits {tuple(logits.shape)} without the vocab axis",
    )
    keep = labels != IGNORE_INDEX
    _require(
        bool(((labels >= 0) & (labels < vocab) | ~keep).all()),
        f"labels must be token ids in [0, {vocab}) or {IGNORE_INDEX} (ignored)",
    )
    log_probs = F.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~keep, 0.0)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log q(label) at every position; 0 where label == -100. [B, T, V], [B, T] -> [B, T]"""
    return -token_logprobs(logits, labels)


# ---------------------------------------------------------------------------- contract (means)


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean KL(p || q) over masked positions (see :func:`token_forward_kl`). -> scalar"""
    return masked_mean(token_forward_kl(student_logits, teacher_logits, temperature), mask)


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean KL(q || p) over masked positions (see :func:`token_reverse_kl`). -> scalar"""
    return masked_mean(token_reverse_kl(student_logits, teacher_logits, temperature), mask)


def skew_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.1,
) -> torch.Tensor:
    """Mean DistiLLM SKL over masked positions (see :func:`token_skew_forward_kl`). -> scalar"""
    return masked_mean(token_skew_forward_kl(student_logits, teacher_logits, alpha), mask)


def skew_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.1,
) -> torch.Tensor:
    """Mean DistiLLM SRKL over masked positions (see :func:`token_skew_reverse_kl`). -> scalar"""
    return masked_mean(token_skew_reverse_kl(student_logits, teacher_logits, alpha), mask)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.5,
) -> torch.Tensor:
    """Mean GKD generalised JSD over masked positions (see :func:`token_generalized_jsd`)."""
    return masked_mean(token_generalized_jsd(student_logits, teacher_logits, beta), mask)


def total_variation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean total variation distance over masked positions. -> scalar"""
    return masked_mean(token_total_variation(student_logits, teacher_logits), mask)
