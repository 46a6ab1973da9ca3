"""vaekit.priors: log p(z) recomputed by hand from each module's parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import (
    DiagonalGaussianMixture,
    LearnableGaussian,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
)

F64 = torch.float64


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# -- StandardNormal ------------------------------------------------------------------------


@pytest.mark.parametrize("z_shape", [(4,), (5, 4), (2, 3, 4)])
def test_standard_normal_log_prob_matches_scipy(z_shape):
    z = torch.randn(z_shape, dtype=F64) * 2
    got = StandardNormal(4).double()().log_prob(z)
    assert got.shape == z_shape[:-1]
    np.testing.assert_allclose(_np(got), stats.norm.logpdf(z.numpy()).sum(-1), rtol=1e-13)


def test_standard_normal_has_no_parameters():
    assert list(StandardNormal(3).parameters()) == []


# -- LearnableGaussian ---------------------------------------------------------------------


def test_learnable_gaussian_starts_standard_and_matches_scipy():
    prior = LearnableGaussian(3).double()
    z = torch.randn(6, 3, dtype=F64)
    np.testing.assert_allclose(
        _np(prior().log_prob(z)), stats.norm.logpdf(z.numpy()).sum(-1), rtol=1e-13
    )
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=F64))
        prior.log_scale.copy_(torch.tensor([0.3, -0.7, 1.1], dtype=F64))
    ref = stats.norm.logpdf(z.numpy(), [0.5, -1.0, 2.0], np.exp([0.3, -0.7, 1.1])).sum(-1)
    np.testing.assert_allclose(_np(prior().log_prob(z)), ref, rtol=1e-13)


def test_learnable_gaussian_is_trainable():
    prior = LearnableGaussian(4)
    assert {n for n, p in prior.named_parameters() if p.requires_grad} == {"loc", "log_scale"}
    prior().log_prob(torch.randn(8, 4) + 1.0).sum().backward()
    for p in prior.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# -- MixtureOfGaussians ----------------------------------------------------------------------


def _randomise(module: nn.Module, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.tensor(rng.normal(scale=0.7, size=tuple(p.shape))))


@pytest.mark.parametrize("dim, k", [(1, 1), (3, 5), (2, 10)])
def test_mixture_of_gaussians_log_prob_by_hand(dim, k):
    prior = MixtureOfGaussians(dim, components=k).double()
    _randomise(prior, np.random.default_rng(dim * 100 + k))
    z = np.random.default_rng(1).normal(scale=1.5, size=(7, dim))
    mu, s = _np(prior.loc), np.exp(_np(prior.log_scale))  # [K, D]
    log_pi = special.log_softmax(_np(prior.logits))  # [K]
    comp = stats.norm.logpdf(z[:, None, :], mu[None], s[None]).sum(-1)  # [7, K]
    ref = special.logsumexp(log_pi[None] + comp, axis=1)
    got = prior().log_prob(torch.tensor(z))
    np.testing.assert_allclose(_np(got), ref, rtol=1e-12)


def test_mixture_of_gaussians_is_trainable_and_samples():
    prior = MixtureOfGaussians(3, components=4)
    assert {n for n, _ in prior.named_parameters()} == {"loc", "log_scale", "logits"}
    prior().log_prob(torch.randn(10, 3)).sum().backward()
    for p in prior.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert prior().sample((11,)).shape == (11, 3)
    assert prior().sample().shape == (3,)


def test_mixture_of_gaussians_uniform_weights_are_fixed_one_over_k():
    """weights="uniform": (1/K) sum_k N(z | mu_k, sigma_k^2) by hand; no weight parameter, and
    the weights stay 1/K through an optimiser step and a state_dict round trip."""
    prior = MixtureOfGaussians(2, components=3, weights="uniform").double()
    assert {n for n, _ in prior.named_parameters()} == {"loc", "log_scale"}
    _randomise(prior, np.random.default_rng(5))
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    prior().log_prob(torch.randn(9, 2, dtype=F64) + 2.0).sum().neg().backward()
    opt.step()
    z = np.random.default_rng(2).normal(scale=1.5, size=(6, 2))
    mu, s = _np(prior.loc), np.exp(_np(prior.log_scale))
    comp = stats.norm.logpdf(z[:, None, :], mu[None], s[None]).sum(-1)
    ref = special.logsumexp(comp, axis=1) - math.log(3)
    np.testing.assert_allclose(_np(prior().log_prob(torch.tensor(z))), ref, rtol=1e-12)
    again = MixtureOfGaussians(2, components=3, weights="uniform").double()
    again.load_state_dict(prior.state_dict())
    np.testing.assert_allclose(_np(again().log_prob(torch.tensor(z))), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="weights"):
        MixtureOfGaussians(2, components=3, weights="equal")


# -- VampPrior -----------------------------------------------------------------------------


def _vamp(input_shape, k=6, latent=3, input_range=(0.0, 1.0), seed=0):
    torch.manual_seed(seed)
    d_in = math.prod(input_shape)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(d_in, 2 * latent))
    prior = VampPrior(
        encoder, DiagonalGaussian(), input_shape, components=k, input_range=input_range
    ).double()
    with torch.no_grad():  # pseudo-inputs partly outside [0, 1], so the hard-tanh matters
        prior.pseudo_inputs.copy_(torch.rand(k, *input_shape, dtype=F64) * 1.6 - 0.3)
    return prior, encoder


def _vamp_reference(prior, encoder, z, clip):
    """log p(z) = logsumexp_k log q(z | u_k) - log K, by hand from the encoder's weights."""
    linear = encoder[1]
    w, b = _np(linear.weight), _np(linear.bias)
    u = _np(prior.pseudo_inputs).reshape(prior.components, -1)
    if clip is not None:
        u = np.clip(u, *clip)
    h = u @ w.T + b  # [K, 2D]
    d = h.shape[1] // 2
    mean, logvar = h[:, :d], h[:, d:]
    log_q = stats.norm.logpdf(z[:, None, :], mean[None], np.exp(0.5 * logvar)[None]).sum(-1)
    return special.logsumexp(log_q, axis=1) - math.log(prior.components)


