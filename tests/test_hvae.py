"""HVAE: exact marginal of a linear two-layer Gaussian model, estimators, builder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Independent, Normal

from vaekit import ELBO, IWAE
from vaekit.evaluate import evaluate, log_likelihood
from vaekit.likelihoods import Gaussian
from vaekit.models.hvae import HVAE, Merge, TwoLayer, build_hvae
from vaekit.objectives import log_weights
from vaekit.priors import StandardNormal, VampPrior

SIGMA = 0.5
D, D1, D2 = 6, 2, 2


def _linear(n_in: int, n_out: int, weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def linear_hvae(exact: bool = True, seed: int = 0):
    """z2 ~ N(0, I), z1|z2 ~ N(A z2 + a, S1), x|z1,z2 ~ N(B z1 + C z2 + b, sigma^2 I).

    B = U diag(beta) (orthogonal columns) and M = B A + C with columns along eigenvectors of
    Sigma = B S1 B^T + sigma^2 I make both exact posteriors diagonal:
    p(z2|x) by conditioning x = M z2 + B a + b + N(0, Sigma), and
    p(z1|x, z2) by conditioning N(z1; A z2 + a, S1) N(x; B z1 + C z2 + b, sigma^2 I).
    Returns the model (float64, built from the real HVAE with linear parts), data, and
    the exact log p(x) from SciPy.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    beta, s1 = np.array([1.5, 0.8]), np.array([0.7, 1.2])
    b_mat = q[:, :D1] * beta
    s1_cov = np.diag(s1**2)
    a_mat, a_vec = 0.8 * rng.normal(size=(D1, D2)), 0.5 * rng.normal(size=D1)
    m_mat = q[:, [0, 2]] * np.array([1.3, 0.9])
    c_mat = m_mat - b_mat @ a_mat
    b_vec = 0.3 * rng.normal(size=D)
    sigma_x = b_mat @ s1_cov @ b_mat.T + SIGMA**2 * np.eye(D)  # Cov(x | z2)
    inv_sigma_x = np.linalg.inv(sigma_x)

    # p(z2 | x): precision I + M^T Sigma^-1 M, mean K2 (x - B a - b)
    cov2 = np.linalg.inv(np.eye(D2) + m_mat.T @ inv_sigma_x @ m_mat)
    k2 = cov2 @ m_mat.T @ inv_sigma_x
    # p(z1 | x, z2): precision S1^-1 + B^T B / sigma^2, mean Kx x + Kz z2 + k0
    inv_s1 = np.linalg.inv(s1_cov)
    cov1 = np.linalg.inv(inv_s1 + b_mat.T @ b_mat / SIGMA**2)
    kx = cov1 @ b_mat.T / SIGMA**2
    kz = cov1 @ (inv_s1 @ a_mat - b_mat.T @ c_mat / SIGMA**2)
    k0 = cov1 @ (inv_s1 @ a_vec - b_mat.T @ b_vec / SIGMA**2)
    for cov in (cov1, cov2):  # the construction's whole point: diagonal exact posteriors
        np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-12)
    logvar2, logvar1 = np.log(np.diag(cov2)), np.log(np.diag(cov1))
    if not exact:
        k2 = k2 + 0.3 * rng.normal(size=k2.shape)
        kz = kz + 0.3 * rng.normal(size=kz.shape)
        logvar2, logvar1 = logvar2 + 0.5, logvar1 - 0.5

    enc2 = _linear(
        D, 2 * D2, np.vstack([k2, np.zeros((D2, D))]), np.r_[-k2 @ (b_mat @ a_vec + b_vec), logvar2]
    )
    w1 = np.vstack([np.hstack([kx, kz]), np.zeros((D1, D + D2))])
    enc1 = Merge([nn.Identity(), nn.Identity()], _linear(D + D2, 2 * D1, w1, np.r_[k0, logvar1]))
    prior_z1 = _linear(
        D2, 2 * D1, np.vstack([a_mat, np.zeros((D1, D2))]), np.r_[a_vec, np.log(s1**2)]
    )
    dec = Merge(
        [nn.Identity(), nn.Identity()], _linear(D1 + D2, D, np.hstack([b_mat, c_mat]), b_vec)
    )
    model = HVAE(
        enc2,
        enc1,
        prior_z1,
        dec,
        latent_dims=(D1, D2),
        prior=StandardNormal(D2),
        likelihood=Gaussian(scale=SIGMA),
    ).double()
    marginal = stats.multivariate_normal(mean=b_mat @ a_vec + b_vec, cov=m_mat @ m_mat.T + sigma_x)
    x = torch.tensor(marginal.rvs(size=16, random_state=seed))
    return model, x, marginal.logpdf(x.numpy())


