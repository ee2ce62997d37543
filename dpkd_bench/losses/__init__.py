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

Modules: ``core`` (checks, shared maths, reductions), ``token`` (the teacher-forced divergences
and their means), ``dpkd`` (DPKD's token and sequence losses), ``recent`` (the per-token losses
of ABKD, AKL, TAID, DistiLLM-2 and on-policy distillation).
"""

from __future__ import annotations

from dpkd_bench.losses.core import IGNORE_INDEX, masked_mean, masked_sum
from dpkd_bench.losses.dpkd import (
    dpkd_implicit_reward_margin,
    dpkd_sequence_loss,
    dpkd_token_loss,
    sequence_logprob,
    token_dpkd,
)
from dpkd_bench.losses.recent import (
    token_ab_divergence,
    token_akl,
    token_distillm2_skew_reverse_kl,
    token_opd,
    token_taid,
    token_taid_cross_entropy,
    token_taid_entropy,
)
from dpkd_bench.losses.token import (
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    token_cross_entropy,
    token_forward_kl,
    token_generalized_jsd,
    token_logprobs,
    token_reverse_kl,
    token_skew_forward_kl,
    token_skew_reverse_kl,
    token_total_variation,
    total_variation,
)

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
    "token_ab_divergence",
    "token_akl",
    "token_cross_entropy",
    "token_distillm2_skew_reverse_kl",
    "token_dpkd",
    "token_forward_kl",
    "token_generalized_jsd",
    "token_logprobs",
    "token_opd",
    "token_reverse_kl",
    "token_skew_forward_kl",
    "token_skew_reverse_kl",
    "token_taid",
    "token_taid_cross_entropy",
    "token_taid_entropy",
    "token_total_variation",
    "total_variation",
]
