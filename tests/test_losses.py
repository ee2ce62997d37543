"""Property tests of every loss in dpkd_bench.losses (no model needed, CPU, well under a second)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dpkd_bench import losses as L

B, T, V = 3, 5, 11


def random_logits(seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * scale, torch.randn(B, T, V, generator=g) * scale


@pytest.fixture
def logits():
    return random_logits()


@pytest.fixture
def mask():
    m = torch.ones(B, T)
    m[0, :2] = 0
    m[2, 4] = 0
    return m


# ---------------------------------------------------------------------------- references


def reference_kl(a_logits, b_logits):
    """Explicit sum_v a (log a - log b), a = softmax(a_logits). [B, T]"""
    a, b = a_logits.softmax(-1), b_logits.softmax(-1)
    return (a * (a.log() - b.log())).sum(-1)


def reference_mixture_kl(a_logits, b_logits, weight_a):
    """KL(a || w a + (1 - w) b) in probability space. [B, T]"""
    a, b = a_logits.softmax(-1), b_logits.softmax(-1)
    return (a * (a / (weight_a * a + (1 - weight_a) * b)).log()).sum(-1)


def reference_mean(values, mask):
    return (values * mask).sum() / mask.sum()


# name -> (contract function with its defaults, per-token function, hand-computed reference)
DIVERGENCES = {
    "forward_kl": (L.forward_kl, L.token_forward_kl, lambda s, t: reference_kl(t, s)),
    "reverse_kl": (L.reverse_kl, L.token_reverse_kl, lambda s, t: reference_kl(s, t)),
    "skew_forward_kl": (
        L.skew_forward_kl,
        L.token_skew_forward_kl,
        lambda s, t: reference_mixture_kl(t, s, 0.1),
    ),
    "skew_reverse_kl": (
        L.skew_reverse_kl,
        L.token_skew_reverse_kl,
        lambda s, t: reference_mixture_kl(s, t, 0.1),
    ),
    "generalized_jsd": (
        L.generalized_jsd,
        L.token_generalized_jsd,
        lambda s, t: 0.5 * reference_mixture_kl(t, s, 0.5) + 0.5 * reference_mixture_kl(s, t, 0.5),
    ),
    "total_variation": (
        L.total_variation,
        L.token_total_variation,
        lambda s, t: 0.5 * (t.softmax(-1) - s.softmax(-1)).abs().sum(-1),
    ),
}
CONTRACT = {name: entry[0] for name, entry in DIVERGENCES.items()} | {
    "dpkd_token_loss": L.dpkd_token_loss
}


# ---------------------------------------------------------------------------- divergences


@pytest.mark.parametrize("name", DIVERGENCES)
def test_zero_when_student_equals_teacher(name, logits, mask):
    contract, token_fn, _ = DIVERGENCES[name]
    student, _ = logits
    assert contract(student, student.clone(), mask).abs() < 1e-6
    assert token_fn(student, student.clone()).abs().max() < 1e-6


@pytest.mark.parametrize("name", DIVERGENCES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_negative_and_positive_when_different(name, seed):
    _, token_fn, _ = DIVERGENCES[name]
    values = token_fn(*random_logits(seed))
    assert values.shape == (B, T) and values.dtype == torch.float32
    assert values.min() > 0


@pytest.mark.parametrize("name", DIVERGENCES)
def test_matches_hand_computation(name, logits, mask):
    contract, token_fn, reference = DIVERGENCES[name]
    student, teacher = logits
    expected = reference(student, teacher)
    torch.testing.assert_close(token_fn(student, teacher), expected)
    torch.testing.assert_close(contract(student, teacher, mask), reference_mean(expected, mask))


@pytest.mark.parametrize("name", CONTRACT)
def test_mean_is_sum_over_masked_tokens_divided_by_their_count(name, logits):
    student, teacher = logits
    sparse = torch.zeros(B, T, dtype=torch.bool)
    sparse[0, 3] = sparse[2, 0] = sparse[2, 1] = True
    per_token = CONTRACT[name](student, teacher, torch.ones(B, T))  # mean over all 15
    value = CONTRACT[name](student, teacher, sparse)
    token_fn = L.token_dpkd if name == "dpkd_token_loss" else DIVERGENCES[name][1]
    values = token_fn(student, teacher)
    torch.testing.assert_close(value, values[sparse].sum() / 3)
    torch.testing.assert_close(per_token, values.mean())


@pytest.mark.parametrize("name", CONTRACT)
def test_masked_positions_do_not_count_even_if_garbage(name, logits, mask):
    student, teacher = logits
    changed_s, changed_t = student.clone(), teacher.clone()
    changed_s[0, :2] = 100 * torch.randn(2, V)
    changed_t[0, 0] = float("nan")  # a NaN at a padding position must not leak
    changed_t[2, 4] = -float("inf")  # nor a row with no support
    value = CONTRACT[name](student, teacher, mask)
    torch.testing.assert_close(CONTRACT[name](changed_s, changed_t, mask), value)


@pytest.mark.parametrize("name", CONTRACT)
def test_empty_mask_raises_never_nan(name, logits):
    for empty in (torch.zeros(B, T), torch.zeros(B, T, dtype=torch.bool)):
        with pytest.raises(ValueError, match="mask selects no token"):
            CONTRACT[name](*logits, empty)


@pytest.mark.parametrize("name", CONTRACT)
def test_gradients_reach_the_student_only(name, logits, mask):
    student, teacher = (x.clone().requires_grad_(True) for x in logits)
    CONTRACT[name](student, teacher, mask).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert torch.all(student.grad[mask == 0] == 0)
    assert teacher.grad is None  # the teacher is a constant (detached inside)


@pytest.mark.parametrize("name", CONTRACT)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_float32(name, dtype, logits, mask):
    student, teacher = (x.to(dtype) for x in logits)
    value = CONTRACT[name](student, teacher, mask)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    expected = CONTRACT[name](student.float(), teacher.float(), mask)
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("name", CONTRACT)
def test_vocab_mismatch_names_both_sizes(name, logits, mask):
    student, _ = logits
    with pytest.raises(ValueError, match=r"student vocab 11, teacher vocab 12"):
        CONTRACT[name](student, torch.randn(B, T, 12), mask)
    with pytest.raises(ValueError, match=r"differ in shape"):
        CONTRACT[name](student, torch.randn(B, T + 1, V), mask)


def test_mask_shape_mismatch_raises(logits):
    with pytest.raises(ValueError, match="mask shape"):
        L.forward_kl(*logits, torch.ones(B, T + 1))


def test_temperature_divides_both_logits_without_t_squared(logits, mask):
    student, teacher = logits
    fwd = L.forward_kl(student, teacher, mask, temperature=2.0)
    rev = L.reverse_kl(student, teacher, mask, temperature=2.0)
    torch.testing.assert_close(fwd, reference_mean(reference_kl(teacher / 2, student / 2), mask))
    torch.testing.assert_close(rev, reference_mean(reference_kl(student / 2, teacher / 2), mask))
    assert L.forward_kl(student, teacher, mask, temperature=4.0) < fwd  # softer, closer


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_raises(bad, logits, mask):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        L.forward_kl(*logits, mask, temperature=bad)


def test_gkd_beta_reductions_and_mid_beta(logits, mask):
    student, teacher = logits
    gjsd = L.token_generalized_jsd
    torch.testing.assert_close(gjsd(student, teacher, 0.0), L.token_forward_kl(student, teacher))
    torch.testing.assert_close(gjsd(student, teacher, 1.0), L.token_reverse_kl(student, teacher))
    # TRL convention: m = beta p + (1 - beta) q, beta weights KL(p || m)
    expected = 0.3 * reference_mixture_kl(teacher, student, 0.3) + 0.7 * reference_mixture_kl(
        student, teacher, 0.7
    )
    torch.testing.assert_close(gjsd(student, teacher, 0.3), expected)


def test_skew_alpha_zero_is_plain_kl(logits):
    student, teacher = logits
    torch.testing.assert_close(
        L.token_skew_forward_kl(student, teacher, 0.0), L.token_forward_kl(student, teacher)
    )
    torch.testing.assert_close(
        L.token_skew_reverse_kl(student, teacher, 0.0), L.token_reverse_kl(student, teacher)
    )
    torch.testing.assert_close(
        L.token_skew_forward_kl(student, teacher, 0.4), reference_mixture_kl(teacher, student, 0.4)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, t: L.token_skew_forward_kl(s, t, alpha=1.0), "alpha must be in"),
        (lambda s, t: L.token_skew_reverse_kl(s, t, alpha=-0.1), "alpha must be in"),
        (lambda s, t: L.token_generalized_jsd(s, t, beta=1.5), "beta must be in"),
        (lambda s, t: L.token_dpkd(s, t, beta=0.0), "beta must be > 0"),
        (lambda s, t: L.token_dpkd(s, t, label_smoothing=0.5), "label_smoothing must be in"),
        (lambda s, t: L.token_dpkd(s, t, dpop_lambda=-1.0), "dpop_lambda must be >= 0"),
        (lambda s, t: L.token_dpkd(s, t, ipo=True, simpo_gamma=0.5), "at most one"),
    ],
)
def test_out_of_range_arguments_raise(call, message, logits):
    with pytest.raises(ValueError, match=message):
        call(*logits)


def test_zero_probabilities_give_no_nan_values_or_gradients(logits):
    student, teacher = (x.clone() for x in logits)
    teacher[..., :4] = -float("inf")  # p = 0 on four tokens
    student[..., :2] = -float("inf")  # q = 0 on two of them: both zero there
    teacher[..., 5] = -1e4  # very negative but finite
    student.requires_grad_(True)
    finite = [
        L.token_forward_kl,
        L.token_skew_forward_kl,
        L.token_skew_reverse_kl,
        L.token_generalized_jsd,
        L.token_total_variation,
    ]
    for fn in finite:
        values = fn(student, teacher)
        assert torch.isfinite(values).all(), fn.__name__
        (grad,) = torch.autograd.grad(values.sum(), student)
        assert torch.isfinite(grad).all(), fn.__name__
    assert torch.isinf(L.token_reverse_kl(student, teacher)).all()  # q > 0 where p = 0: truly inf
    # DPKD is infinite exactly where the student's argmax is impossible for the teacher
    values = L.token_dpkd(student, teacher)
    impossible = student.argmax(-1) < 4
    assert impossible.any() and (~impossible).any()
    assert torch.isfinite(values[~impossible]).all() and torch.isinf(values[impossible]).all()
    (grad,) = torch.autograd.grad(values.sum(), student)
    assert torch.isfinite(grad).all()


def test_reverse_kl_gradient_finite_where_student_has_zero_probability(logits):
    student, teacher = (x.clone() for x in logits)
    student[..., :3] = -float("inf")
    student.requires_grad_(True)
    values = L.token_reverse_kl(student, teacher)
    (grad,) = torch.autograd.grad(values.sum(), student)
    assert torch.isfinite(values).all() and torch.isfinite(grad).all()


# ---------------------------------------------------------------------------- masks


def test_masked_mean_and_sum_semantics():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), float("inf")]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert L.masked_mean(values, m) == 2.0
    assert L.masked_sum(values, m) == 6.0
    assert L.masked_mean(values, m.bool()) == 2.0
    with pytest.raises(ValueError, match="mask selects no token"):
        L.masked_mean(values, torch.zeros(2, 3))
    assert L.masked_sum(values, torch.zeros(2, 3)) == 0.0


# ---------------------------------------------------------------------------- token log-probs


def test_token_logprobs_and_cross_entropy_match_torch(logits):
    student, _ = logits
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(3))
    labels[1, 2] = labels[0, 4] = L.IGNORE_INDEX
    expected = F.cross_entropy(student.transpose(1, 2), labels, reduction="none")
    torch.testing.assert_close(L.token_cross_entropy(student, labels), expected)
    logp = L.token_logprobs(student, labels)
    assert logp[1, 2] == 0 and logp[0, 4] == 0
    torch.testing.assert_close(logp, -expected)
    assert L.token_logprobs(student.bfloat16(), labels).dtype == torch.float32


def test_token_logprobs_rejects_bad_labels(logits):
    student, _ = logits
    for bad in (V, -1):
        labels = torch.zeros(B, T, dtype=torch.long)
        labels[0, 0] = bad
        with pytest.raises(ValueError, match=r"labels must be token ids in \[0, 11\)"):
            L.token_logprobs(student, labels)
    with pytest.raises(ValueError, match="without the vocab axis"):
        L.token_logprobs(student, torch.zeros(B, T + 1, dtype=torch.long))


def test_sequence_logprob_matches_manual_gather(logits, mask):
    student, _ = logits
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    gathered = student.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    expected = (gathered * mask).sum(-1)
    padded = labels.masked_fill(mask == 0, L.IGNORE_INDEX)  # padding labels are ignored
    for lab in (labels, padded):
        value = L.sequence_logprob(student, lab, mask)
        assert value.shape == (B,) and value.dtype == torch.float32
        torch.testing.assert_close(value, expected)
    torch.testing.assert_close(
        L.sequence_logprob(student.half(), labels, mask), expected, atol=0.05, rtol=0.01
    )


# ---------------------------------------------------------------------------- DPKD, token level


def one_position(student_row, teacher_row):
    """Single-position logits [1, 1, V]."""
    return torch.tensor([[student_row]]), torch.tensor([[teacher_row]])


def test_dpkd_token_exact_zero_gradient_where_argmaxes_agree(logits):
    student, teacher = (x.clone() for x in logits)
    student[0, 0] = teacher[0, 0] * 1.5  # same argmax, different distribution
    student[1, 1] = -teacher[1, 1]  # different argmax
    agree = student.argmax(-1) == teacher.argmax(-1)
    assert agree.any() and (~agree).any()
    for options in (
        {},
        {"label_smoothing": 0.2},
        {"reference_free": True},
        {"ipo": True},
        {"simpo_gamma": 0.5},
    ):
        s = student.clone().requires_grad_(True)
        L.dpkd_token_loss(s, teacher, torch.ones(B, T), **options).backward()
        grad_norm = s.grad.abs().sum(-1)
        assert torch.all(grad_norm[agree] == 0), options
        assert torch.all(grad_norm[~agree] > 0), options
    values = L.token_dpkd(student, teacher)
    torch.testing.assert_close(values[agree], torch.full_like(values[agree], 2.0).log())


def test_dpkd_token_dpop_penalty_also_acts_where_argmaxes_agree():
    s_logits, t_logits = one_position([3.0, 0.0, 0.0], [6.0, 0.0, 0.0])  # log q(y_t) < log p(y_t)
    s_logits.requires_grad_(True)
    L.dpkd_token_loss(s_logits, t_logits, torch.ones(1, 1), dpop_lambda=2.0).backward()
    assert s_logits.grad[0, 0, 0] < 0  # pushes the chosen token up


def test_dpkd_token_formula_and_options():
    s_logits, t_logits = one_position([2.0, 0.5, 0.0], [0.0, 3.0, 1.0])
    log_q, log_p = s_logits.log_softmax(-1)[0, 0], t_logits.log_softmax(-1)[0, 0]
    chosen, rejected, beta = 1, 0, 0.1  # teacher argmax, student argmax
    student_ratio = log_q[chosen] - log_q[rejected]
    h = student_ratio - (log_p[chosen] - log_p[rejected])
    penalty = torch.relu(log_p[chosen] - log_q[chosen])
    assert penalty > 0
    logsig = F.logsigmoid
    cases = [
        ({}, -logsig(beta * h)),
        ({"label_smoothing": 0.2}, -0.8 * logsig(beta * h) - 0.2 * logsig(-beta * h)),
        ({"reference_free": True}, -logsig(beta * student_ratio)),
        ({"ipo": True}, (h - 1 / (2 * beta)) ** 2),
        ({"ipo": True, "reference_free": True}, (student_ratio - 1 / (2 * beta)) ** 2),
        ({"dpop_lambda": 2.0}, -logsig(beta * (h - 2.0 * penalty))),
        ({"simpo_gamma": 0.5}, -logsig(beta * student_ratio - 0.5)),
    ]
    mask = torch.ones(1, 1)
    for options, expected in cases:
        value = L.dpkd_token_loss(s_logits, t_logits, mask, beta=beta, **options)
        torch.testing.assert_close(value, expected, msg=str(options))


def test_dpkd_token_lowers_when_student_prefers_teacher_token():
    t_logits = torch.tensor([[[0.0, 3.0, 1.0]]])
    worse = torch.tensor([[[2.0, 0.5, 0.0]]])
    better = torch.tensor([[[2.0, 1.5, 0.0]]])
    mask = torch.ones(1, 1)
    assert L.dpkd_token_loss(better, t_logits, mask) < L.dpkd_token_loss(worse, t_logits, mask)


# ---------------------------------------------------------------------------- DPKD, sequence level


def seq_args(chosen=-4.0):
    """student chosen, teacher chosen, student rejected, teacher rejected, |y_t|, |y_s|."""
    return (
        torch.tensor([chosen, -6.0]),
        torch.tensor([-3.0, -5.0]),
        torch.tensor([-8.0, -7.0]),
        torch.tensor([-9.0, -4.0]),
        torch.tensor([4.0, 2.0]),
        torch.tensor([8.0, 0.0]),  # a zero length is clamped to 1
    )


def test_the_public_sequence_loss_is_the_batch_mean_of_the_methods_term():
    args = seq_args()
    method_term = -F.logsigmoid(L.dpkd_implicit_reward_margin(*args, beta=0.2))  # as dpkd sums it
    torch.testing.assert_close(L.dpkd_sequence_loss(*args, beta=0.2), method_term.mean())


def test_dpkd_sequence_loss_formula_and_length_normalisation():
    sc, tc, sr, tr, lc, lr = seq_args()
    margin = 0.1 * (sc - tc) / lc - 0.1 * (sr - tr) / lr.clamp(min=1)
    torch.testing.assert_close(
        L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr, beta=0.1), -F.logsigmoid(margin).mean()
    )
    raw = 0.1 * (sc - tc) - 0.1 * (sr - tr)
    torch.testing.assert_close(
        L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr, length_normalize=False),
        -F.logsigmoid(raw).mean(),
    )
    free = 0.1 * sc / lc - 0.1 * sr / lr.clamp(min=1)
    torch.testing.assert_close(
        L.dpkd_implicit_reward_margin(sc, tc, sr, tr, lc, lr, reference_free=True), free
    )


def test_dpkd_sequence_loss_decreases_when_student_raises_teacher_output():
    low = L.dpkd_sequence_loss(*seq_args(chosen=-4.0))
    high = L.dpkd_sequence_loss(*seq_args(chosen=-1.0))
    assert high < low


def test_dpkd_sequence_gradient_pushes_chosen_up_rejected_down_teacher_constant():
    sc, tc, sr, tr, lc, lr = seq_args()
    for x in (sc, sr, tc):
        x.requires_grad_(True)
    L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr).backward()
    assert torch.all(sc.grad < 0) and torch.all(sr.grad > 0)
    assert tc.grad is None


def test_dpkd_sequence_checks_inputs():
    sc, tc, sr, tr, lc, lr = seq_args()
    with pytest.raises(ValueError, match="beta must be > 0"):
        L.dpkd_sequence_loss(sc, tc, sr, tr, lc, lr, beta=0.0)
    with pytest.raises(ValueError, match="shapes must match"):
        L.dpkd_sequence_loss(sc, tc[:1], sr, tr, lc, lr)
    loss = L.dpkd_sequence_loss(sc.bfloat16(), tc.half(), sr, tr, [4, 2], [8, 1])
    assert loss.dtype == torch.float32
