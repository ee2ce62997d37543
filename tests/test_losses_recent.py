"""Reference tests of the per-token losses of ABKD, AKL, TAID, DistiLLM-2 and on-policy
distillation (dpkd_bench.losses.recent) and of TAID's schedule: each is compared with its official
formula written out naively in probability space (float64), not with dpkd_bench internals."""

from __future__ import annotations

import math

import pytest
import torch

from dpkd_bench import losses as L
from dpkd_bench.methods.taid import TAIDConfig, next_t

B, T, V = 2, 3, 7


def random_logits(seed: int = 0, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * scale, torch.randn(B, T, V, generator=g) * scale


@pytest.fixture
def logits():
    return random_logits()


def close(actual, expected, rtol=1e-5, atol=1e-5):
    """float32 result against a float64 reference."""
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol)


def grad_of(fn, student, *args):
    """d sum(fn(student, *args)) / d student, in the student's dtype."""
    s = student.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(s, *args).sum(), s)
    return grad


# ---------------------------------------------------------------------------- references


def ref_kl(a, b):
    """KL(a || b) = sum_v a log(a / b) from probabilities. [B, T]"""
    return (a * (a / b).log()).sum(-1)


def ref_ab_div(s, t, alpha, beta):
    """ghwang-s/abkd ``ab_div``, p = softmax(teacher), q = softmax(student). [B, T]"""
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    a, b = alpha, beta
    if a == 0 and b == 0:
        return 0.5 * ((q.log() - p.log()) ** 2).sum(-1)
    if a == 0:
        return (q**b * (q**b / p**b).log() - q**b + p**b).sum(-1) / b
    if b == 0:
        return (p**a * (p**a / q**a).log() - p**a + q**a).sum(-1) / a
    if a + b == 0:
        return ((q**a / p**a).log() + p**a / q**a - 1).sum(-1) / a
    terms = p**a * q**b - a / (a + b) * p ** (a + b) - b / (a + b) * q ** (a + b)
    return -terms.sum(-1) / (a * b)


def ref_akl_weights(s, t, mu):
    """wutaiqiang/LLM_KD_AKL: (w_head, w_tail, tail mask in vocabulary order), by a plain loop."""
    p, q = t.double().softmax(-1), s.detach().double().softmax(-1)
    w_head, w_tail = torch.zeros(B, T, dtype=torch.float64), torch.zeros(B, T, dtype=torch.float64)
    tail_mask = torch.zeros(B, T, V, dtype=torch.bool)
    for b in range(B):
        for i in range(T):
            ps, qs = p[b, i].tolist(), q[b, i].tolist()
            order = sorted(range(V), key=lambda v: -ps[v])
            cumulative, g_head, g_tail = 0.0, 0.0, 0.0
            for rank, v in enumerate(order):
                cumulative += ps[v]
                if rank > 0 and cumulative > mu:
                    g_tail += abs(ps[v] - qs[v])
                    tail_mask[b, i, v] = True
                else:
                    g_head += abs(ps[v] - qs[v])
            w_head[b, i] = g_head / (g_head + g_tail)
            w_tail[b, i] = g_tail / (g_head + g_tail)
    return w_head, w_tail, tail_mask


def ref_akl(s, t, mu):
    """w_head KL(p || q) + w_tail KL(q || p), the weights constant. [B, T]"""
    w_head, w_tail, _ = ref_akl_weights(s, t, mu)
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    return w_head * ref_kl(p, q) + w_tail * ref_kl(q, p)


def ref_taid_cross_entropy(s, t, interp):
    """SakanaAI/TAID: -sum_v p_t log q, p_t = softmax((1 - t) z_s.detach() + t z_T). [B, T]"""
    p_t = ((1 - interp) * s.detach().double() + interp * t.double()).softmax(-1)
    return -(p_t * s.double().softmax(-1).log()).sum(-1)


def ref_skew_rkl(s, t, a, detach_q):
    """KL(q || (1 - a) p + a q), q in the mixture detached (DistiLLM-2) or not (DistiLLM)."""
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    q_mix = q.detach() if detach_q else q
    return ref_kl(q, (1 - a) * p + a * q_mix)


