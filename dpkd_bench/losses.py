"""Divergences and preference losses for distillation, as pure tensor functions.

Conventions
-----------
* ``student_logits`` and ``teacher_logits`` are ``[B, T, V]`` and must have the same shape
  (one shared tokenizer). p is the teacher's softmax, q the student's.
* Everything is computed in float32, whatever the input dtype (fp16 and bf16 logits are cast).
* The teacher is a constant: its logits are detached, so gradients reach the student only and a
  teacher tensor with ``requires_grad`` gets no ``.grad``.
* Zero probabilities (``-inf`` logits, or softmax underflow) follow 0 * log 0 = 0 and give
  neither NaN values nor NaN gradients; a divergence that is truly infinite (KL(a || b) where
  b = 0 < a) stays ``inf``.

Two layers
----------
* ``token_*`` functions return per-position values ``[B, T]`` with no masking. Training methods
  sum them with :func:`masked_sum` so the loop can normalise by the token count of a whole
  accumulated batch.
* The contract functions (``forward_kl``, ``reverse_kl``, ...) take a ``mask`` ``[B, T]``
  (1 = a response token that counts) and return the mean over masked positions; an all-zero
  mask raises ``ValueError``, never NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "dpkd_implicit_reward_margin",
    "dpkd_sequence_loss",
    "dpkd_token_loss",
    "forward_kl",
    "generalized_jsd",
    "masked_mean",
    "masked_sum",
    "reverse_kl",
    "sequence_logprob",
    "skew_forward_kl",
    "skew_reverse_kl",
    "token_cross_entropy",
    "token_dpkd",
    "token_forward_kl",
    "token_generalized_jsd",
    "token_logprobs",
    "token_reverse_kl",
    "token_skew_forward_kl",
    "token_skew_reverse_kl",
    "token_total_variation",
    "total_variation",
]


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
