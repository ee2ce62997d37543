"""Divergences and preference losses for distillation, as pure tensor functions.

Conventions: ``student_logits`` and ``teacher_logits`` are ``[B, T, V]``; p is the teacher's
softmax and q the student's. Everything is computed in float32. The teacher is a constant: its
logits are detached, so gradients reach the student only.

Two layers:

* ``token_*`` functions return per-position values ``[B, T]`` with no masking. Training methods
  sum them over masked positions so the loop can normalise by the token count of a whole
  accumulated batch.
* The contract functions (``forward_kl``, ``reverse_kl``, ...) take a ``mask`` ``[B, T]`` and
  return the mean over masked positions. An all-zero mask raises ``ValueError``, never NaN.

``temperature`` divides both logits before the softmax; no T^2 factor is applied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------- helpers


def _log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q, log p) in float32, teacher detached. [B, T, V] each."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ (student vocab {student_logits.shape[-1]}, "
            f"teacher vocab {teacher_logits.shape[-1]}); they must share one tokenizer"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return log_q, log_p


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) over the last axis from log-probabilities; 0 * log 0 counts as 0. [B, T]"""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w * a + (1 - w) * b), stable, for 0 < w < 1. [B, T, V]"""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _check_unit(name: str, value: float, low_open: bool = False) -> None:
    ok = (value > 0.0 if low_open else value >= 0.0) and value <= 1.0
    if not ok:
        raise ValueError(f"{name} must be in {'(' if low_open else '['}0, 1], got {value}")


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` [B, T] over positions where ``mask`` [B, T] is set."""
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over masked positions / number of masked positions; an empty mask raises."""
    count = mask.to(torch.float32).sum()
    if float(count) == 0:
        raise ValueError("mask selects no token: nothing to average (all response tokens masked)")
    return masked_sum(values.float(), mask) / count


# ---------------------------------------------------------------------------- per-token values


def token_forward_kl(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """KL(p || q) per position. [B, T, V] -> [B, T]"""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(log_p, log_q)


def token_reverse_kl(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """KL(q || p) per position. [B, T, V] -> [B, T]"""
    log_q, log_p = _log_probs(student_logits, teacher_logits, temperature)
    return _kl(log_q, log_p)


def token_skew_forward_kl(student_logits, teacher_logits, alpha: float = 0.1) -> torch.Tensor:
    """DistiLLM SKL: KL(p || alpha p + (1 - alpha) q). alpha = 0 is plain KL(p || q). [B, T]"""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    mixture = log_q if alpha == 0 else _log_mix(log_p, log_q, alpha)
    return _kl(log_p, mixture)


def token_skew_reverse_kl(student_logits, teacher_logits, alpha: float = 0.1) -> torch.Tensor:
    """DistiLLM SRKL: KL(q || alpha q + (1 - alpha) p). alpha = 0 is plain KL(q || p). [B, T]"""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    mixture = log_p if alpha == 0 else _log_mix(log_q, log_p, alpha)
    return _kl(log_q, mixture)


def token_generalized_jsd(student_logits, teacher_logits, beta: float = 0.5) -> torch.Tensor:
    """GKD's generalised JSD (TRL semantics). [B, T, V] -> [B, T]

    beta = 0: KL(p || q); beta = 1: KL(q || p); otherwise with m = beta p + (1 - beta) q,
    beta KL(p || m) + (1 - beta) KL(q || m).
    """
    _check_unit("beta", beta)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    if beta == 0:
        return _kl(log_p, log_q)
    if beta == 1:
        return _kl(log_q, log_p)
    log_m = _log_mix(log_p, log_q, beta)
    return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)


def token_total_variation(student_logits, teacher_logits) -> torch.Tensor:
    """0.5 * sum_v |p - q| per position. [B, T, V] -> [B, T]"""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position, 0 where label == -100. -> [B, T]"""
    valid = labels != IGNORE_INDEX
    log_probs = F.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * valid


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log q(label) per position, 0 where label == -100. [B, T]"""
    return -token_logprobs(logits, labels)


def _preference_loss(logit: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) log sigma(x) - eps log sigma(-x) (cDPO when eps > 0)."""
    loss = -F.logsigmoid(logit)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-logit)
    return loss