def ref_skew_fkl(s, t, a):
    """DistiLLM-2 SKL on chosen rows: KL(p || a p + (1 - a) q), gradient through q."""
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    return ref_kl(p, a * p + (1 - a) * q)


class RefTAIDSchedule:
    """SakanaAI/TAID ``update_t``, transcribed."""

    def __init__(self, t_start, t_end, alpha, beta):
        self.t_start, self.t_end, self.alpha, self.beta = t_start, t_end, alpha, beta
        self.t, self.m, self.prev_loss = t_start, 0.0, float("inf")

    def update_t(self, loss, progress):
        if self.prev_loss == float("inf"):
            self.prev_loss = loss
            return self.t
        r = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        self.m = self.beta * self.m + (1 - self.beta) * r
        dt = self.alpha * (1 / (1 + math.exp(-self.m))) * (1 - self.t)
        t_lin = self.t_start + (self.t_end - self.t_start) * progress
        self.t = min(self.t_end, max(t_lin, self.t + dt))
        self.prev_loss = loss
        return self.t


# ---------------------------------------------------------------------------- all logit losses

LOGIT_LOSSES = {
    "ab_general": lambda s, t: L.token_ab_divergence(s, t, 0.2, 0.7),
    "ab_alpha_0": lambda s, t: L.token_ab_divergence(s, t, 0.0, 0.5),
    "ab_beta_0": lambda s, t: L.token_ab_divergence(s, t, 0.5, 0.0),
    "ab_both_0": lambda s, t: L.token_ab_divergence(s, t, 0.0, 0.0),
    "ab_sum_0": lambda s, t: L.token_ab_divergence(s, t, 0.5, -0.5),
    "akl": L.token_akl,
    "taid": lambda s, t: L.token_taid(s, t, 0.5),
    "distillm2_srkl": L.token_distillm2_skew_reverse_kl,
}


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_gradients_reach_the_student_only(name, logits):
    s, t = (x.clone().requires_grad_(True) for x in logits)
    values = LOGIT_LOSSES[name](s, t)
    assert values.shape == (B, T) and values.dtype == torch.float32
    values.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()
    assert t.grad is None  # the teacher is a constant (detached inside)


# ---------------------------------------------------------------------------- ABKD

AB_PAIRS = [(0.2, 0.7), (0.5, 0.5), (0, 0), (0, 1), (0, 0.5), (1, 0), (0.5, 0), (0.5, -0.5)]
AB_PAIRS += [(-0.3, 0.8)]


@pytest.mark.parametrize(("alpha", "beta"), AB_PAIRS)
def test_ab_divergence_matches_official_value_and_gradient(alpha, beta, logits):
    s, t = logits
    close(L.token_ab_divergence(s, t, alpha, beta), ref_ab_div(s, t, alpha, beta), rtol=1e-4)
    expected = grad_of(ref_ab_div, s.double(), t, alpha, beta)
    close(grad_of(L.token_ab_divergence, s, t, alpha, beta), expected, rtol=1e-4)


@pytest.mark.parametrize(
    ("alpha", "beta", "kl"), [(1, 0, L.token_forward_kl), (0, 1, L.token_reverse_kl)]
)
def test_ab_divergence_special_cases_are_forward_and_reverse_kl(alpha, beta, kl, logits):
    s, t = logits
    torch.testing.assert_close(L.token_ab_divergence(s, t, alpha, beta), kl(s, t))
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    close(L.token_ab_divergence(s, t, alpha, beta), ref_kl(p, q) if alpha else ref_kl(q, p))


@pytest.mark.parametrize(("alpha", "beta"), AB_PAIRS)
def test_ab_divergence_zero_when_student_equals_teacher(alpha, beta, logits):
    s, _ = logits
    assert L.token_ab_divergence(s, s.clone(), alpha, beta).abs().max() < 1e-5


# ---------------------------------------------------------------------------- AKL


