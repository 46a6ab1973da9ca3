"""vaekit.functional against independent references.

References: SciPy densities, numerical integration (scipy.integrate.quad), seeded Monte
Carlo, mpmath (or a Taylor series written here) and log-sum-exp done by hand in NumPy.
Nothing is compared against vaekit's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, special, stats

import vaekit
from vaekit import functional as VF

F64 = torch.float64
LEVELS = np.linspace(-1.0, 1.0, 256)  # the 256 values of discretized-logistic data
H = 1.0 / 255.0  # bin half-width


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# --------------------------------------------------------------------------------------
# KL divergences
# --------------------------------------------------------------------------------------

# (mu_q, logvar_q, mu_p, logvar_p), each [B=2, D=3].
KL_CASES = {
    "q_equals_p": (
        [[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]],
        [[0.1, -2.0, 1.0], [0.0, 0.0, 0.3]],
        [[0.3, -1.0, 2.0], [0.0, 0.5, -0.2]],
        [[0.1, -2.0, 1.0], [0.0, 0.0, 0.3]],
    ),
    "shifted_mean": (
        [[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ),
    "narrow_q": (
        [[0.2, -0.1, 0.0], [0.5, 0.5, 0.5]],
        [[-6.0, -4.0, -2.0], [-5.0, -3.0, -8.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.5, -0.5], [1.0, 0.0, 0.0]],
    ),
    "wide_q": (
        [[0.0, 1.0, -1.0], [2.0, -2.0, 0.0]],
        [[3.0, 2.0, 1.5], [2.5, 1.0, 0.5]],
        [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]],
        [[0.0, -1.0, 0.5], [0.0, 0.0, -1.0]],
    ),
    "mixed": (
        [[0.7, -1.3, 0.1], [-0.4, 2.2, 1.1]],
        [[0.4, -0.8, 1.2], [-1.5, 0.3, 0.0]],
        [[-0.2, 0.6, 0.9], [0.3, -1.1, 0.0]],
        [[-0.5, 0.7, 0.2], [0.8, -0.4, 1.0]],
    ),
}


def _kl_quad_1d(mq: float, lvq: float, mp: float, lvp: float) -> float:
    """KL(q || p) of two 1-D Gaussians by integrating q log(q / p) numerically."""
    sq, sp = math.exp(0.5 * lvq), math.exp(0.5 * lvp)

    def integrand(z: float) -> float:
        lq = stats.norm.logpdf(z, mq, sq)
        return math.exp(lq) * (lq - stats.norm.logpdf(z, mp, sp))

    lo, hi = mq - 40.0 * sq, mq + 40.0 * sq
    val, _ = integrate.quad(integrand, lo, hi, points=[mq], epsabs=1e-13, epsrel=1e-11, limit=200)
    return val


def _kl_quad(mu_q, lv_q, mu_p, lv_p) -> np.ndarray:
    """Numerical KL summed over the last axis -> [B]."""
    args = [np.asarray(a, dtype=np.float64) for a in (mu_q, lv_q, mu_p, lv_p)]
    out = np.zeros(args[0].shape[0])
    for b in range(args[0].shape[0]):
        out[b] = sum(_kl_quad_1d(*(a[b, d] for a in args)) for d in range(args[0].shape[1]))
    return out


@pytest.mark.parametrize("case", sorted(KL_CASES))
def test_kl_normal_matches_quadrature(case):
    mu_q, lv_q, mu_p, lv_p = KL_CASES[case]
    got = VF.kl_normal(t64(mu_q), t64(lv_q), t64(mu_p), t64(lv_p)).numpy()
    np.testing.assert_allclose(got, _kl_quad(mu_q, lv_q, mu_p, lv_p), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("case", sorted(KL_CASES))
def test_kl_normal_std_matches_quadrature(case):
    mu_q, lv_q, _, _ = KL_CASES[case]
    zeros = np.zeros_like(np.asarray(mu_q))
    got = VF.kl_normal_std(t64(mu_q), t64(lv_q)).numpy()
    np.testing.assert_allclose(got, _kl_quad(mu_q, lv_q, zeros, zeros), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("case", sorted(set(KL_CASES) - {"q_equals_p"}))
def test_kl_normal_matches_monte_carlo(case):
    """Closed form within 5 standard errors of a seeded 200k-sample estimate of E_q log q/p."""
    mu_q, lv_q, mu_p, lv_p = (np.asarray(a, dtype=np.float64) for a in KL_CASES[case])
    rng = np.random.default_rng(1234)
    n = 200_000
    sq, sp = np.exp(0.5 * lv_q), np.exp(0.5 * lv_p)
    z = mu_q + sq * rng.standard_normal((n, *mu_q.shape))
    log_ratio = (stats.norm.logpdf(z, mu_q, sq) - stats.norm.logpdf(z, mu_p, sp)).sum(-1)  # [n, B]
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0, ddof=1) / math.sqrt(n)
    got = VF.kl_normal(t64(mu_q), t64(lv_q), t64(mu_p), t64(lv_p)).numpy()
    assert np.all(np.abs(got - estimate) <= 5.0 * stderr), (got, estimate, stderr)
    # standard normal prior: same check against p = N(0, I)
    log_ratio = (stats.norm.logpdf(z, mu_q, sq) - stats.norm.logpdf(z)).sum(-1)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0, ddof=1) / math.sqrt(n)
    got = VF.kl_normal_std(t64(mu_q), t64(lv_q)).numpy()
    assert np.all(np.abs(got - estimate) <= 5.0 * stderr), (got, estimate, stderr)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_kl_is_exactly_zero_when_q_equals_p(dtype):
    mu = torch.randn(4, 5, dtype=dtype) * 3
    lv = torch.randn(4, 5, dtype=dtype) * 5
    assert torch.equal(VF.kl_normal(mu, lv, mu, lv), torch.zeros(4, dtype=dtype))
    zero = torch.zeros(4, 5, dtype=dtype)
    assert torch.equal(VF.kl_normal_std(zero, zero), torch.zeros(4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_kl_is_nonnegative_for_tiny_log_variance(dtype):
    """exp(v) - 1 - v rounds below zero for |v| < eps unless computed with expm1."""
    lv = torch.tensor([[1e-8, -1e-8, 1e-17, -1e-17, 1e-30]], dtype=dtype)
    zero = torch.zeros_like(lv)
    assert VF.kl_normal_std(zero, lv).item() >= 0.0
    assert VF.kl_normal(zero, lv, zero, zero).item() >= 0.0
    assert VF.kl_normal(zero, zero, zero, lv).item() >= 0.0


def _kl_std_closed_form_numpy(mu, lv):
    return 0.5 * (np.exp(lv) + mu**2 - 1.0 - lv)


def test_kl_sums_over_all_non_batch_dims_of_images():
    mu = torch.randn(3, 2, 4, 5, dtype=F64)
    lv = torch.randn(3, 2, 4, 5, dtype=F64)
    got = VF.kl_normal_std(mu, lv)
    assert got.shape == (3,)
    ref = _kl_std_closed_form_numpy(mu.numpy(), lv.numpy()).reshape(3, -1).sum(1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    zero = torch.zeros_like(mu)
    np.testing.assert_allclose(VF.kl_normal(mu, lv, zero, zero).numpy(), ref, rtol=1e-12)


def test_kl_broadcasts_parameters_against_batch():
    mu = torch.randn(6, 3, dtype=F64)
    lv = torch.randn(3, dtype=F64)  # one log-variance per latent, shared over the batch
    got = VF.kl_normal_std(mu, lv)
    assert got.shape == (6,)
    ref = _kl_std_closed_form_numpy(mu.numpy(), lv.numpy()[None]).sum(1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_kl_of_one_dim_input_is_per_example():
    mu, lv = torch.randn(7, dtype=F64), torch.randn(7, dtype=F64)
    ref = _kl_std_closed_form_numpy(mu.numpy(), lv.numpy())
    np.testing.assert_allclose(VF.kl_normal_std(mu, lv).numpy(), ref, rtol=1e-12)


# --------------------------------------------------------------------------------------
# Log-densities
# --------------------------------------------------------------------------------------


def test_bernoulli_log_prob_matches_scipy_for_binary_x():
    rng = np.random.default_rng(0)
    logits = rng.uniform(-15, 15, size=(4, 2, 3, 3))
    x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float64)
    ref = stats.bernoulli.logpmf(x, special.expit(logits)).reshape(4, -1).sum(1)
    got = VF.bernoulli_log_prob(t64(logits), t64(x))
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


def test_bernoulli_log_prob_is_cross_entropy_for_grey_x():
    rng = np.random.default_rng(1)
    logits = rng.uniform(-8, 8, size=(5, 11))
    x = rng.uniform(0.01, 0.99, size=(5, 11))
    p = 1.0 / (1.0 + np.exp(-logits))
    ref = (x * np.log(p) + (1.0 - x) * np.log1p(-p)).sum(1)
    np.testing.assert_allclose(VF.bernoulli_log_prob(t64(logits), t64(x)).numpy(), ref, rtol=1e-9)


def test_gaussian_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    x, mean = rng.normal(size=(2, 4, 3, 5)), rng.normal(size=(4, 3, 5))
    logvar = rng.uniform(-5, 5, size=(4, 3, 5))
    ref = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar)).reshape(2, 4, -1)
    # x [2, 4, 3, 5] against parameters [4, 3, 5]: the batch axis is the broadcast first axis
    got = VF.gaussian_log_prob(t64(x), t64(mean), t64(logvar))
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), ref.reshape(2, -1).sum(1), rtol=1e-12)


def test_laplace_log_prob_matches_scipy():
    rng = np.random.default_rng(3)
    x, loc = rng.normal(size=(6, 10)), rng.normal(size=(6, 10))
    log_scale = rng.uniform(-4, 3, size=(6, 10))
    ref = stats.laplace.logpdf(x, loc, np.exp(log_scale)).sum(1)
    got = VF.laplace_log_prob(t64(x), t64(loc), t64(log_scale))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


# -- continuous Bernoulli ---------------------------------------------------------------

CB_LOGITS = [-50.0, -5.0, -1e-3, -1e-6, 0.0, 1e-6, 1e-3, 5.0, 50.0]


@pytest.mark.parametrize("eta", CB_LOGITS, ids=lambda e: f"logit={e:g}")
def test_continuous_bernoulli_density_integrates_to_one(eta):
    logits = torch.tensor([[eta]], dtype=F64)

    def density(x: float) -> float:
        lp = VF.continuous_bernoulli_log_prob(logits, torch.tensor([[x]], dtype=F64))
        return math.exp(lp.item())

    total, err = integrate.quad(density, 0.0, 1.0, epsabs=1e-13, epsrel=1e-12, limit=200)
    assert abs(total - 1.0) < 1e-9, (total, err)


def _cb_log_norm_reference(eta: float) -> float:
    """log C(eta) = log(eta / tanh(eta / 2)) (log 2 at 0), to about 1e-16 relative."""
    try:
        import mpmath
    except ImportError:  # float64 closed form away from 0, Taylor series near it
        if abs(eta) < 1e-2:
            e2 = eta * eta
            return math.log(2.0) + e2 / 12.0 - 7.0 * e2**2 / 1440.0 + 31.0 * e2**3 / 90720.0
        return math.log(eta / math.tanh(eta / 2.0))
    with mpmath.workdps(60):
        e = mpmath.mpf(eta)
        return float(mpmath.log(2) if e == 0 else mpmath.log(e / mpmath.tanh(e / 2)))


CB_NORM_LOGITS = [
    0.0,
    1e-12,
    1e-8,
    1e-6,
    1e-4,
    1e-3,
    9.999e-3,
    1e-2,
    1.0001e-2,
    0.1,
    1.0,
    5.0,
    50.0,
    1e4,
]


@pytest.mark.parametrize(
    "eta", CB_NORM_LOGITS + [-e for e in CB_NORM_LOGITS[1:]], ids=lambda e: f"logit={e:g}"
)
def test_continuous_bernoulli_normaliser_matches_high_precision(eta):
    ref = _cb_log_norm_reference(eta)
    got64 = VF.continuous_bernoulli_log_norm(torch.tensor(eta, dtype=F64)).item()
    assert got64 == pytest.approx(ref, rel=2e-15, abs=0.0)
    got32 = VF.continuous_bernoulli_log_norm(torch.tensor(eta, dtype=torch.float32)).item()
    assert got32 == pytest.approx(ref, rel=1e-6)


def test_continuous_bernoulli_log_prob_matches_lambda_closed_form():
    """log C + x log(lam) + (1-x) log(1-lam), C = 2 atanh(1 - 2 lam) / (1 - 2 lam)."""
    rng = np.random.default_rng(4)
    logits = rng.uniform(0.2, 6, size=(3, 8)) * rng.choice([-1, 1], size=(3, 8))
    x = rng.uniform(size=(3, 8))
    lam = special.expit(logits)
    log_c = np.log(2.0 * np.arctanh(1.0 - 2.0 * lam) / (1.0 - 2.0 * lam))
    ref = (log_c + x * np.log(lam) + (1 - x) * np.log1p(-lam)).sum(1)
    got = VF.continuous_bernoulli_log_prob(t64(logits), t64(x))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


# -- discretized logistic -----------------------------------------------------------------

DL_PARAMS = {  # (loc, log_scale)
    "centred": (0.0, 0.0),
    "between_levels": (0.1, -3.0),
    "near_left_edge": (-0.99, -5.0),
    "near_right_edge": (0.98, -2.0),
    "far_right": (5.0, 0.0),
    "far_left": (-40.0, 1.0),
    "tiny_scale": (0.3, -7.0),
    "tiny_scale_legal_extreme": (-0.2, -30.0),
    "huge_scale": (0.0, 10.0),
    "huge_scale_legal_extreme": (0.5, 30.0),
}


def _dl_log_masses(loc: float, log_scale: float, dtype=F64) -> torch.Tensor:
    x = torch.tensor(LEVELS, dtype=dtype)[:, None]  # [256 levels, 1 pixel]
    return VF.discretized_logistic_log_prob(
        x, torch.tensor(loc, dtype=dtype), torch.tensor(log_scale, dtype=dtype)
    )


@pytest.mark.parametrize("case", list(DL_PARAMS))
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_discretized_logistic_masses_sum_to_one(case, dtype):
    lp = _dl_log_masses(*DL_PARAMS[case], dtype=dtype)
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.exp(lp.double()).sum().item() == pytest.approx(1.0, abs=tol)


def _logistic_bin_mass(x: np.ndarray, loc: float, scale: float) -> np.ndarray:
    """Mass of each bin from scipy's logistic CDF; the edge bins take the tails.

    Above loc the difference is taken of survival functions, so that it does not cancel.
    """
    upper = stats.logistic.cdf(x + H, loc, scale)
    lower = stats.logistic.cdf(x - H, loc, scale)
    sf_diff = stats.logistic.sf(x - H, loc, scale) - stats.logistic.sf(x + H, loc, scale)
    mass = np.where(x > loc, sf_diff, upper - lower)
    mass = np.where(x < -1 + H, upper, mass)
    return np.where(x > 1 - H, stats.logistic.sf(x - H, loc, scale), mass)


@pytest.mark.parametrize(
    "loc, log_scale",
    [(0.0, 0.0), (0.1, -3.0), (-0.6, -4.5), (0.9, -2.0), (2.0, 0.5), (-1.5, 1.0), (0.3, 3.0)],
)
def test_discretized_logistic_bins_match_scipy_cdf_difference(loc, log_scale):
    mass = _logistic_bin_mass(LEVELS, loc, math.exp(log_scale))
    keep = mass > 1e-12  # where the CDF difference itself is accurate in float64
    got64 = torch.exp(_dl_log_masses(loc, log_scale)).numpy()
    np.testing.assert_allclose(got64[keep], mass[keep], rtol=1e-7)
    got32 = _dl_log_masses(loc, log_scale, torch.float32).double().numpy()
    np.testing.assert_allclose(got32[keep], np.log(mass[keep]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("log_scale", [12.0, 20.0, 30.0])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_discretized_logistic_middle_bin_of_a_wide_logistic(log_scale, dtype):
    """A wide logistic puts ~ 2h pdf(x) on a middle bin: checked against mpmath."""
    mpmath = pytest.importorskip("mpmath")
    x, loc = LEVELS[100], 0.25
    with mpmath.workdps(60):
        s = mpmath.exp(log_scale)

        def cdf(v):
            return 1 / (1 + mpmath.exp(-(mpmath.mpf(v) - loc) / s))

        ref = float(mpmath.log(cdf(x + H) - cdf(x - H)))
    got = VF.discretized_logistic_log_prob(
        torch.tensor([[x]], dtype=dtype),
        torch.tensor(loc, dtype=dtype),
        torch.tensor(log_scale, dtype=dtype),
    ).item()
    assert got == pytest.approx(ref, rel=1e-6 if dtype == torch.float32 else 1e-10)


def test_discretized_logistic_sums_over_pixels():
    rng = np.random.default_rng(5)
    x = rng.choice(LEVELS, size=(3, 2, 4, 4))
    loc = rng.uniform(-1.2, 1.2, size=x.shape)
    log_scale = rng.uniform(-4, 0, size=x.shape)
    got = VF.discretized_logistic_log_prob(t64(x), t64(loc), t64(log_scale))
    assert got.shape == (3,)
    ref = np.log(_logistic_bin_mass(x, loc, np.exp(log_scale))).reshape(3, -1).sum(1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-8)


def test_discretized_logistic_other_bin_counts():
    levels = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    lp = VF.discretized_logistic_log_prob(levels, t64(0.2), t64(-1.0), bins=5)
    assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-12)
    # bins=2: x in {-1, 1}, two half-lines split at 0
    lp = VF.discretized_logistic_log_prob(t64([[-1.0], [1.0]]), t64(0.4), t64(-0.5), bins=2)
    np.testing.assert_allclose(
        torch.exp(lp).numpy(),
        [stats.logistic.cdf(0, 0.4, math.exp(-0.5)), stats.logistic.sf(0, 0.4, math.exp(-0.5))],
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="bins"):
        VF.discretized_logistic_log_prob(levels, t64(0.0), t64(0.0), bins=1)


# --------------------------------------------------------------------------------------
# log-mean-exp and the IWAE bound
# --------------------------------------------------------------------------------------


def _logsumexp_by_hand(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_log_mean_exp_matches_numpy(dim):
    a = np.random.default_rng(6).normal(scale=3.0, size=(7, 5, 3))
    ref = np.log(np.mean(np.exp(a), axis=dim))
    np.testing.assert_allclose(VF.log_mean_exp(t64(a), dim=dim).numpy(), ref, rtol=1e-13)


@pytest.mark.parametrize(
    "values",
    [[1e4, 1e4 - 1.0, 1e4 - 2.0], [-1e4, -1e4 - 0.5, -1e4 + 3.0], [1e4, -1e4, 0.0]],
    ids=["large", "very_negative", "spread"],
)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_log_mean_exp_is_stable_for_extreme_values(values, dtype):
    a = np.asarray(values)
    ref = _logsumexp_by_hand(a, 0) - math.log(len(a))
    got = VF.log_mean_exp(torch.tensor(values, dtype=dtype), dim=0).item()
    assert math.isfinite(got)
    assert got == pytest.approx(ref, rel=1e-6 if dtype == torch.float32 else 1e-14)


def test_iwae_bound_value_and_shape():
    log_w = np.random.default_rng(7).normal(scale=10.0, size=(50, 4)) - 300.0
    got = VF.iwae_bound(t64(log_w))
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), _logsumexp_by_hand(log_w, 0) - math.log(50), rtol=1e-13)
    # K = 1: the bound is the single log-weight (the ELBO estimate)
    np.testing.assert_allclose(VF.iwae_bound(t64(log_w[:1])).numpy(), log_w[0], rtol=1e-15)


@pytest.mark.parametrize("shape", [(5,), (3, 4, 2), ()], ids=["1d", "3d", "scalar"])
def test_iwae_bound_rejects_non_kb_shapes(shape):
    with pytest.raises(ValueError, match=r"log_w.*\[K, B\]"):
        VF.iwae_bound(torch.zeros(shape))


# --------------------------------------------------------------------------------------
# Extreme legal inputs: finite values and finite gradients
# --------------------------------------------------------------------------------------

BIG_LOGITS = [-1e4, -50.0, -1e-3, 0.0, 1e-3, 50.0, 1e4]
BIG_LOGVARS = [-30.0, -5.0, 0.0, 5.0, 30.0]


def _leaf(values, dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).requires_grad_(True)


def _extreme_cases(dtype):
    """name -> (function of leaves, leaves): grids covering every extreme combination."""
    lv = torch.tensor(BIG_LOGVARS, dtype=dtype)
    lg = torch.tensor(BIG_LOGITS, dtype=dtype)
    lv_q, lv_p = torch.meshgrid(lv, lv, indexing="ij")
    lg_b, x01 = torch.meshgrid(lg, torch.tensor([0.0, 0.5, 1.0], dtype=dtype), indexing="ij")
    lg_bin, xbin = torch.meshgrid(lg, torch.tensor([0.0, 1.0], dtype=dtype), indexing="ij")
    mu = torch.tensor([-1e4, -1.0, 0.0, 3.0, 1e4], dtype=dtype)
    mu_g, lv_g = torch.meshgrid(mu, lv, indexing="ij")
    # discretized logistic: edge bins, a middle bin, loc far away and log-scale +-30
    xs = torch.tensor([-1.0, -1 + 2 / 255, 0.0039215686, 1 - 2 / 255, 1.0], dtype=dtype)
    locs = torch.tensor([-1e4, -1.0, 0.0, 0.5, 1.0, 1e4], dtype=dtype)
    xd, ld, sd = torch.meshgrid(xs, locs, lv, indexing="ij")
    return {
        "kl_normal_std": (VF.kl_normal_std, [mu_g.clone(), lv_g.clone()]),
        "kl_normal": (
            VF.kl_normal,
            [torch.zeros_like(lv_q), lv_q.clone(), torch.full_like(lv_p, 1e4), lv_p.clone()],
        ),
        "bernoulli_log_prob": (VF.bernoulli_log_prob, [lg_bin.clone(), xbin]),
        "gaussian_log_prob": (
            VF.gaussian_log_prob,
            [torch.zeros_like(mu_g), mu_g.clone(), lv_g.clone()],
        ),
        "laplace_log_prob": (
            VF.laplace_log_prob,
            [torch.zeros_like(mu_g), mu_g.clone(), lv_g.clone()],
        ),
        "continuous_bernoulli_log_prob": (VF.continuous_bernoulli_log_prob, [lg_b.clone(), x01]),
        "discretized_logistic_log_prob": (
            VF.discretized_logistic_log_prob,
            [xd, ld.clone(), sd.clone()],
        ),
        "log_mean_exp": (VF.log_mean_exp, [torch.tensor([[1e4, -1e4], [-1e4, -1e4]], dtype=dtype)]),
        "iwae_bound": (
            VF.iwae_bound,
            [torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 30.0]], dtype=dtype)],
        ),
    }


EXTREME_NAMES = list(_extreme_cases(torch.float32))


@pytest.mark.parametrize("name", EXTREME_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_extreme_legal_inputs_give_finite_values_and_gradients(name, dtype):
    fn, args = _extreme_cases(dtype)[name]
    leaves = [a.detach().requires_grad_(True) for a in args]
    out = fn(*leaves)
    assert torch.isfinite(out).all(), out
    out.sum().backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), (name, leaf.grad)


def test_gradients_of_kl_at_extremes_are_correct():
    """d KL / d logvar = 0.5 (e^v - 1): also at v = +-30, where overflow would show."""
    lv = _leaf([-30.0, 30.0], F64)
    VF.kl_normal_std(torch.zeros(2, dtype=F64), lv).sum().backward()
    np.testing.assert_allclose(lv.grad.numpy(), 0.5 * np.expm1([-30.0, 30.0]), rtol=1e-14)


def test_bernoulli_gradient_saturates_correctly():
    """d log p / d logit = x - sigmoid(logit): exactly -1, 0, 0, 1 at logits +-1e4."""
    logits = _leaf([1e4, 1e4, -1e4, -1e4], torch.float32)
    x = torch.tensor([0.0, 1.0, 0.0, 1.0])
    VF.bernoulli_log_prob(logits, x).sum().backward()
    np.testing.assert_allclose(logits.grad.numpy(), [-1.0, 0.0, 0.0, 1.0], atol=1e-6)


# --------------------------------------------------------------------------------------
# Illegal inputs: ValueError naming the argument
# --------------------------------------------------------------------------------------

NAN = float("nan")
INF = float("inf")
Z = torch.zeros(2, 3)


ILLEGAL = {
    "bernoulli_x_0_255": (lambda: VF.bernoulli_log_prob(Z, torch.full((2, 3), 255.0)), r"\bx\b"),
    "bernoulli_x_negative": (lambda: VF.bernoulli_log_prob(Z, torch.full((2, 3), -0.1)), r"\bx\b"),
    "bernoulli_x_nan": (lambda: VF.bernoulli_log_prob(Z, torch.full((2, 3), NAN)), r"\bx\b.*NaN"),
    "continuous_bernoulli_x_negative": (
        lambda: VF.continuous_bernoulli_log_prob(Z, torch.full((2, 3), -0.5)),
        r"\bx\b",
    ),
    "continuous_bernoulli_x_above_one": (
        lambda: VF.continuous_bernoulli_log_prob(Z, torch.full((2, 3), 1.5)),
        r"\bx\b",
    ),
    "continuous_bernoulli_x_inf": (
        lambda: VF.continuous_bernoulli_log_prob(Z, torch.full((2, 3), INF)),
        r"\bx\b.*Inf",
    ),
    "gaussian_x_nan": (lambda: VF.gaussian_log_prob(torch.full((2, 3), NAN), Z, Z), r"\bx\b"),
    "gaussian_x_inf": (lambda: VF.gaussian_log_prob(torch.full((2, 3), INF), Z, Z), r"\bx\b"),
    "laplace_x_nan": (lambda: VF.laplace_log_prob(torch.full((2, 3), NAN), Z, Z), r"\bx\b"),
    "discretized_logistic_x_2": (
        lambda: VF.discretized_logistic_log_prob(torch.full((2, 3), 2.0), Z, Z),
        r"\bx\b.*-1",
    ),
    "discretized_logistic_x_nan": (
        lambda: VF.discretized_logistic_log_prob(torch.full((2, 3), NAN), Z, Z),
        r"\bx\b",
    ),
    "gaussian_shapes": (
        lambda: VF.gaussian_log_prob(torch.zeros(2, 3), torch.zeros(2, 4), Z),
        r"\bx\b \(2, 3\).*mean \(2, 4\)",
    ),
    "laplace_shapes": (lambda: VF.laplace_log_prob(Z, Z, torch.zeros(5)), r"log_scale \(5,\)"),
    "bernoulli_shapes": (
        lambda: VF.bernoulli_log_prob(torch.zeros(2, 4), Z),
        r"logits \(2, 4\).*\bx\b \(2, 3\)",
    ),
    "continuous_bernoulli_shapes": (
        lambda: VF.continuous_bernoulli_log_prob(torch.zeros(3, 3), Z),
        r"logits.*\bx\b",
    ),
    "discretized_logistic_shapes": (
        lambda: VF.discretized_logistic_log_prob(Z, torch.zeros(4), Z),
        r"loc \(4,\)",
    ),
    "kl_normal_std_shapes": (
        lambda: VF.kl_normal_std(Z, torch.zeros(2, 4)),
        r"mu \(2, 3\).*logvar \(2, 4\)",
    ),
    "kl_normal_shapes": (lambda: VF.kl_normal(Z, Z, torch.zeros(3, 3), Z), r"mu_p \(3, 3\)"),
}


@pytest.mark.parametrize("case", list(ILLEGAL))
def test_illegal_inputs_raise_value_error_naming_the_argument(case):
    fn, pattern = ILLEGAL[case]
    with pytest.raises(ValueError, match=pattern):
        fn()


def test_support_message_states_the_expected_range():
    with pytest.raises(ValueError, match=r"\[0\.0, 1\.0\].*255"):
        VF.bernoulli_log_prob(Z, torch.full((2, 3), 255.0))


def test_value_checks_can_be_switched_off_but_shape_checks_cannot():
    with vaekit.validation(False):
        VF.bernoulli_log_prob(Z, torch.full((2, 3), 255.0))  # no value check
        with pytest.raises(ValueError, match="logits"):
            VF.bernoulli_log_prob(torch.zeros(2, 4), Z)
    with pytest.raises(ValueError, match=r"\bx\b"):  # restored on exit
        VF.bernoulli_log_prob(Z, torch.full((2, 3), 255.0))


# --------------------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------------------

PROPS = settings(max_examples=60, deadline=None)


def _arr(low: float, high: float, shape=(3, 4)):
    return arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False))


@PROPS
@given(mu=_arr(-1e3, 1e3), lv=_arr(-30, 30))
def test_prop_kl_normal_std_finite_and_nonnegative(mu, lv):
    for dtype in (torch.float32, F64):
        kl = VF.kl_normal_std(torch.tensor(mu, dtype=dtype), torch.tensor(lv, dtype=dtype))
        assert torch.isfinite(kl).all() and (kl >= 0).all()


@PROPS
@given(mu_q=_arr(-100, 100), lv_q=_arr(-30, 30), mu_p=_arr(-100, 100), lv_p=_arr(-30, 30))
def test_prop_kl_normal_finite_and_nonnegative(mu_q, lv_q, mu_p, lv_p):
    for dtype in (torch.float32, F64):
        args = [torch.tensor(a, dtype=dtype) for a in (mu_q, lv_q, mu_p, lv_p)]
        kl = VF.kl_normal(*args)
        assert torch.isfinite(kl).all() and (kl >= 0).all()


@PROPS
@given(mu=_arr(-1e3, 1e3), lv=_arr(-30, 30))
def test_prop_kl_normal_of_a_distribution_with_itself_is_zero(mu, lv):
    for dtype in (torch.float32, F64):
        m, v = torch.tensor(mu, dtype=dtype), torch.tensor(lv, dtype=dtype)
        assert torch.equal(VF.kl_normal(m, v, m, v), torch.zeros(3, dtype=dtype))


@PROPS
@given(logits=_arr(-1e4, 1e4), bits=arrays(np.bool_, (3, 4)))
def test_prop_bernoulli_log_prob_of_binary_x_is_finite_and_nonpositive(logits, bits):
    lp = VF.bernoulli_log_prob(torch.tensor(logits), torch.tensor(bits, dtype=F64))
    assert torch.isfinite(lp).all() and (lp <= 0).all()


@PROPS
@given(
    idx=arrays(np.int64, (3, 4), elements=st.integers(0, 255)),
    loc=_arr(-5, 5),
    log_scale=_arr(-30, 30),
)
def test_prop_discretized_logistic_log_prob_finite_and_nonpositive(idx, loc, log_scale):
    for dtype in (torch.float32, F64):
        x = torch.tensor(LEVELS[idx], dtype=dtype)
        lp = VF.discretized_logistic_log_prob(
            x, torch.tensor(loc, dtype=dtype), torch.tensor(log_scale, dtype=dtype)
        )
        assert torch.isfinite(lp).all() and (lp <= 0).all()


@PROPS
@given(logits=_arr(-1e4, 1e4), x=_arr(0, 1))
def test_prop_continuous_bernoulli_log_prob_is_finite(logits, x):
    for dtype in (torch.float32, F64):
        lp = VF.continuous_bernoulli_log_prob(
            torch.tensor(logits, dtype=dtype), torch.tensor(x, dtype=dtype)
        )
        assert torch.isfinite(lp).all()


@PROPS
@given(x=_arr(-100, 100), mean=_arr(-100, 100), lv=_arr(-30, 30))
def test_prop_gaussian_and_laplace_log_probs_are_finite(x, mean, lv):
    for dtype in (torch.float32, F64):
        a = [torch.tensor(v, dtype=dtype) for v in (x, mean, lv)]
        assert torch.isfinite(VF.gaussian_log_prob(*a)).all()
        assert torch.isfinite(VF.laplace_log_prob(*a)).all()


@PROPS
@given(t=_arr(-1e4, 1e4, shape=(5, 3)))
def test_prop_log_mean_exp_lies_between_mean_and_max(t):
    got = VF.log_mean_exp(torch.tensor(t), dim=0).numpy()
    # Jensen: mean(t) <= log mean exp(t) <= max(t)
    assert np.all(got <= t.max(0) + 1e-9 * (1 + np.abs(t.max(0))))
    assert np.all(got >= t.mean(0) - 1e-9 * (1 + np.abs(t.mean(0))))


X01 = torch.tensor([[0.0, 0.3, 1.0, 0.5], [1.0, 0.0, 0.9, 0.1], [0.2, 1.0, 0.0, 0.7]], dtype=F64)
XDL = torch.tensor(LEVELS[[[0, 5, 128, 255], [1, 254, 200, 60], [30, 0, 255, 129]]])


GRADCHECK = {
    "kl_normal_std": (VF.kl_normal_std, 2),
    "kl_normal": (VF.kl_normal, 4),
    "gaussian_log_prob": (VF.gaussian_log_prob, 3),
    "laplace_log_prob": (VF.laplace_log_prob, 3),
    "bernoulli_log_prob": (lambda lg: VF.bernoulli_log_prob(lg, X01), 1),
    "continuous_bernoulli_log_prob": (lambda lg: VF.continuous_bernoulli_log_prob(lg, X01), 1),
    "discretized_logistic_log_prob": (
        lambda loc, ls: VF.discretized_logistic_log_prob(XDL, loc, ls),
        2,
    ),
    "log_mean_exp": (lambda t: VF.log_mean_exp(t, 0), 1),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_autograd_gradients_match_finite_differences(name):
    """Autograd gradients equal central finite differences at moderate float64 inputs."""
    fn, n_args = GRADCHECK[name]
    rng = np.random.default_rng(14)
    args = [torch.tensor(rng.normal(size=(3, 4)), requires_grad=True) for _ in range(n_args)]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)
