"""Importance-sampled log-likelihood against exact marginals (closed form and quadrature)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logsumexp
from torch import nn

import vaekit.evaluate as E
from tests.test_objectives import ppca
from vaekit import VAE
from vaekit.likelihoods import Bernoulli
from vaekit.priors import StandardNormal


def _one_latent_bernoulli_model(d: int = 8):
    """z ~ N(0, 1), x_i ~ Bernoulli(sigmoid(a_i tanh(z) + b_i z + c_i)): 1-D z, exact by quadrature."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(d, generator=g, dtype=torch.float64) * 2 for _ in range(3))

    class Decoder(nn.Module):
        def forward(self, z):
            return a * torch.tanh(z) + b * z + c

    enc = nn.Linear(d, 2, dtype=torch.float64)
    with torch.no_grad():  # a broad proposal N(0, 2^2): covers every posterior
        enc.weight.zero_()
        enc.bias.copy_(torch.tensor([0.0, math.log(4.0)]))
    model = VAE(enc, Decoder(), prior=StandardNormal(1), likelihood=Bernoulli()).double()

    def exact(x: np.ndarray) -> np.ndarray:
        z = np.linspace(-12, 12, 48001)
        logits = a.numpy()[:, None] * np.tanh(z) + b.numpy()[:, None] * z + c.numpy()[:, None]
        p = expit(logits)  # [d, Z]
        log_lik = x @ np.log(p) + (1 - x) @ np.log1p(-p)  # [N, Z]
        log_prior = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
        return logsumexp(log_lik + log_prior, axis=1) + np.log(z[1] - z[0])

    return model, exact


def test_log_likelihood_matches_quadrature_on_a_nonlinear_model():
    model, exact = _one_latent_bernoulli_model()
    x = torch.bernoulli(torch.full((20, 8), 0.5, dtype=torch.float64))
    est = E.log_likelihood(model, x, samples=50_000, batch_size=7).numpy()
    truth = exact(x.numpy())
    # Monte Carlo error of the estimate here is ~0.01 nats per example
    np.testing.assert_allclose(est, truth, atol=0.05)
    assert abs((est - truth).mean()) < 0.015


def test_log_likelihood_is_exact_with_the_exact_posterior_whatever_the_chunking(monkeypatch):
    model, x, log_px = ppca(exact=True)
    monkeypatch.setattr(E, "_CHUNK_ELEMENTS", 64)  # forces many chunks of a few samples
    est = E.log_likelihood(model, x, samples=100, batch_size=5).numpy()
    np.testing.assert_allclose(est, log_px(x), atol=1e-9)


@pytest.mark.parametrize("chunk_elements", [64, 1 << 23], ids=["tiny-chunks", "one-chunk"])
def test_log_likelihood_approaches_truth_for_an_inexact_posterior(monkeypatch, chunk_elements):
    model, x, log_px = ppca(exact=False)
    monkeypatch.setattr(E, "_CHUNK_ELEMENTS", chunk_elements)
    est = E.log_likelihood(model, x, samples=5000).numpy()
    truth = log_px(x)
    # per example the estimate is noisy (a few hundredths of a nat here); on average it is
    # a lower bound whose gap is far below the ELBO's (> 0.1 nats per example here)
    assert np.abs(est - truth).max() < 0.3
    assert abs((est - truth).mean()) < 0.03


def test_evaluate_reports_consistent_terms():
    model, x, log_px = ppca(exact=False)
    r = E.evaluate(model, x, samples=2000)
    assert r["nll"] == pytest.approx(-log_px(x).mean(), abs=0.05)
    assert r["elbo"] < -r["nll"]  # the IS estimate is tighter than the ELBO
    assert r["elbo"] == pytest.approx(-(r["rec"] + r["kl"]))
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (x.shape[1] * math.log(2)))
    assert sum(r["kl_per_dim"]) == pytest.approx(r["kl"], rel=1e-6)
    # analytic KL, by hand from the encoder output
    h = model.encoder(x).detach().numpy()
    mu, var = h[:, :2], np.exp(h[:, 2:])
    assert r["kl"] == pytest.approx((0.5 * (var + mu**2 - 1 - np.log(var)).sum(1)).mean(), rel=1e-9)


def test_active_units_counts_dimensions_whose_mean_varies():
    torch.manual_seed(0)
    d, latent = 10, 6
    enc = nn.Linear(d, 2 * latent)
    with torch.no_grad():
        enc.weight[:3].zero_()  # means of dims 0-2 are constant: inactive
        enc.weight[3:latent] *= 5
    model = VAE(enc, nn.Linear(latent, d), prior=StandardNormal(latent))
    x = torch.rand(500, d)
    means = E.posterior_means(model, x).numpy()
    expected = int((np.var(means, axis=0, ddof=1) > 0.01).sum())
    assert E.active_units(torch.tensor(means)) == expected == 3


def test_evaluation_rejects_bad_arguments():
    model, x, _ = ppca()
    with pytest.raises(ValueError, match="samples"):
        E.log_likelihood(model, x, samples=0)
    with pytest.raises(ValueError, match="empty"):
        E.log_likelihood(model, x[:0])