@pytest.mark.parametrize("mu", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_akl_matches_official_value_and_constant_weight_gradient(mu, seed):
    s, t = random_logits(seed)
    close(L.token_akl(s, t, mu), ref_akl(s, t, mu))
    close(grad_of(L.token_akl, s, t, mu), grad_of(ref_akl, s.double(), t, mu))


def test_akl_student_equals_teacher_gives_zero_without_nan(logits):
    s, _ = logits
    s = s.clone().requires_grad_(True)
    values = L.token_akl(s, s.detach().clone())
    assert torch.isfinite(values).all() and values.abs().max() < 1e-6
    values.sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().max() < 1e-6


def test_akl_peaked_teacher_puts_all_but_top1_in_tail(logits):
    s, _ = logits
    t = torch.zeros(B, T, V)
    t[..., 2] = 6.0  # top-1 probability ~0.99 > mu
    _, w_tail, tail = ref_akl_weights(s, t, 0.5)
    expected_tail = torch.ones(B, T, V, dtype=torch.bool)
    expected_tail[..., 2] = False
    assert torch.equal(tail, expected_tail)
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    gaps = (p - q).abs()
    w_head = gaps[..., 2] / gaps.sum(-1)  # the top-1 token alone is the head
    torch.testing.assert_close(w_tail, 1 - w_head)
    close(L.token_akl(s, t, 0.5), w_head * ref_kl(p, q) + (1 - w_head) * ref_kl(q, p))


# ---------------------------------------------------------------------------- TAID


@pytest.mark.parametrize("interp", [0.0, 0.3, 0.7, 1.0])
def test_taid_plus_entropy_is_official_cross_entropy_value_and_gradient(interp, logits):
    s, t = logits
    value = L.token_taid(s, t, interp) + L.token_taid_entropy(s, t, interp)
    close(value, ref_taid_cross_entropy(s, t, interp))
    expected = grad_of(ref_taid_cross_entropy, s.double(), t, interp)  # p_t a constant
    close(grad_of(L.token_taid, s, t, interp), expected)


def test_taid_endpoints(logits):
    s, t = logits
    torch.testing.assert_close(L.token_taid(s, t, 1.0), L.token_forward_kl(s, t))
    close(L.token_taid(s, t, 1.0), ref_kl(t.double().softmax(-1), s.double().softmax(-1)))
    assert L.token_taid(s, t, 0.0).abs().max() < 1e-6


def test_taid_entropy_has_no_gradient_path(logits):
    s, t = (x.clone().requires_grad_(True) for x in logits)
    assert not L.token_taid_entropy(s, t, 0.5).requires_grad


def test_taid_schedule_matches_official_update_t():
    cfg = TAIDConfig(t_start=0.4, alpha=5e-2)
    g = torch.Generator().manual_seed(0)
    n = 50
    noise = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5).tolist()
    step_losses = [3.0 * math.exp(-k / 15) + 0.2 * noise[k] + 0.5 for k in range(n)]
    ref = RefTAIDSchedule(cfg.t_start, cfg.t_end, cfg.alpha, cfg.beta)
    state = {"t": cfg.t_start, "momentum": 0.0, "prev_loss": math.inf}
    above_linear = 0
    for k, loss in enumerate(step_losses):
        progress = k / n
        state = next_t(cfg, state, loss, progress)
        expected = ref.update_t(loss, progress)
        assert state["t"] == pytest.approx(expected, abs=1e-12), k
        assert state["prev_loss"] == loss
        assert state["momentum"] == pytest.approx(ref.m, abs=1e-15), k
        above_linear += state["t"] > cfg.t_start + (cfg.t_end - cfg.t_start) * progress + 1e-6
    assert above_linear > 10  # the adaptive term, not only the linear floor, drove t
    assert state["t"] > 0.9


def test_taid_schedule_without_adaptive_is_linear():
    cfg = TAIDConfig(t_start=0.4, alpha=5e-2, adaptive=False)
    state = {"t": cfg.t_start, "momentum": 0.0, "prev_loss": math.inf}
    for k in range(50):
        state = next_t(cfg, state, 2.0 - 0.03 * k, k / 50)
        assert state["t"] == pytest.approx(0.4 + 0.6 * k / 50, abs=1e-12)


