"""Flows: densities that integrate to one, log-determinants against brute-force Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

from vaekit import ELBO, IWAE, VAE
from vaekit.evaluate import log_likelihood
from vaekit.flows import FlowPrior, IAFPosterior
from vaekit.likelihoods import Bernoulli
from vaekit.priors import StandardNormal


def _random_flow(dim: int, layers: int = 4, scale: float = 0.5, seed: int = 0) -> FlowPrior:
    """A FlowPrior far from the identity it starts as (its last layers are zero)."""
    torch.manual_seed(seed)
    flow = FlowPrior(dim, layers=layers, hidden=16).double()
    with torch.no_grad():
        for net in flow.nets:
            net.net[-1].weight.normal_(0.0, scale)
            net.net[-1].bias.normal_(0.0, scale)
    return flow


def _compose(transforms, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_det = u.new_zeros(u.shape[:-1])
    for t in transforms:
        z = t(u)
        log_det = log_det + t.log_abs_det_jacobian(u, z)
        u = z
    return u, log_det


def test_untrained_flow_prior_is_the_standard_normal():
    z = torch.randn(10, 3)
    p = FlowPrior(3)()
    assert p.batch_shape == () and p.event_shape == (3,)
    torch.testing.assert_close(p.log_prob(z), StandardNormal(3)().log_prob(z))


@pytest.mark.parametrize("layers", [1, 4])
def test_flow_density_integrates_to_one_on_a_grid(layers):
    p = _random_flow(2, layers=layers)()
    # wide enough that the mass outside is negligible, fine enough for a Riemann sum
    with torch.no_grad():
        far = p.sample((20000,)).abs().max().item()
        lim, n = max(10.0, 1.5 * far), 1201
        g = torch.linspace(-lim, lim, n, dtype=torch.float64)
        zz = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        mass = p.log_prob(zz).exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert mass == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_flow_log_det_matches_a_brute_force_jacobian(dim):
    flow = _random_flow(dim)
    transforms = flow.transforms()
    u = torch.randn(6, dim, dtype=torch.float64)
    _, log_det = _compose(transforms, u)
    for i in range(u.shape[0]):
        jac = jacobian(lambda v: _compose(transforms, v)[0], u[i])
        sign, brute = torch.linalg.slogdet(jac)
        assert sign.item() == 1.0
        assert log_det[i].item() == pytest.approx(brute.item(), abs=1e-10)


def test_flow_inverse_undoes_forward_and_log_prob_is_change_of_variables():
    flow = _random_flow(3)
    p, transforms = flow(), flow.transforms()
    u = torch.randn(50, 3, dtype=torch.float64)
    z, log_det = _compose(transforms, u)
    back = z
    for t in reversed(transforms):
        back = t.inv(back)
    torch.testing.assert_close(back, u, atol=1e-12, rtol=0)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1)
    torch.testing.assert_close(p.log_prob(z), base - log_det)
    s = p.rsample((4, 7))
    assert s.shape == (4, 7, 3) and s.requires_grad  # reparameterised through the flow


def test_flow_scales_are_bounded_per_layer():
    flow = FlowPrior(2, layers=1, max_log_scale=1.5)
    with torch.no_grad():
        flow.nets[0].net[-1].bias.fill_(100.0)  # raw log-scale far beyond the bound
    (t,) = flow.transforms()
    u = torch.randn(5, 2)
    assert t.log_abs_det_jacobian(u, t(u)).max().item() <= 1.5 + 1e-6


def _tiny_vae(prior=None, posterior=None, features=None, latent=2, d=8) -> VAE:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, features or 2 * latent))
    dec = nn.Sequential(nn.Linear(latent, 32), nn.Tanh(), nn.Linear(32, d))
    return VAE(
        enc, dec, prior=prior or StandardNormal(latent), posterior=posterior, likelihood=Bernoulli()
    )


def _toy_data(n: int = 64, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    proto = (torch.rand(4, d, generator=g) > 0.5).float()
    return proto[torch.randint(0, 4, (n,), generator=g)]


def _train(model: VAE, objective, x: torch.Tensor, steps: int = 300) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = objective(model, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_flow_prior_plugs_into_the_vae_and_trains():
    model = _tiny_vae(prior=FlowPrior(2, layers=4, hidden=16))
    x = _toy_data()
    losses = _train(model, ELBO(kl="mc"), x)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 1.0
    assert any(net.net[-1].weight.abs().max() > 0 for net in model.prior.nets)  # prior moved
    log_px = log_likelihood(model, x, samples=64, batch_size=32)
    assert torch.isfinite(log_px).all()
    assert model.sample(5).shape == (5, 8)
    with pytest.raises(ValueError, match=r"TransformedDistribution.*kl='mc'"):
        ELBO(kl="analytic")(model, x)


def test_iaf_log_det_matches_a_brute_force_jacobian():
    torch.manual_seed(0)
    dim, ctx = 4, 3
    iaf = IAFPosterior(dim, steps=3, hidden=16, context=ctx).double()
    with torch.no_grad():  # leave the near-identity start
        for made in iaf.made:
            made.out.weight.normal_(0.0, 0.5)
            made.out.bias.normal_(0.0, 0.5)
    z0 = torch.randn(5, dim, dtype=torch.float64)
    c = torch.randn(5, ctx, dtype=torch.float64)
    _, log_det = iaf.flow(z0, c)
    for i in range(5):
        jac = jacobian(lambda v, ci=c[i]: iaf.flow(v, ci)[0], z0[i])
        sign, brute = torch.linalg.slogdet(jac)
        assert sign.item() == 1.0
        assert log_det[i].item() == pytest.approx(brute.item(), abs=1e-10)
    # one step is autoregressive: its Jacobian is triangular in that step's ordering
    one = IAFPosterior(dim, steps=1, hidden=16).double()
    with torch.no_grad():
        one.made[0].out.weight.normal_(0.0, 0.5)
    jac = jacobian(lambda v: one.flow(v)[0], z0[0])
    torch.testing.assert_close(jac, torch.tril(jac))


def test_iaf_log_prob_of_its_samples_is_base_density_minus_log_det():
    torch.manual_seed(0)
    iaf = IAFPosterior(3, steps=2, hidden=16, context=2).double()
    h = torch.randn(4, iaf.features, dtype=torch.float64)
    q = iaf(h)
    torch.manual_seed(5)
    z = q.rsample((6,))
    assert z.shape == (6, 4, 3) and q.batch_shape == (4,) and q.event_shape == (3,)
    torch.manual_seed(5)
    eps = torch.randn(6, 4, 3, dtype=torch.float64)
    mean, logvar, c = h.split([3, 3, 2], -1)
    z0 = mean + torch.exp(0.5 * logvar) * eps
    z_again, log_det = iaf.flow(z0, c.expand(6, 4, 2))
    torch.testing.assert_close(z, z_again)
    base = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
    torch.testing.assert_close(q.log_prob(z), base - log_det)
    with pytest.raises(ValueError, match="did not draw"):
        q.log_prob(z.clone())


def test_iaf_posterior_trains_with_a_monte_carlo_kl():
    latent, ctx = 2, 4
    model = _tiny_vae(
        posterior=IAFPosterior(latent, steps=2, hidden=16, context=ctx), features=2 * latent + ctx
    )
    x = _toy_data()
    losses = _train(model, ELBO(kl="mc"), x)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    iwae = IWAE(k=8)(model, x).per_example["bound"].detach()
    assert torch.isfinite(iwae).all()
    assert torch.isfinite(log_likelihood(model, x, samples=32, batch_size=32)).all()
    assert model.reconstruct(x[:3]).shape == (3, 8)
    with pytest.raises(ValueError, match=r"kl='mc'"):
        ELBO(kl="analytic")(model, x)
    with pytest.raises(ValueError, match="estimator='standard'"):
        IWAE(k=4, estimator="stl")(model, x)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FlowPrior(0), "dim"),
        (lambda: FlowPrior(2, layers=0), "layers"),
        (lambda: FlowPrior(2, max_log_scale=0.0), "max_log_scale"),
        (lambda: IAFPosterior(2, steps=0), "steps"),
        (lambda: IAFPosterior(2, context=-1), "context"),
        (lambda: IAFPosterior(2, context=1)(torch.zeros(3, 4)), r"2 \* dim \+ context = 5"),
    ],
    ids=["dim", "layers", "bound", "steps", "context", "features"],
)
def test_bad_input_is_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_flow_prior_log_prob_is_finite_for_extreme_z():
    p = _random_flow(2)()
    z = torch.tensor([[1e3, -1e3], [0.0, 50.0]], dtype=torch.float64)
    assert torch.isfinite(p.log_prob(z)).all()
    assert math.isfinite(p.log_prob(torch.zeros(2, dtype=torch.float64)).item())