@pytest.mark.parametrize(
    "objective",
    [
        ELBO(kl="mc"),
        ELBO(kl="mc", samples=5),
        IWAE(k=1),
        IWAE(k=8),
        IWAE(k=8, estimator="stl"),
        IWAE(k=8, estimator="dreg"),
    ],
    ids=["elbo-mc", "elbo-mc-5", "iwae-1", "iwae-8", "iwae-8-stl", "iwae-8-dreg"],
)
def test_exact_posterior_bound_equals_log_marginal(objective):
    # q(z2|x) q(z1|x,z2) = p(z1,z2|x): every importance weight equals p(x)
    model, x, log_px = linear_hvae(exact=True)
    bound = objective(model, x).per_example["bound"].detach().numpy()
    np.testing.assert_allclose(bound, log_px, rtol=0, atol=1e-9)


def test_every_log_weight_is_exact_and_evaluate_agrees():
    model, x, log_px = linear_hvae(exact=True)
    log_w = log_weights(model, x, samples=32).log_w.detach().numpy()  # [32, B]
    np.testing.assert_allclose(log_w, np.broadcast_to(log_px, log_w.shape), atol=1e-9)
    est = log_likelihood(model, x, samples=20, batch_size=5).numpy()
    np.testing.assert_allclose(est, log_px, atol=1e-9)


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_path_estimators_give_zero_encoder_gradient_at_the_exact_posterior(estimator):
    # log w(z) = log p(x) for every z: its z-path derivative vanishes, so STL / DReG have
    # zero encoder gradient, and only if detached_posterior keeps z2's path into q(z1|x,z2)
    model, x, _ = linear_hvae(exact=True)
    enc = [*model.encoder_z2.parameters(), *model.encoder_z1.parameters()]
    grads = torch.autograd.grad(IWAE(k=4, estimator=estimator)(model, x).loss, enc)
    assert max(g.abs().max().item() for g in grads) < 1e-9
    standard = torch.autograd.grad(IWAE(k=4)(model, x).loss, enc)
    assert max(g.abs().max().item() for g in standard) > 1e-3  # the score term


def test_inexact_posterior_leaves_a_gap_and_iwae_closes_it():
    model, x, log_px = linear_hvae(exact=False)
    with torch.no_grad():
        elbo = np.mean(
            [ELBO(kl="mc", samples=50)(model, x).per_example["bound"].numpy() for _ in range(20)],
            0,
        )
        iwae = {
            k: np.mean([IWAE(k=k)(model, x).per_example["bound"].numpy() for _ in range(20)], 0)
            for k in (4, 64, 1024)
        }
    gap = log_px - elbo
    assert (gap > 0.05).all(), gap.min()
    assert elbo.mean() < iwae[4].mean() < iwae[64].mean() < iwae[1024].mean()
    assert iwae[1024].mean() <= log_px.mean() + 0.02
    assert (log_px - iwae[1024]).mean() < 0.2 * gap.mean()


def test_joint_densities_are_the_sum_of_the_layers_by_hand():
    model, x, _ = linear_hvae(exact=False)
    out = model(x, samples=3)
    z1, z2 = out.z[..., :D1], out.z[..., D1:]
    h2 = model.encoder_z2(x)
    h1 = model.encoder_z1(x, z2)
    hp = model.prior_z1(z2)

    def diag(h, d):
        return Independent(Normal(h[..., :d], torch.exp(0.5 * h[..., d:])), 1)

    log_q = diag(h2, D2).log_prob(z2) + diag(h1, D1).log_prob(z1)
    log_p = Independent(Normal(torch.zeros(D2, dtype=x.dtype), 1.0), 1).log_prob(z2) + diag(
        hp, D1
    ).log_prob(z1)
    torch.testing.assert_close(out.posterior.log_prob(out.z), log_q)
    torch.testing.assert_close(out.posterior.log_prob(out.z.clone()), log_q)  # not the cache
    torch.testing.assert_close(out.prior.log_prob(out.z), log_p)
    assert out.z.shape == (3, 16, D1 + D2)
    assert out.posterior.batch_shape == (16,) and out.posterior.event_shape == (D1 + D2,)