# ---------------------------------------------------------------------------- DistiLLM-2


def test_distillm2_skew_rkl_value_matches_distillm_but_gradient_detaches_q(logits):
    s, t = logits
    value = L.token_distillm2_skew_reverse_kl(s, t, 0.1)
    torch.testing.assert_close(value, L.token_skew_reverse_kl(s, t, 0.1))
    close(value, ref_skew_rkl(s, t, 0.1, detach_q=True))
    grad = grad_of(L.token_distillm2_skew_reverse_kl, s, t, 0.1)
    close(grad, grad_of(ref_skew_rkl, s.double(), t, 0.1, True))
    distillm_grad = grad_of(ref_skew_rkl, s.double(), t, 0.1, False)
    close(grad_of(L.token_skew_reverse_kl, s, t, 0.1), distillm_grad)
    assert (grad.double() - distillm_grad).abs().max() > 1e-3


def test_distillm2_skew_rkl_alpha_zero_is_reverse_kl(logits):
    s, t = logits
    value = L.token_distillm2_skew_reverse_kl(s, t, 0.0)
    torch.testing.assert_close(value, L.token_reverse_kl(s, t))
    close(value, ref_skew_rkl(s, t, 0.0, detach_q=True))


def test_distillm2_chosen_rows_skew_fkl_value_and_gradient(logits):
    s, t = logits
    close(L.token_skew_forward_kl(s, t, 0.1), ref_skew_fkl(s, t, 0.1))
    close(grad_of(L.token_skew_forward_kl, s, t, 0.1), grad_of(ref_skew_fkl, s.double(), t, 0.1))


# ---------------------------------------------------------------------------- OPD


def random_logprobs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(-3 * torch.rand(B, T, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("coef", [0.5, 1.0])
def test_opd_matches_importance_sampling_formula(coef):
    current, old, teacher = random_logprobs(0)
    advantage = -coef * (old - teacher)
    expected = -torch.exp(current - old) * advantage
    close(L.token_opd(current.float(), old.float(), teacher.float(), coef), expected)


def test_opd_on_policy_value_and_gradient_are_sampled_reverse_kl():
    _, old, teacher = random_logprobs(1)
    current = old.float().clone().requires_grad_(True)
    sampler, teach = (x.float().clone().requires_grad_(True) for x in (old, teacher))
    values = L.token_opd(current, sampler, teach, 2.0)
    close(values, 2.0 * (old.float().double() - teacher.float().double()))
    values.sum().backward()
    close(current.grad, 2.0 * (old.float().double() - teacher.float().double()))  # -A_t
    assert sampler.grad is None and teach.grad is None


def test_opd_coef_scales_linearly():
    current, old, teacher = (x.float() for x in random_logprobs(2))
    torch.testing.assert_close(
        L.token_opd(current, old, teacher, 2.5), 2.5 * L.token_opd(current, old, teacher, 1.0)
    )


def test_opd_bad_inputs_raise():
    current, old, teacher = (x.float() for x in random_logprobs(3))
    with pytest.raises(ValueError):
        L.token_opd(current, old[:, :2], teacher)
    with pytest.raises(ValueError):
        L.token_opd(current, old, teacher[:1])
    for coef in (0.0, -1.0):
        with pytest.raises(ValueError):
            L.token_opd(current, old, teacher, coef)


@pytest.mark.parametrize("interp", [0.0, 0.4, 1.0])
def test_taid_cross_entropy_is_its_kl_plus_the_target_entropy_in_one_pass(interp, logits):
    s, t = logits
    expected = L.token_taid(s, t, interp) + L.token_taid_entropy(s, t, interp)
    close(L.token_taid_cross_entropy(s, t, interp), expected)
    close(
        grad_of(L.token_taid_cross_entropy, s, t, interp),
        grad_of(L.token_taid, s, t, interp),
    )
