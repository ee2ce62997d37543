"""Per-token losses of the 2024-2025 methods: ABKD, AKL, TAID, DistiLLM-2 and on-policy
distillation. Each follows its official code (cited per function); the reference tests in
``tests/test_losses_recent.py`` check them against those formulas written out naively."""

from __future__ import annotations

import torch

from dpkd_bench.losses.core import (
    _check_in,
    _check_same_shape,
    _kl,
    _log_mixture,
    _log_probs,
    _require,
)


def token_ab_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """ABKD's alpha-beta divergence (arXiv 2505.04560; ``ab_div`` in ghwang-s/abkd,
    distillation_llm/distillm/losses.py). [B, T, V], [B, T, V] -> [B, T]

    With p the teacher's and q the student's softmax, summed over the vocabulary:

    * alpha, beta, alpha + beta all nonzero: -1/(alpha beta) * (p^a q^b - a/(a+b) p^(a+b)
      - b/(a+b) q^(a+b));
    * alpha = beta = 0: 1/2 (log q - log p)^2;
    * alpha = 0: 1/beta (q^b log(q^b / p^b) - q^b + p^b) (reverse KL at beta = 1);
    * beta = 0: 1/alpha (p^a log(p^a / q^a) - p^a + q^a) (forward KL at alpha = 1);
    * alpha + beta = 0: 1/alpha (log(q^a / p^a) + p^a / q^a - 1).

    The special cases scale by 1/alpha or 1/beta as the official code does (the limits of the
    general form would scale by their squares; the two agree at 1). The powers are taken in log
    space; a vocabulary entry with a zero probability contributes 0 to the log terms.
    """
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    a, b = float(alpha), float(beta)
    if a == 0 and b == 0:
        diff = (log_q - log_p).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        return 0.5 * diff.pow(2).sum(-1)
    if a == 0:
        rest = ((b * log_p).exp() - (b * log_q).exp()).sum(-1)
        return (_kl(b * log_q, b * log_p) + rest) / b
    if b == 0:
        rest = ((a * log_q).exp() - (a * log_p).exp()).sum(-1)
        return (_kl(a * log_p, a * log_q) + rest) / a
    if a + b == 0:
        ratio = a * (log_q - log_p)
        return (ratio + (-ratio).exp() - 1).sum(-1) / a
    cross = (a * log_p + b * log_q).exp()
    own_p, own_q = ((a + b) * log_p).exp(), ((a + b) * log_q).exp()
    return -(cross - a / (a + b) * own_p - b / (a + b) * own_q).sum(-1) / (a * b)


def token_akl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mu: float = 0.5
) -> torch.Tensor:
    """AKL, adaptive KL (Wu et al., arXiv 2404.02657; AKL.py in wutaiqiang/LLM_KD_AKL):
    w_head KL(p || q) + w_tail KL(q || p). [B, T, V], [B, T, V] -> [B, T]

    The vocabulary is sorted by the teacher's probability; the head is the top-1 token and every
    token whose running total of p (itself included) is at most ``mu``; the tail is the rest.
    g_head and g_tail are the sums of |p - q| over each part, w_head = g_head / (g_head +
    g_tail) and w_tail = 1 - w_head, per position and without gradient. Where p == q exactly
    (both gaps 0, where the official code divides 0 by 0) the weights are 1/2 each; both KLs are
    0 there.
    """
    _check_in("mu", mu, 0.0, 1.0, high_closed=True)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    with torch.no_grad():
        p, q = log_p.exp(), log_q.exp()
        sorted_p, order = p.sort(dim=-1, descending=True)
        gap = (sorted_p - q.gather(-1, order)).abs()
        tail = sorted_p.cumsum(-1) > mu
        tail[..., 0] = False  # the teacher's top-1 token is always in the head
        g_tail = (gap * tail).sum(-1)
        total = gap.sum(-1)
        w_tail = torch.where(total > 0, g_tail / total.clamp(min=1e-30), 0.5)
    return (1 - w_tail) * _kl(log_p, log_q) + w_tail * _kl(log_q, log_p)


