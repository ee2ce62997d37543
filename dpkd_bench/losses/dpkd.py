"""DPKD's losses: the official code's token-level preference loss and the paper's sequence-level
one (Li et al. 2024, arXiv 2406.19774)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpkd_bench.losses.core import (
    IGNORE_INDEX,
    _check_in,
    _check_positive,
    _check_same_shape,
    _log_probs,
    _require,
    _where_mask,
    masked_mean,
)
from dpkd_bench.losses.token import token_logprobs


def _check_dpkd_options(
    beta: float, label_smoothing: float, ipo: bool, dpop_lambda: float, simpo_gamma: float | None
) -> None:
    _check_positive("beta", beta)
    _check_in("label_smoothing", label_smoothing, 0.0, 0.5, high_closed=False)
    _require(dpop_lambda >= 0, f"dpop_lambda must be >= 0, got {dpop_lambda}")
    chosen = [ipo, dpop_lambda > 0, simpo_gamma is not None]
    _require(
        sum(chosen) <= 1,
        "ipo, dpop_lambda > 0 and simpo_gamma are alternative losses; set at most one",
    )


def _sigmoid_preference_loss(logit: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1 - eps) log sigma(x) - eps log sigma(-x) (conservative DPO when eps > 0). Elementwise"""
    return -(1 - label_smoothing) * F.logsigmoid(logit) - label_smoothing * F.logsigmoid(-logit)


def token_dpkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
    ipo: bool = False,
    dpop_lambda: float = 0.0,
    simpo_gamma: float | None = None,
) -> torch.Tensor:
    """DPKD, token level as in the official code (microsoft/LMOps ``dpkd/main.py``).

    At each teacher-forced position, chosen y_t = argmax p and rejected y_s = argmax q (same
    prefix; argmax carries no gradient):

        h = [log q(y_t) - log q(y_s)] - [log p(y_t) - log p(y_s)]

    (teacher bracket dropped when ``reference_free``), and
    loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h), eps = ``label_smoothing``.
    Alternatives (at most one): ``ipo``: (h - 1/(2 beta))^2 (eps unused, as in the official
    code); ``dpop_lambda`` > 0 (DPO-Positive, Pal et al. 2024): the sigmoid's argument is
    beta (h - lambda max(0, log p(y_t) - log q(y_t))); ``simpo_gamma`` (SimPO, Meng et al.
    2024, reference-free, length 1 at token level): the argument is
    beta (log q(y_t) - log q(y_s)) - gamma.

    Where y_t == y_s both log-ratios are exactly 0, so the loss is a constant there and its
    gradient exactly zero -- except with ``dpop_lambda``, whose penalty on log q(y_t) acts at
    every position.

    Deliberate differences from the official code: float32 instead of bfloat16 log-softmax;
    student log-probs at infinite logits are not replaced by 0 before the argmax; DPOP's
    penalty sits inside the sigmoid as in the paper (official: outside, -log sigma(beta h) +
    lambda max(0, ...), lambda = 50, and without label smoothing; here eps applies to the DPOP
    and SimPO arguments too); SimPO follows the paper (official ``--simpo`` divides the loss by
    a length of the argmax sequence / 256).

    [B, T, V], [B, T, V] -> [B, T]
    """
    _check_dpkd_options(beta, label_smoothing, ipo, dpop_lambda, simpo_gamma)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    chosen_rejected = torch.stack([log_p.argmax(-1), log_q.argmax(-1)], dim=-1)  # [B, T, 2]
    q_cr = log_q.gather(-1, chosen_rejected)  # [B, T, 2]
    p_cr = log_p.gather(-1, chosen_rejected)  # [B, T, 2]
    student_ratio = q_cr[..., 0] - q_cr[..., 1]  # [B, T]
    h = student_ratio if reference_free else student_ratio - (p_cr[..., 0] - p_cr[..., 1])
    if ipo:
        return (h - 1 / (2 * beta)) ** 2
    if simpo_gamma is not None:
        logit = beta * student_ratio - simpo_gamma
    elif dpop_lambda > 0:
        logit = beta * (h - dpop_lambda * F.relu(p_cr[..., 0] - q_cr[..., 0]))
    else:
        logit = beta * h
    return _sigmoid_preference_loss(logit, label_smoothing)


