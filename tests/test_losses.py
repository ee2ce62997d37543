"""Property tests of every divergence in dpkd_bench.losses (no model needed)."""

from __future__ import annotations

import pytest
import torch

from dpkd_bench import losses as L

B, T, V = 3, 5, 11


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, T, V, generator=g) * 2, torch.randn(B, T, V, generator=g) * 2


@pytest.fixture
def mask():
    m = torch.ones(B, T)
    m[0, :2] = 0
    m[2, 4] = 0
    return m


def reference_kl(a_logits, b_logits):
    a, b = a_logits.softmax(-1), b_logits.softmax(-1)
    return (a * (a.log() - b.log())).sum(-1)


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


DIVERGENCES = {
    "forward_kl": lambda s, t, m: L.forward_kl(s, t, m),
    "reverse_kl": lambda s, t, m: L.reverse_kl(s, t, m),
    "skew_forward_kl": lambda s, t, m: L.skew_forward_kl(s, t, m, alpha=0.1),
    "skew_reverse_kl": lambda s, t, m: L.skew_reverse_kl(s, t, m, alpha=0.1),
    "generalized_jsd": lambda s, t, m: L.generalized_jsd(s, t, m, beta=0.5),
    "total_variation": lambda s, t, m: L.total_variation(s, t, m),
}


@pytest.mark.parametrize("name", DIVERGENCES)
def test_zero_when_student_equals_teacher(name, logits, mask):
    student, _ = logits
    assert DIVERGENCES[name](student, student.clone(), mask).abs() < 1e-6


@pytest.mark.parametrize("name", DIVERGENCES)
def test_positive_when_different(name, logits, mask):
    assert DIVERGENCES[name](*logits, mask) > 1e-3


@pytest.mark.parametrize("name", DIVERGENCES)
def test_empty_mask_raises_never_nan(name, logits):
    with pytest.raises(ValueError, match="mask selects no token"):
        DIVERGENCES[name](*logits, torch.zeros(B, T))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_masked_positions_do_not_count(name, logits, mask):
    student, teacher = logits
    changed = student.clone()
    changed[0, :2] += 100 * torch.randn(2, V)
    assert torch.allclose(
        DIVERGENCES[name](student, teacher, mask), DIVERGENCES[name](changed, teacher, mask)
    )


@pytest.mark.parametrize("name", DIVERGENCES)
def test_gradients_reach_the_student_only(name, logits, mask):
    student, teacher = (x.clone().requires_grad_(True) for x in logits)
    DIVERGENCES[name](student, teacher, mask).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


@pytest.mark.parametrize("name", DIVERGENCES)
def test_low_precision_inputs_give_float32(name, logits, mask):
    student, teacher = (x.to(torch.bfloat16) for x in logits)
    assert DIVERGENCES[name](student, teacher, mask).dtype == torch.float32


def test_forward_and_reverse_kl_match_hand_computation(logits, mask):
    student, teacher = logits
    expected_fwd = masked_mean(reference_kl(teacher, student), mask)
    expected_rev = masked_mean(reference_kl(student, teacher), mask)
    torch.testing.assert_close(L.forward_kl(student, teacher, mask), expected_fwd)
    torch.testing.assert_close(L.reverse_kl(student, teacher, mask), expected_rev)


def test_temperature_divides_logits(logits, mask):
    student, teacher = logits
    expected = masked_mean(reference_kl(teacher / 2, student / 2), mask)
    torch.testing.assert_close(L.forward_kl(student, teacher, mask, temperature=2.0), expected)
    with pytest.raises(ValueError):
        L.forward_kl(student, teacher, mask, temperature=0)


def test_gkd_beta_reductions(logits, mask):
    student, teacher = logits
    torch.testing.assert_close(
        L.generalized_jsd(student, teacher, mask, beta=0.0), L.forward_kl(student, teacher, mask)
    )
    torch.testing.assert_close(
        L.generalized_jsd(student, teacher, mask, beta=1.0), L.reverse_kl(student, teacher, mask)
    )


def test_gkd_mid_beta_matches_hand_computation(logits, mask):
    student, teacher = logits
    p, q = teacher.softmax(-1), student.softmax(-1)
    m = 0.3 * p + 0.7 * q
    expected = 0.3 * (p * (p / m).log()).sum(-1) + 0.7 * (q * (q / m).log()).sum(-1)
    torch.testing.assert_close(
        L.generalized_jsd(student, teacher, mask, beta=0.3), masked_mean(expected, mask)
    )


def test_skew_alpha_zero_is_plain_kl_and_matches_formula(logits, mask):
    student, teacher = logits
    torch.testing.assert_close(
        L.skew_forward_kl(student, teacher, mask, alpha=0.0), L.forward_kl(student, teacher, mask)
    )
    torch.testing.assert_close(
        L.skew_reverse_kl(student, teacher, mask, alpha=0.0), L.reverse_kl(student, teacher, mask)
    )
    p, q = teacher.softmax(-1), student.softmax(-1)
    skl = (p * (p / (0.1 * p + 0.9 * q)).log()).sum(-1)
    srkl = (q * (q / (0.1 * q + 0.9 * p)).log()).sum(-1)
    torch.testing.assert_close(L.skew_forward_kl(student, teacher, mask), masked_mean(skl, mask))
    torch.testing.assert_close(L.skew_reverse_kl(student, teacher, mask), masked_mean(srkl, mask))


def test_total_variation_matches_hand_computation(logits, mask):
    student, teacher = logits
    tv = 0.5 * (teacher.softmax(-1) - student.softmax(-1)).abs().sum(-1)
    torch.testing.assert_close(L.total_variation(student, teacher, mask), masked_mean(tv, mask))