def _taid_target(student_logits, teacher_logits, t: float) -> torch.Tensor:
    """log p_t = log softmax((1 - t) z_s.detach() + t z_T), float32. [B, T, V] -> [B, T, V]"""
    _check_in("t", t, 0.0, 1.0, high_closed=True)
    mixed = (1 - t) * student_logits.detach().float() + t * teacher_logits.detach().float()
    return torch.log_softmax(mixed, dim=-1)


def token_taid(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float
) -> torch.Tensor:
    """TAID (Shing et al., arXiv 2501.16937; src/distil_losses/taid.py in SakanaAI/TAID):
    KL(p_t || q) with the target p_t = softmax((1 - t) z_s + t z_T) interpolated in logit space
    from the student's detached logits z_s toward the teacher's z_T. t = 1 is forward KL; t = 0
    is 0 (the student against itself). [B, T, V], [B, T, V] -> [B, T]

    The official code computes the cross-entropy H(p_t, q) = KL(p_t || q) + H(p_t), whose
    gradient is the same (p_t is a constant); :func:`token_taid_entropy` gives H(p_t).
    """
    log_q, _ = _log_probs(student_logits, teacher_logits)
    return _kl(_taid_target(student_logits, teacher_logits, t), log_q)


def token_taid_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float
) -> torch.Tensor:
    """TAID's loss as the official code's value: H(p_t, q) = -sum_v p_t log q, computed as
    :func:`token_taid` plus :func:`token_taid_entropy` (the KL's gradient) with the target's
    log-softmax taken once. [B, T, V], [B, T, V] -> [B, T]"""
    log_q, _ = _log_probs(student_logits, teacher_logits)
    log_target = _taid_target(student_logits, teacher_logits, t)
    return _kl(log_target, log_q) + _entropy(log_target)


def token_taid_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float
) -> torch.Tensor:
    """H(p_t) of TAID's target (no gradient). [B, T, V], [B, T, V] -> [B, T]"""
    return _entropy(_taid_target(student_logits, teacher_logits, t))


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """-sum_v p log p from log-probabilities (0 log 0 = 0). [B, T, V] -> [B, T]"""
    return -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)


def token_distillm2_skew_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.1
) -> torch.Tensor:
    """DistiLLM-2's skew reverse KL on student responses (arXiv 2503.07067;
    ``get_batch_logps`` in jongwooko/distillm-2, src/distillm_trainer.py):
    KL(q || (1 - alpha) p + alpha sg(q)): unlike DistiLLM's SRKL, the student's share of the
    mixture is detached. alpha in [0, 1); 0 is KL(q || p). [B, T, V], [B, T, V] -> [B, T]
    """
    _check_in("alpha", alpha, 0.0, 1.0, high_closed=False)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    mixture = log_p if alpha == 0 else _log_mixture(log_q.detach(), log_p, alpha)
    return _kl(log_q, mixture)


def token_opd(
    student_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    kl_coef: float = 1.0,
) -> torch.Tensor:
    """On-policy distillation's per-token policy-gradient loss (tinker-cookbook,
    tinker_cookbook/distillation/train_on_policy.py, with Tinker's ``importance_sampling`` loss):
    -exp(log q(y_t) - log q_old(y_t)) * A_t, with the advantage A_t = -kl_coef * (log q_old(y_t)
    - log p(y_t)), the per-token reverse KL of the sampled token, a constant.

    ``student_logprobs`` log q(y_t) of the sampled tokens under the student being trained (with
    gradient), ``sampler_logprobs`` under the student that sampled them, ``teacher_logprobs``
    under the teacher; all [B, T]. Its gradient at q = q_old is that of kl_coef * the sampled
    reverse KL, -A_t * grad log q(y_t). -> [B, T]
    """
    _check_same_shape(student=student_logprobs, sampler=sampler_logprobs, teacher=teacher_logprobs)
    _require(kl_coef > 0, f"kl_coef must be > 0, got {kl_coef}")
    old = sampler_logprobs.detach().float()
    advantage = -kl_coef * (old - teacher_logprobs.detach().float())
    return -(student_logprobs.float() - old).exp() * advantage