def dpkd_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
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
        beta=beta,
        label_smoothing=label_smoothing,
        reference_free=reference_free,
        ipo=ipo,
        dpop_lambda=dpop_lambda,
        simpo_gamma=simpo_gamma,
    )
    return masked_mean(values, mask)


# ---------------------------------------------------------------------------- sequence level


def sequence_logprob(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Sum of log softmax(logits)[labels] over masked positions, per sequence.

    ``labels`` are aligned with ``logits`` (already shifted); unmasked labels may be anything
    valid or -100. [B, T, V], [B, T], [B, T] -> [B]
    """
    _require(
        labels.shape == mask.shape,
        f"labels {tuple(labels.shape)} and mask {tuple(mask.shape)} must have the same shape",
    )
    safe_labels = labels.masked_fill(~mask.bool(), IGNORE_INDEX)
    return _where_mask(token_logprobs(logits, safe_labels), mask).sum(-1)


def _per_token(values: torch.Tensor, lengths, enabled: bool) -> torch.Tensor:
    """``values / max(lengths, 1)`` when ``enabled``, else ``values``. [B], [B] -> [B]"""
    if not enabled:
        return values
    lengths = torch.as_tensor(lengths, dtype=torch.float32, device=values.device)
    return values / lengths.clamp(min=1)


def dpkd_implicit_reward_margin(
    student_logp_chosen: torch.Tensor,
    teacher_logp_chosen: torch.Tensor,
    student_logp_rejected: torch.Tensor,
    teacher_logp_rejected: torch.Tensor,
    len_chosen,
    len_rejected,
    beta: float = 0.1,
    length_normalize: bool = True,
    reference_free: bool = False,
) -> torch.Tensor:
    """DPKD implicit-reward margin r(y_t) - r(y_s) (the argument of the paper's sigmoid).

    r(y) = beta / |y| * (log q(y) - log p(y)); the teacher term is dropped when
    ``reference_free``, the 1/|y| factor when not ``length_normalize``; lengths are clamped to
    >= 1. Positive margin = the student prefers the teacher's output ("reward accuracy").
    Teacher log-probs are treated as constants. All inputs [B] -> [B]
    """
    _check_positive("beta", beta)
    _check_same_shape(
        student_logp_chosen=student_logp_chosen,
        teacher_logp_chosen=teacher_logp_chosen,
        student_logp_rejected=student_logp_rejected,
        teacher_logp_rejected=teacher_logp_rejected,
    )
    chosen = student_logp_chosen.float()
    rejected = student_logp_rejected.float()
    if not reference_free:
        chosen = chosen - teacher_logp_chosen.detach().float()
        rejected = rejected - teacher_logp_rejected.detach().float()
    chosen = _per_token(chosen, len_chosen, length_normalize)
    rejected = _per_token(rejected, len_rejected, length_normalize)
    return beta * (chosen - rejected)


def dpkd_sequence_loss(
    student_logp_chosen: torch.Tensor,
    teacher_logp_chosen: torch.Tensor,
    student_logp_rejected: torch.Tensor,
    teacher_logp_rejected: torch.Tensor,
    len_chosen,
    len_rejected,
    beta: float = 0.1,
    length_normalize: bool = True,
) -> torch.Tensor:
    """The DPKD paper's sequence loss (Eq. 8/9), chosen = a teacher output y_t, rejected = a
    student output y_s for the same prompt: the batch mean of
    -log sigmoid(beta/|y_t| (log q(y_t) - log p(y_t)) - beta/|y_s| (log q(y_s) - log p(y_s)))
    (the 1/|y| factors dropped when not ``length_normalize``). All inputs [B] -> scalar.
    The ``dpkd`` method sums the same per-example term (:func:`dpkd_implicit_reward_margin`)."""
    margin = dpkd_implicit_reward_margin(
        student_logp_chosen,
        teacher_logp_chosen,
        student_logp_rejected,
        teacher_logp_rejected,
        len_chosen,
        len_rejected,
        beta=beta,
        length_normalize=length_normalize,
    )
    return -F.logsigmoid(margin).mean()