def token_dpkd(
    student_logits,
    teacher_logits,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
    ipo: bool = False,
    dpop_lambda: float = 0.0,
    simpo_gamma: float | None = None,
) -> torch.Tensor:
    """Official-code DPKD at each teacher-forced position. [B, T, V] -> [B, T]

    y_t = argmax p (chosen), y_s = argmax q (rejected), on the same prefix;
    h = [log q(y_t) - log q(y_s)] - [log p(y_t) - log p(y_s)] (teacher bracket dropped when
    ``reference_free``); loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h).
    ``ipo``: (h - 1/(2 beta))^2. ``dpop_lambda`` (DPO-Positive): the logit is
    beta (h - lambda max(0, log p(y_t) - log q(y_t))). ``simpo_gamma`` (SimPO, reference-free,
    length 1 at token level): the logit is beta (log q(y_t) - log q(y_s)) - gamma.
    Where the two argmaxes agree h is exactly 0 and the gradient exactly zero.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    chosen = log_p.argmax(-1, keepdim=True)
    rejected = log_q.detach().argmax(-1, keepdim=True)
    agree = (chosen == rejected).squeeze(-1)
    q_chosen, q_rejected = (
        log_q.gather(-1, chosen).squeeze(-1),
        log_q.gather(-1, rejected).squeeze(-1),
    )
    p_chosen, p_rejected = (
        log_p.gather(-1, chosen).squeeze(-1),
        log_p.gather(-1, rejected).squeeze(-1),
    )
    student_ratio = torch.where(agree, torch.zeros_like(q_chosen), q_chosen - q_rejected)
    h = student_ratio if reference_free else student_ratio - (p_chosen - p_rejected)
    if ipo:
        return (h - 1 / (2 * beta)) ** 2
    if simpo_gamma is not None:
        logit = beta * student_ratio - simpo_gamma
    else:
        logit = beta * (h - dpop_lambda * F.relu(p_chosen - q_chosen)) if dpop_lambda else beta * h
    return _preference_loss(logit, label_smoothing)


# ---------------------------------------------------------------------------- contract (means)


def forward_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(p || q) over masked positions."""
    return masked_mean(token_forward_kl(student_logits, teacher_logits, temperature), mask)


def reverse_kl(student_logits, teacher_logits, mask, temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(q || p) over masked positions."""
    return masked_mean(token_reverse_kl(student_logits, teacher_logits, temperature), mask)


def skew_forward_kl(student_logits, teacher_logits, mask, alpha: float = 0.1) -> torch.Tensor:
    """Mean DistiLLM SKL over masked positions."""
    return masked_mean(token_skew_forward_kl(student_logits, teacher_logits, alpha), mask)


def skew_reverse_kl(student_logits, teacher_logits, mask, alpha: float = 0.1) -> torch.Tensor:
    """Mean DistiLLM SRKL over masked positions."""
    return masked_mean(token_skew_reverse_kl(student_logits, teacher_logits, alpha), mask)


def generalized_jsd(student_logits, teacher_logits, mask, beta: float = 0.5) -> torch.Tensor:
    """Mean GKD generalised JSD over masked positions."""
    return masked_mean(token_generalized_jsd(student_logits, teacher_logits, beta), mask)


def total_variation(student_logits, teacher_logits, mask) -> torch.Tensor:
    """Mean total variation distance over masked positions."""
    return masked_mean(token_total_variation(student_logits, teacher_logits), mask)


def dpkd_token_loss(
    student_logits,
    teacher_logits,
    mask,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
    ipo: bool = False,
    dpop_lambda: float = 0.0,
    simpo_gamma: float | None = None,
) -> torch.Tensor:
    """Mean official-code DPKD token loss over masked positions (see :func:`token_dpkd`)."""
    values = token_dpkd(
        student_logits,
        teacher_logits,
        beta,
        label_smoothing,
        reference_free,
        ipo,
        dpop_lambda,
        simpo_gamma,
    )
    return masked_mean(values, mask)


# ---------------------------------------------------------------------------- sequence level


def sequence_logprob(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Sum of log q(labels) over masked positions. [B, T, V], [B, T], [B, T] -> [B]"""
    safe = labels.masked_fill(~mask.bool(), 0)
    return (token_logprobs(logits, safe) * mask.to(torch.float32)).sum(-1)


def dpkd_implicit_reward_margin(
    student_logp_chosen,
    teacher_logp_chosen,
    student_logp_rejected,
    teacher_logp_rejected,
    len_chosen,
    len_rejected,
    beta: float = 0.1,
    length_normalize: bool = True,
    reference_free: bool = False,
) -> torch.Tensor:
    """beta/|y_t| (log q(y_t) - log p(y_t)) - beta/|y_s| (log q(y_s) - log p(y_s)). [B]"""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = student_logp_chosen.float()
    rejected = student_logp_rejected.float()
    if not reference_free:
        chosen = chosen - teacher_logp_chosen.detach().float()
        rejected = rejected - teacher_logp_rejected.detach().float()
    if length_normalize:
        chosen = chosen / torch.as_tensor(len_chosen).float().clamp(min=1)
        rejected = rejected / torch.as_tensor(len_rejected).float().clamp(min=1)
    return beta * (chosen - rejected)


def dpkd_sequence_terms(*args, **kwargs) -> torch.Tensor:
    """Per-example DPKD sequence loss -log sigma(margin). [B] (same arguments as the margin)"""
    return -F.logsigmoid(dpkd_implicit_reward_margin(*args, **kwargs))


def dpkd_sequence_loss(
    student_logp_chosen,
    teacher_logp_chosen,
    student_logp_rejected,
    teacher_logp_rejected,
    len_chosen,
    len_rejected,
    beta: float = 0.1,
    length_normalize: bool = True,
) -> torch.Tensor:
    """The paper's loss (Eq. 8/9), batch mean: chosen = teacher output, rejected = student's."""
    return dpkd_sequence_terms(
        student_logp_chosen,
        teacher_logp_chosen,
        student_logp_rejected,
        teacher_logp_rejected,
        len_chosen,
        len_rejected,
        beta=beta,
        length_normalize=length_normalize,
    ).mean()