def test_detached_posterior_has_the_same_value_and_z_gradient_but_no_weight_gradient():
    model, x, _ = linear_hvae(exact=False)
    out = model(x, samples=2)
    z = out.z.detach().requires_grad_(True)
    q_fresh = model.encode(x)
    q_stop = model.detached_posterior(out)
    lq, lq_stop = q_fresh.log_prob(z), q_stop.log_prob(z)
    torch.testing.assert_close(lq_stop, lq)
    (gz,) = torch.autograd.grad(lq.sum(), z, retain_graph=True)
    gz_stop, *gw = torch.autograd.grad(
        lq_stop.sum(), [z, *model.encoder_z1.parameters()], allow_unused=True
    )
    torch.testing.assert_close(gz_stop, gz)
    assert all(g is None for g in gw)


def test_analytic_kl_is_a_clear_error():
    model, x, _ = linear_hvae()
    with pytest.raises(ValueError, match=r"TwoLayer.*kl='mc'"):
        ELBO(kl="analytic")(model, x)


def test_linear_plug_in_mean_is_the_exact_posterior_mean():
    # E[z1|x] = E[Kx x + Kz z2 + k0] = Kx x + Kz E[z2|x] + k0: affine, so plug-in is exact
    model, x, _ = linear_hvae(exact=True)
    torch.manual_seed(0)
    z = model.encode(x).sample((200000,))
    torch.testing.assert_close(z.mean(0), model.encode(x).mean, atol=0.01, rtol=0)


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_built_hvae_trains_samples_and_evaluates(prior):
    torch.manual_seed(0)
    shape = (1, 6, 6)
    model = build_hvae(shape, latent_dims=(4, 3), hidden=24, prior=prior, components=7)
    assert isinstance(model.prior, StandardNormal if prior == "standard" else VampPrior)
    x = torch.bernoulli(torch.full((32, *shape), 0.3))
    x[:, :, :3] = 1.0  # structure to learn
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = ELBO(kl="mc")(model, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 2.0
    for objective in (IWAE(k=4), IWAE(k=4, estimator="stl"), IWAE(k=4, estimator="dreg")):
        model.zero_grad()
        objective(model, x).loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

    assert model.sample(5).shape == (5, *shape)
    assert model.reconstruct(x[:3]).shape == (3, *shape)
    assert model.encode(x[:3]).mean.shape == (3, 7)
    nll = -log_likelihood(model, x, samples=64, batch_size=16)
    elbo = ELBO(kl="mc", samples=64)(model, x).per_example["bound"].detach()
    assert torch.isfinite(nll).all()
    assert (-nll).mean() > elbo.mean()
    result = evaluate(model, x, samples=16, batch_size=16)
    assert result["kl"] > 0 and "kl_per_dim" not in result
    assert 0 <= result["active_units"] <= 7


def test_vamp_prior_is_the_top_layer_and_evaluation_reuses_it():
    model = build_hvae((10,), latent_dims=(2, 3), hidden=8, prior="vamp", components=4)
    x = torch.bernoulli(torch.full((5, 10), 0.5))
    pz = model.prior()
    assert pz.event_shape == (3,)
    with torch.no_grad():
        a = model(x, samples=2, prior=pz)
    assert a.prior.top is pz and a.prior.event_shape == (5,)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: build_hvae((4,), latent_dims=(3,)), "latent_dims"),
        (lambda: build_hvae((4,), latent_dims=(3, 0)), "latent_dims"),
        (lambda: build_hvae((4,), prior="vampprior"), "did you mean 'vamp'"),
        (lambda: build_hvae((4,), hidden=0), "hidden"),
        (
            lambda: build_hvae((4,), latent_dims=(2, 2), hidden=4).decode(torch.zeros(3, 5)),
            "D1 \\+ D2",
        ),
        (
            lambda: build_hvae((4,), latent_dims=(2, 2), hidden=4)(torch.zeros(2, 4), samples=0),
            "samples",
        ),
    ],
    ids=["one-dim", "zero-dim", "prior-typo", "hidden", "decode-shape", "samples"],
)
def test_bad_input_is_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_networks_that_disagree_with_latent_dims_are_named():
    model = build_hvae((4,), latent_dims=(2, 3), hidden=4)
    model.latent_dims = (2, 2)
    with pytest.raises(ValueError, match="encoder_z2"):
        model(torch.zeros(2, 4))


def test_two_layer_prior_samples_ancestrally():
    top = Independent(Normal(torch.tensor([3.0]), torch.tensor([0.1])), 1)
    p = TwoLayer(top, lambda z2: Independent(Normal(2.0 * z2, 0.1), 1), dim1=1)
    z = p.sample((4000,))
    assert z.shape == (4000, 2)
    assert z[:, 1].mean().item() == pytest.approx(3.0, abs=0.01)
    assert z[:, 0].mean().item() == pytest.approx(6.0, abs=0.02)
    assert p.mean.tolist() == pytest.approx([6.0, 3.0])
