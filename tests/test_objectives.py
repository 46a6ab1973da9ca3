"""ELBO and IWAE against exact marginal likelihoods and independent estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from vaekit import ELBO, IWAE, VAE
from vaekit.likelihoods import Bernoulli, Gaussian
from vaekit.objectives import CIWAE, MIWAE, log_weights
from vaekit.priors import MixtureOfGaussians, StandardNormal, VampPrior

SIGMA = 0.5


def ppca(d: int = 5, latent: int = 2, exact: bool = True, seed: int = 0):
    """Probabilistic PCA x = W z + b + N(0, sigma^2 I) with orthogonal W columns.

    With W^T W diagonal the exact posterior N(M^-1 W^T (x - b), sigma^2 M^-1),
    M = W^T W + sigma^2 I, is diagonal, so a linear encoder represents it exactly.
    Returns the VAE (float64) and a function x -> exact log p(x) from SciPy.
    """
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(d, latent)))
    s = np.array([2.0, 0.7, 1.3, 0.4][:latent])
    w = u * s
    b = rng.normal(size=d)
    m_diag = s**2 + SIGMA**2
    enc = nn.Linear(d, 2 * latent, dtype=torch.float64)
    dec = nn.Linear(latent, d, dtype=torch.float64)
    with torch.no_grad():
        a = (w / m_diag).T  # M^-1 W^T, [latent, d]
        if not exact:
            a = a + 0.3 * rng.normal(size=a.shape)
        enc.weight.copy_(torch.tensor(np.vstack([a, np.zeros((latent, d))])))
        logvar = np.log(SIGMA**2 / m_diag) + (0.0 if exact else 0.8)
        enc.bias.copy_(torch.tensor(np.concatenate([-a @ b, logvar])))
        dec.weight.copy_(torch.tensor(w))
        dec.bias.copy_(torch.tensor(b))
    model = VAE(enc, dec, prior=StandardNormal(latent), likelihood=Gaussian(scale=SIGMA)).double()
    marginal = stats.multivariate_normal(mean=b, cov=w @ w.T + SIGMA**2 * np.eye(d))

    def log_px(x: torch.Tensor) -> np.ndarray:
        return marginal.logpdf(x.numpy())

    x = torch.tensor(marginal.rvs(size=16, random_state=seed))
    return model, x, log_px


@pytest.mark.parametrize(
    "objective",
    [ELBO(kl="mc"), ELBO(kl="mc", samples=7), IWAE(k=1), IWAE(k=10), IWAE(k=10, estimator="dreg")],
    ids=["elbo-mc", "elbo-mc-7", "iwae-1", "iwae-10", "iwae-10-dreg"],
)
def test_exact_posterior_bound_equals_log_marginal(objective):
    # with q = p(z|x) every importance weight equals p(x): each sampled bound is exact
    model, x, log_px = ppca(exact=True)
    out = objective(model, x)
    np.testing.assert_allclose(
        out.per_example["bound"].detach().numpy(), log_px(x), rtol=0, atol=1e-9
    )


def test_exact_posterior_analytic_elbo_converges_to_log_marginal():
    model, x, log_px = ppca(exact=True)
    torch.manual_seed(0)
    out = ELBO(kl="analytic", samples=4000)(model, x)
    bound = out.per_example["bound"].detach().numpy()
    # rec is a 4000-sample mean; its standard error here is < 0.03 nats
    np.testing.assert_allclose(bound, log_px(x), atol=0.1)


def _closed_form_elbo(model: VAE, x: torch.Tensor) -> np.ndarray:
    """E_q[log p(x|z)] - KL(q || N(0, I)) for the linear-Gaussian decoder, by hand in NumPy."""
    h = model.encoder(x).detach().numpy()
    latent = h.shape[1] // 2
    mu, var = h[:, :latent], np.exp(h[:, latent:])
    w, b = model.decoder.weight.detach().numpy(), model.decoder.bias.detach().numpy()
    resid = x.numpy() - mu @ w.T - b
    trace = (var * (w**2).sum(0)).sum(1)  # tr(W diag(var) W^T)
    d = x.shape[1]
    rec = -0.5 * (d * np.log(2 * np.pi * SIGMA**2) + ((resid**2).sum(1) + trace) / SIGMA**2)
    kl = 0.5 * (var + mu**2 - 1 - np.log(var)).sum(1)
    return rec - kl


def test_inexact_posterior_bounds_are_ordered_and_approach_log_marginal():
    model, x, log_px = ppca(exact=False)
    truth, elbo = log_px(x), _closed_form_elbo(model, x)
    gap = truth - elbo
    assert (gap > 0.1).all(), "an inexact posterior must leave a KL gap"
    torch.manual_seed(1)
    with torch.no_grad():
        sampled = ELBO(kl="analytic", samples=4000)(model, x).per_example["bound"].numpy()
        iwae = {
            k: np.mean(
                [IWAE(k=k)(model, x).per_example["bound"].numpy() for _ in range(800 // k + 20)], 0
            )
            for k in (1, 4, 16, 256)
        }
        iwae[5000] = IWAE(k=5000)(model, x).per_example["bound"].numpy()
    assert sampled.mean() == pytest.approx(elbo.mean(), abs=0.1)
    assert iwae[1].mean() == pytest.approx(elbo.mean(), abs=0.15)
    for small, large in [(1, 4), (4, 16), (16, 256)]:
        assert iwae[small].mean() < iwae[large].mean(), (small, large)
    assert iwae[256].mean() <= truth.mean() + 0.02
    # the remaining gap shrinks roughly like 1/k; at k=5000 it is a small fraction of the ELBO gap
    assert np.abs(truth - iwae[5000]).mean() < 0.1 * gap.mean()


def test_iwae_dominates_elbo_for_the_same_samples():
    # log mean exp >= mean log (Jensen), for every draw and every example
    torch.manual_seed(0)
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(32, 12))
    t = log_weights(model, x, samples=8)
    log_w = t.log_w.detach()
    iwae = torch.logsumexp(log_w, 0) - math.log(8)
    assert (iwae >= log_w.mean(0) - 1e-6).all()


def test_iwae_k1_equals_elbo_mc_with_the_same_draw():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    torch.manual_seed(3)
    a = IWAE(k=1)(model, x)
    torch.manual_seed(3)
    b = ELBO(kl="mc")(model, x)
    for key in ("bound", "rec", "kl"):
        torch.testing.assert_close(a.per_example[key], b.per_example[key])


def test_elbo_terms_signs_and_beta():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    torch.manual_seed(0)
    out1 = ELBO(beta=1.0, reduction="none")(model, x)
    torch.manual_seed(0)
    out4 = ELBO(beta=4.0, reduction="none")(model, x)
    rec, kl = out1.per_example["rec"], out1.per_example["kl"]
    assert (rec > 0).all() and (kl >= 0).all() and (out1.per_example["bound"] < 0).all()
    torch.testing.assert_close(out1.per_example["bound"], -rec - kl)
    torch.testing.assert_close(out4.loss, rec + 4.0 * kl)
    torch.testing.assert_close(out4.per_example["bound"], out1.per_example["bound"])


def test_analytic_kl_matches_closed_form_and_mc_average():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(4, 12))
    h = model.encoder(x).detach().numpy()
    mu, logvar = h[:, :3], h[:, 3:]
    closed = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(1)
    analytic = ELBO(kl="analytic")(model, x).per_example["kl"].detach().numpy()
    np.testing.assert_allclose(analytic, closed, rtol=1e-5)
    torch.manual_seed(0)
    mc = ELBO(kl="mc", samples=20000)(model, x).per_example["kl"].detach().numpy()
    np.testing.assert_allclose(mc, closed, atol=0.05)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reduction_acts_on_batch_axis_only(reduction):
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(6, 12))
    torch.manual_seed(0)
    out = ELBO(reduction=reduction)(model, x)
    per = out.per_example["rec"] + out.per_example["kl"]
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(out.loss, expected)


def test_free_bits_penalty_and_gradient():
    torch.manual_seed(0)
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(16, 12))
    lam = 0.05
    torch.manual_seed(0)
    out = ELBO(free_bits=lam)(model, x)
    h = model.encoder(x).detach().numpy()
    mu, logvar = h[:, :3], h[:, 3:]
    kl_dims = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar)  # [B, D]
    expected = out.per_example["rec"].mean().item() + np.maximum(lam, kl_dims.mean(0)).sum()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # the reported KL is the true KL, not the clamped one
    np.testing.assert_allclose(out.per_example["kl"].detach().numpy(), kl_dims.sum(1), rtol=1e-5)


def test_free_bits_blocks_kl_gradient_below_threshold():
    # lambda above every dimension's KL: the KL term is a constant, so the gradient is the
    # reconstruction gradient alone (beta = 0) for the same draw
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(16, 12))
    grads = []
    for objective in (ELBO(free_bits=100.0), ELBO(beta=0.0)):
        model.zero_grad()
        torch.manual_seed(0)
        objective(model, x).loss.backward()
        grads.append(model.encoder.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    model.zero_grad()
    torch.manual_seed(0)
    ELBO(free_bits=1e-6)(model, x).loss.backward()
    assert not torch.allclose(model.encoder.weight.grad, grads[1])


def test_analytic_kl_without_closed_form_is_a_clear_error():
    model = _bernoulli_model(prior=MixtureOfGaussians(3, 4))
    x = torch.bernoulli(torch.rand(4, 12))
    with pytest.raises(ValueError, match=r"(MixtureSameFamily|DiagonalGaussianMixture).*kl='mc'"):
        ELBO(kl="analytic")(model, x)
    assert torch.isfinite(ELBO(kl="mc")(model, x).loss)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ELBO(beta=-1.0), "beta"),
        (lambda: ELBO(kl="analytical"), "did you mean 'analytic'"),
        (lambda: ELBO(samples=0), "samples"),
        (lambda: ELBO(reduction="avg"), "reduction"),
        (lambda: ELBO(free_bits=0.5, kl="mc"), "free_bits"),
        (lambda: IWAE(k=0), "k must"),
        (lambda: IWAE(k=5, estimator="dreg2"), "did you mean 'dreg'"),
    ],
    ids=["beta<0", "kl-typo", "samples=0", "reduction", "free-bits-mc", "k=0", "estimator"],
)
def test_constructor_rejects_nonsense(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _bernoulli_model(prior=None, latent: int = 3, d: int = 12) -> VAE:
    torch.manual_seed(0)
    enc = nn.Linear(d, 2 * latent)
    dec = nn.Sequential(nn.Linear(latent, 16), nn.Tanh(), nn.Linear(16, d))
    return VAE(enc, dec, prior=prior or StandardNormal(latent), likelihood=Bernoulli())


def _grads(model: VAE, objective, x: torch.Tensor, repeats: int, which: str) -> np.ndarray:
    """Gradient estimates ``[repeats, P]`` of ``objective.loss`` for the encoder or decoder."""
    params = list((model.encoder if which == "encoder" else model.decoder).parameters())
    rows = []
    for _ in range(repeats):
        g = torch.autograd.grad(objective(model, x).loss, params)
        rows.append(torch.cat([t.flatten() for t in g]).numpy())
    return np.stack(rows)


def _assert_same_mean(a: np.ndarray, b: np.ndarray, z: float = 5.0):
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    diff = np.abs(a.mean(0) - b.mean(0))
    assert (diff <= z * se + 1e-6).all(), f"max |diff|/se = {(diff / (se + 1e-12)).max():.2f}"


def _small_gaussian_model() -> tuple[VAE, torch.Tensor]:
    model, x, _ = ppca(d=4, latent=2, exact=False, seed=3)
    return model, x[:1].repeat(8, 1)  # 8 copies: each loss averages 8 independent estimates


@pytest.mark.parametrize(
    "k, estimator, which",
    [(8, "dreg", "encoder"), (8, "dreg", "decoder"), (1, "stl", "encoder"), (8, "stl", "decoder")],
    ids=["dreg-encoder", "dreg-decoder", "stl-k1-encoder", "stl-decoder"],
)
def test_gradient_estimators_are_unbiased(k, estimator, which):
    # STL is unbiased for k = 1 only on the encoder (Tucker et al. 2019); decoder always
    torch.manual_seed(0)
    model, x = _small_gaussian_model()
    a = _grads(model, IWAE(k=k), x, 300, which)
    b = _grads(model, IWAE(k=k, estimator=estimator), x, 300, which)
    _assert_same_mean(a, b)


def test_estimators_report_the_same_loss_value():
    model, x = _small_gaussian_model()
    values = []
    for est in ("standard", "stl", "dreg"):
        torch.manual_seed(5)
        values.append(IWAE(k=16, estimator=est)(model, x).loss.item())
    assert values[0] == pytest.approx(values[1], abs=1e-12) == pytest.approx(values[2], abs=1e-12)


def test_dreg_reduces_encoder_gradient_variance_at_k64():
    torch.manual_seed(0)
    model, x = _small_gaussian_model()
    x = x[:1]
    std = _grads(model, IWAE(k=64), x, 150, "encoder")
    dreg = _grads(model, IWAE(k=64, estimator="dreg"), x, 150, "encoder")
    ratio = dreg.var(0).sum() / std.var(0).sum()
    assert ratio < 0.5, f"DReG / standard encoder gradient variance = {ratio:.3f}"


def test_vampprior_model_trains_with_every_objective():
    torch.manual_seed(0)
    latent, d = 3, 12
    enc = nn.Linear(d, 2 * latent)
    dec = nn.Linear(latent, d)
    from vaekit.posteriors import DiagonalGaussian

    post = DiagonalGaussian()
    model = VAE(enc, dec, posterior=post, prior=VampPrior(enc, post, (d,), components=5))
    x = torch.bernoulli(torch.rand(8, d))
    for objective in (ELBO(kl="mc"), IWAE(k=4), IWAE(k=4, estimator="dreg")):
        model.zero_grad()
        objective(model, x).loss.backward()
        assert model.prior.pseudo_inputs.grad is not None
        assert torch.isfinite(model.prior.pseudo_inputs.grad).all()


def _same_draw(objective, model, x, seed=11):
    torch.manual_seed(seed)
    return objective(model, x).per_example


@pytest.mark.parametrize(
    "left, right",
    [
        (MIWAE(m=1, k=6), IWAE(k=6)),
        (CIWAE(beta=0.0, k=6), IWAE(k=6)),
        (CIWAE(beta=1.0, k=6), ELBO(kl="mc", samples=6)),
    ],
    ids=["miwae-m1-is-iwae", "ciwae-0-is-iwae", "ciwae-1-is-elbo"],
)
def test_iwae_family_special_cases(left, right):
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    torch.testing.assert_close(
        _same_draw(left, model, x)["bound"], _same_draw(right, model, x)["bound"]
    )


def test_miwae_is_the_mean_of_independent_iwae_estimates_by_hand():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(5, 12))
    torch.manual_seed(2)
    log_w = log_weights(model, x, samples=12).log_w.detach().numpy()  # [12, 5]
    groups = log_w.reshape(3, 4, 5)
    by_hand = (np.log(np.exp(groups).mean(1))).mean(0)
    torch.manual_seed(2)
    got = MIWAE(m=3, k=4)(model, x).per_example["bound"].detach().numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_miwae_and_ciwae_sit_between_elbo_and_iwae_on_the_exact_marginal_model():
    model, x, log_px = ppca(exact=False)
    truth = log_px(x).mean()
    torch.manual_seed(0)
    with torch.no_grad():
        est = {
            name: np.mean([obj(model, x).per_example["bound"].mean().item() for _ in range(60)])
            for name, obj in {
                "elbo": ELBO(kl="mc", samples=16),
                "miwae": MIWAE(m=4, k=4),
                "ciwae": CIWAE(beta=0.5, k=16),
                "iwae": IWAE(k=16),
            }.items()
        }
    assert est["elbo"] < est["miwae"] < est["iwae"] <= truth + 0.02
    assert est["elbo"] < est["ciwae"] < est["iwae"]