@pytest.mark.parametrize("input_shape", [(5,), (1, 2, 3)], ids=["flat", "image"])
@pytest.mark.parametrize("clip", [(0.0, 1.0), None], ids=["hardtanh", "unclipped"])
def test_vamp_prior_log_prob_by_hand(input_shape, clip):
    prior, encoder = _vamp(input_shape, input_range=clip)
    z = np.random.default_rng(2).normal(size=(9, 3))
    got = prior().log_prob(torch.tensor(z))
    np.testing.assert_allclose(_np(got), _vamp_reference(prior, encoder, z, clip), rtol=1e-12)


def test_vamp_prior_gradients_reach_pseudo_inputs_and_encoder():
    prior, encoder = _vamp((5,))
    prior().log_prob(torch.randn(8, 3, dtype=F64)).sum().backward()
    u, g = _np(prior.pseudo_inputs), _np(prior.pseudo_inputs.grad)
    inside = (u > 0) & (u < 1)
    assert np.all(g[~inside] == 0)  # hard-tanh: no gradient where the input is clipped
    assert np.all(g[inside] != 0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_vamp_prior_init_from_data_picks_distinct_rows():
    data = torch.arange(20 * 4, dtype=torch.float32).reshape(20, 1, 2, 2) / 80.0
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    prior = VampPrior(encoder, DiagonalGaussian(), (1, 2, 2), components=7, init=data)
    u = prior.pseudo_inputs.detach()
    assert u.shape == (7, 1, 2, 2)
    rows = data.reshape(20, -1)
    matches = [int(torch.nonzero((rows == r).all(1)).squeeze()) for r in u.reshape(7, -1)]
    assert len(set(matches)) == 7
    assert prior.pseudo_inputs.requires_grad


def test_vamp_prior_random_init_and_samples():
    prior, _ = _vamp((5,), k=4)
    fresh = VampPrior(nn.Linear(5, 6), DiagonalGaussian(), (5,), components=50)
    u = fresh.pseudo_inputs.detach()
    assert u.shape == (50, 5)
    assert abs(u.mean().item() - 0.05) < 0.01 and 0.005 < u.std().item() < 0.02
    dist = prior()
    assert dist.batch_shape == () and dist.event_shape == (3,)
    assert dist.sample((13,)).shape == (13, 3)


@pytest.mark.parametrize(
    "init, pattern",
    [
        (torch.zeros(3, 5), r"init data.*\[N >= 4"),  # fewer rows than components
        (torch.zeros(10, 6), r"init data"),  # wrong input shape
        ("kmeans", r"init must be"),
    ],
    ids=["too_few_rows", "wrong_shape", "unknown_string"],
)
def test_vamp_prior_bad_init_raises(init, pattern):
    with pytest.raises(ValueError, match=pattern):
        VampPrior(nn.Linear(5, 6), DiagonalGaussian(), (5,), components=4, init=init)


# -- shapes and invalid dimensions ------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: StandardNormal(3), lambda: LearnableGaussian(3), lambda: MixtureOfGaussians(3, 4)],
    ids=["standard", "learnable", "mog"],
)
def test_sample_shapes(make):
    dist = make()()
    assert dist.batch_shape == () and dist.event_shape == (3,)
    assert dist.sample((6,)).shape == (6, 3)
    assert dist.sample((2, 6)).shape == (2, 6, 3)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