def test_vocab_mismatch_names_both_sizes(logits, mask):
    student, _ = logits
    with pytest.raises(ValueError, match=r"student vocab 11, teacher vocab 12"):
        L.forward_kl(student, torch.randn(B, T, 12), mask)


def test_kl_handles_teacher_zeros_without_nan(mask):
    student = torch.randn(B, T, V)
    teacher = torch.full((B, T, V), -float("inf"))
    teacher[..., 0] = 0.0
    assert torch.isfinite(L.forward_kl(student, teacher, mask))
    assert torch.isfinite(L.total_variation(student, teacher, mask))
    assert torch.isfinite(L.skew_reverse_kl(student, teacher, mask, alpha=0.1))


# ---------------------------------------------------------------------------- DPKD, token level


def one_position(student_row, teacher_row):
    return torch.tensor([[student_row]], dtype=torch.float32), torch.tensor(
        [[teacher_row]], dtype=torch.float32
    )


def test_dpkd_token_zero_gradient_where_argmaxes_agree(logits):
    student, teacher = (x.clone() for x in logits)
    student[0, 0] = teacher[0, 0] * 1.5  # same argmax at one position
    student[1, 1] = -teacher[1, 1]  # different argmax at another
    student.requires_grad_(True)
    L.dpkd_token_loss(student, teacher, torch.ones(B, T)).backward()
    agree = student.detach().argmax(-1) == teacher.argmax(-1)
    assert agree.any() and (~agree).any()
    grad_norm = student.grad.abs().sum(-1)
    assert torch.all(grad_norm[agree] == 0)
    assert torch.all(grad_norm[~agree] > 0)


def test_dpkd_token_formula_and_options():
    s_logits, t_logits = one_position([2.0, 0.5, 0.0], [0.0, 3.0, 1.0])
    log_q, log_p = s_logits.log_softmax(-1)[0, 0], t_logits.log_softmax(-1)[0, 0]
    chosen, rejected, beta = 1, 0, 0.1
    h = (log_q[chosen] - log_q[rejected]) - (log_p[chosen] - log_p[rejected])
    logsig = torch.nn.functional.logsigmoid
    mask = torch.ones(1, 1)
    cases = {
        (): -logsig(beta * h),
        (("label_smoothing", 0.2),): -0.8 * logsig(beta * h) - 0.2 * logsig(-beta * h),
        (("reference_free", True),): -logsig(beta * (log_q[chosen] - log_q[rejected])),
        (("ipo", True),): (h - 1 / (2 * beta)) ** 2,
        (("dpop_lambda", 2.0),): -logsig(
            beta * (h - 2.0 * torch.relu(log_p[chosen] - log_q[chosen]))
        ),
        (("simpo_gamma", 0.5),): -logsig(beta * (log_q[chosen] - log_q[rejected]) - 0.5),
    }
    for options, expected in cases.items():
        value = L.dpkd_token_loss(s_logits, t_logits, mask, beta=beta, **dict(options))
        torch.testing.assert_close(value, expected, msg=str(options))


def test_dpkd_token_lowers_when_student_prefers_teacher_token():
    t_logits = torch.tensor([[[0.0, 3.0, 1.0]]])
    worse = torch.tensor([[[2.0, 0.5, 0.0]]])
    better = torch.tensor([[[2.0, 1.5, 0.0]]])
    mask = torch.ones(1, 1)
    assert L.dpkd_token_loss(better, t_logits, mask) < L.dpkd_token_loss(worse, t_logits, mask)


# ---------------------------------------------------------------------------- sequence level


def test_sequence_logprob_matches_manual_gather(logits, mask):
    student, _ = logits
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    expected = (student.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1) * mask).sum(-1)
    torch.testing.assert_close(L.sequence_logprob(student, labels, mask), expected)


def seq_args(chosen=-4.0):
    return (
        torch.tensor([chosen, -6.0]),
        torch.tensor([-3.0, -5.0]),
        torch.tensor([-8.0, -7.0]),
        torch.tensor([-9.0, -4.0]),
        torch.tensor([4.0, 2.0]),
        torch.tensor([8.0, 5.0]),
    )


def test_dpkd_sequence_loss_formula():
    sc, tc, sr, tr, lc, lr = seq_args()
    margin = 0.1 * (sc - tc) / lc - 0.1 * (sr - tr) / lr
    expected = -torch.nn.functional.logsigmoid(margin).mean()
    torch.testing.assert_close(L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr, beta=0.1), expected)
    raw = 0.1 * (sc - tc) - 0.1 * (sr - tr)
    expected_raw = -torch.nn.functional.logsigmoid(raw).mean()
    torch.testing.assert_close(
        L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr, length_normalize=False), expected_raw
    )


def test_dpkd_sequence_loss_decreases_when_student_raises_teacher_output():
    low = L.dpkd_sequence_loss(*seq_args(chosen=-4.0))
    high = L.dpkd_sequence_loss(*seq_args(chosen=-1.0))
    assert high < low


def test_dpkd_sequence_gradient_pushes_chosen_up_and_rejected_down():
    sc, tc, sr, tr, lc, lr = seq_args()
    sc.requires_grad_(True)
    sr.requires_grad_(True)
    L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr).backward()
    assert torch.all(sc.grad < 0) and torch.all(sr.grad > 0)


def test_masked_mean_semantics():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert L.masked_mean(values, m) == 2.0
    assert L.masked_sum(values, m) == 6.0