@pytest.mark.parametrize(
    "make, arg",
    [
        (StandardNormal, "dim"),
        (LearnableGaussian, "dim"),
        (MixtureOfGaussians, "dim"),
        (lambda c: MixtureOfGaussians(3, components=c), "components"),
        (
            lambda c: VampPrior(nn.Linear(5, 6), DiagonalGaussian(), (5,), components=c),
            "components",
        ),
    ],
    ids=["standard_dim", "learnable_dim", "mog_dim", "mog_components", "vamp_components"],
)
def test_invalid_dimensions_raise(make, arg, bad):
    with pytest.raises(ValueError, match=rf"{arg} must be a positive integer"):
        make(bad)


# -- DiagonalGaussianMixture: the matmul log-density ------------------------------------------


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 3.0])
def test_diagonal_mixture_float32_matches_scipy_with_small_scales_and_far_means(sigma):
    # the expansion z^2 w - 2 z mu w + mu^2 w cancels badly in float32 when |z - mu| << |mu|
    # and sigma is small; the float64 products must still agree with scipy to ~1e-5 nats
    g = torch.Generator().manual_seed(3)
    c, d, n = 7, 5, 11
    loc = 20.0 + torch.randn(c, d, generator=g)
    scale = sigma * (0.5 + torch.rand(c, d, generator=g))
    logits = torch.randn(c, generator=g)
    z = loc[torch.randint(0, c, (n,), generator=g)] + scale[0] * torch.randn(n, d, generator=g)
    got = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    assert got.dtype == torch.float32 and got.shape == (n,)
    l64, s64, z64 = loc.double().numpy(), scale.double().numpy(), z.double().numpy()
    log_pi = torch.log_softmax(logits.double(), 0).numpy()
    comp = np.stack([stats.norm.logpdf(z64, l64[k], s64[k]).sum(-1) for k in range(c)], axis=-1)
    want = special.logsumexp(comp + log_pi, axis=-1)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-6, atol=1e-4)


def test_diagonal_mixture_gradients_match_the_broadcast_form():
    g = torch.Generator().manual_seed(4)
    loc = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    log_scale = (0.3 * torch.randn(6, 3, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    fast = DiagonalGaussianMixture(logits, loc, log_scale.exp()).log_prob(z)
    slow = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(loc, log_scale.exp()), 1),
    ).log_prob(z)
    assert fast.shape == (2, 5)
    torch.testing.assert_close(fast, slow)
    gf = torch.autograd.grad(fast.sum(), (loc, log_scale, logits, z))
    gs = torch.autograd.grad(slow.sum(), (loc, log_scale, logits, z))
    for a, b in zip(gf, gs, strict=True):
        torch.testing.assert_close(a, b)


def test_mixture_priors_use_the_matmul_form():
    assert isinstance(MixtureOfGaussians(3, 4)(), DiagonalGaussianMixture)
    enc = torch.nn.Linear(4, 6)
    assert isinstance(
        VampPrior(enc, DiagonalGaussian(), (4,), components=5)(), DiagonalGaussianMixture
    )
