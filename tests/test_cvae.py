"""CVAE: the ELBO with a label-dependent prior by hand, labels through ``given``, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Normal, kl_divergence

from vaekit import ELBO, IWAE
from vaekit.likelihoods import Gaussian
from vaekit.models import cvae as C
from vaekit.models.cvae import CVAE, LabelEncoding, LabelPrior, build_cvae
from vaekit.models.hvae import Merge
from vaekit.objectives import log_weights
from vaekit.priors import StandardNormal

K, D = 3, 2


def _model(conditional_prior: bool = True, label_embedding: str = "onehot") -> CVAE:
    torch.manual_seed(0)
    model = build_cvae(
        (6,),
        K,
        latent_dim=D,
        hidden=(8,),
        conditional_prior=conditional_prior,
        label_embedding=label_embedding,
    ).double()
    if conditional_prior:
        with torch.no_grad():  # a prior that really depends on the label
            model.prior.label_prior.net.net[-1].weight.normal_(0.0, 0.7)
    return model


def _data(n: int = 9):
    x = torch.bernoulli(torch.full((n, 6), 0.4, dtype=torch.float64))
    y = torch.arange(n) % K
    return x, y


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def test_elbo_equals_the_hand_assembled_formula_with_a_label_prior():
    model, (x, y) = _model(), _data()
    with model.given(y):
        torch.manual_seed(1)
        out = ELBO(kl="analytic")(model, x)
        torch.manual_seed(1)
        z = log_weights(model, x, samples=1).out.z[0]
    c = torch.eye(K, dtype=x.dtype)[y]
    mu_q, logvar_q = _np(model.encoder(x, c)).reshape(-1, 2, D).transpose(1, 0, 2)
    mu_p, logvar_p = _np(model.prior.label_prior.net(c)).reshape(-1, 2, D).transpose(1, 0, 2)
    assert np.abs(mu_p[0] - mu_p[1]).max() > 0.1  # the prior differs between labels
    # KL(N(mu_q, var_q) || N(mu_p, var_p)), summed over latents
    kl = 0.5 * (
        logvar_p - logvar_q + (np.exp(logvar_q) + (mu_q - mu_p) ** 2) / np.exp(logvar_p) - 1
    ).sum(1)
    kl_torch = kl_divergence(
        Normal(torch.tensor(mu_q), torch.tensor(np.exp(0.5 * logvar_q))),
        Normal(torch.tensor(mu_p), torch.tensor(np.exp(0.5 * logvar_p))),
    ).sum(1)
    np.testing.assert_allclose(kl, kl_torch.numpy(), rtol=1e-10)
    logits = _np(model.decoder(z, c))
    log_px = stats.bernoulli.logpmf(_np(x), 1.0 / (1.0 + np.exp(-logits))).sum(1)
    np.testing.assert_allclose(_np(out.per_example["kl"]), kl, rtol=1e-10)
    np.testing.assert_allclose(_np(out.per_example["rec"]), -log_px, rtol=1e-8)
    np.testing.assert_allclose(_np(out.per_example["bound"]), log_px - kl, rtol=1e-8)


def test_unconditional_prior_needs_no_labels_and_gives_the_standard_kl():
    model, (x, y) = _model(conditional_prior=False), _data()
    assert isinstance(model.prior, StandardNormal)
    assert model.prior().event_shape == (D,)
    with model.given(y):
        kl = _np(ELBO(kl="analytic")(model, x).per_example["kl"])
    mu, logvar = (
        _np(model.encoder(x, torch.eye(K, dtype=x.dtype)[y])).reshape(-1, 2, D).transpose(1, 0, 2)
    )
    np.testing.assert_allclose(kl, 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(1), rtol=1e-10)


def test_labels_given_explicitly_and_through_the_context_agree():
    model, (x, y) = _model(label_embedding="embedding"), _data()
    torch.manual_seed(2)
    a = model(x, samples=3, y=y)
    with model.given(y):
        torch.manual_seed(2)
        b = model(x, samples=3)
    torch.testing.assert_close(a.z, b.z)
    torch.testing.assert_close(a.prior.log_prob(a.z), b.prior.log_prob(b.z))
    assert model._given is None  # restored on exit


def test_every_sampled_objective_and_the_likelihood_run_under_given():
    model, (x, y) = _model(), _data()
    with model.given(y):
        for objective in (ELBO(kl="mc"), IWAE(k=4), IWAE(k=4, estimator="dreg")):
            model.zero_grad()
            objective(model, x).loss.backward()
            assert torch.isfinite(model.prior.label_prior.net.net[-1].weight.grad).all()
        elbo = ELBO(kl="analytic", samples=200)(model, x).per_example["bound"].detach()
    log_px = C.log_likelihood(model, x, y, samples=200, batch_size=4)
    assert log_px.shape == (9,)
    assert (log_px >= elbo - 0.05).all()


def test_conditional_samples_follow_the_label():
    # decoder mean = [z | c_y] exactly; p(z|y) with a mean of 4 * (y + 1) per class
    labels = LabelEncoding(K)
    prior = LabelPrior(K, 1)
    with torch.no_grad():
        prior.net.net[-1].weight.zero_()
        prior.net.net[-1].weight[0] = 4.0 * torch.arange(1.0, K + 1)  # mean row
        prior.net.net[-1].bias[1] = np.log(0.01)  # logvar: std 0.1
    eye = nn.Linear(1 + K, 1 + K)
    with torch.no_grad():
        eye.weight.copy_(torch.eye(1 + K))
        eye.bias.zero_()
    model = CVAE(
        Merge([nn.Identity(), nn.Identity()], nn.Linear(1 + K, 2)),
        Merge([nn.Identity(), nn.Identity()], eye),
        labels=labels,
        label_prior=prior,
        likelihood=Gaussian(scale=0.1),
    )
    for label in range(K):
        s = model.sample(500, label=label)
        assert s.shape == (500, 1 + K)
        assert (s[:, 1:].argmax(1) == label).all()
        assert s[:, 0].mean().item() == pytest.approx(4.0 * (label + 1), abs=0.05)
    mixed = model.sample(4, label=torch.tensor([2, 0, 1, 2]))
    assert mixed[:, 1:].argmax(1).tolist() == [2, 0, 1, 2]


def test_sample_and_reconstruct_shapes():
    model, (x, y) = _model(), _data()
    assert model.sample(5, label=1).shape == (5, 6)
    assert model.reconstruct(x, y).shape == (9, 6)
    with model.given(y):
        assert model.encode(x).batch_shape == (9,)
        assert model.prior().batch_shape == (9,)
        assert model.decode(torch.zeros(3, 9, D, dtype=x.dtype)).batch_shape == (3, 9)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: ELBO()(m, x), r"model\.given\(y\)"),
        (lambda m, x, y: m.prior(), r"model\.given\(y\)"),
        (lambda m, x, y: m(x, y=y[:4]), r"shape \[9\]"),
        (lambda m, x, y: m(x, y=y.double()), "integer"),
        (lambda m, x, y: m(x, y=y + K), r"\[0, 2\]"),
        (lambda m, x, y: m.given(y[:, None]).__enter__(), r"shape \[B\]"),
        (lambda m, x, y: m.sample(3, label=torch.tensor([0, 1])), r"shape \[3\]"),
        (lambda m, x, y: m.sample(3, label=K), r"\[0, 2\]"),
    ],
    ids=[
        "no-labels",
        "prior-no-labels",
        "batch-mismatch",
        "float",
        "range",
        "2d",
        "sample-n",
        "sample-range",
    ],
)
def test_bad_labels_are_clear_errors(call, match):
    model, (x, y) = _model(), _data()
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: build_cvae((4,), 1), "num_classes"),
        (lambda: build_cvae((4,), 3, label_embedding="one-hot"), "did you mean 'onehot'"),
        (lambda: LabelEncoding(3, "onehot", dim=5), "kind='embedding'"),
        (lambda: build_cvae((4,), 3, latent_dim=0), "latent_dim"),
        (
            lambda: CVAE(nn.Identity(), nn.Identity(), labels=LabelEncoding(3)),
            "exactly one of prior",
        ),
    ],
    ids=["one-class", "embedding-typo", "onehot-dim", "latent", "no-prior"],
)
def test_bad_configurations_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


class _IgnoreLabels(nn.Module):
    """(a, c) -> net(a): a network that does not see the label."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(a)


def test_conditional_prior_learns_label_dependent_means():
    # encoder and decoder do not see y, so z must carry the class; the learned p(z|y) then
    # moves each class's mean to the centre of that class's posterior means (at the optimum
    # d KL / d mu_y = 0 gives mu_y = mean of E_q[z|x] over class y, for a shared q variance)
    torch.manual_seed(0)
    n = 300
    y = torch.arange(n) % K
    t = torch.tensor([-3.0, 0.0, 3.0])[y] + 0.3 * torch.randn(n)
    w = torch.tensor([[1.0], [0.5], [-0.7], [0.2]])
    x = t[:, None] @ w.T + 0.05 * torch.randn(n, 4)
    model = CVAE(
        _IgnoreLabels(nn.Linear(4, 2)),
        _IgnoreLabels(nn.Linear(1, 4)),
        labels=LabelEncoding(K),
        label_prior=LabelPrior(K, 1),
        likelihood=Gaussian(scale=0.05),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    with model.given(y):
        for _ in range(600):
            loss = ELBO(kl="analytic")(model, x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        q_mean = model.encode(x).mean.detach()[:, 0]
        prior_mean = model.prior(torch.arange(K)).mean.detach()[:, 0]
        prior_std = model.prior(torch.arange(K)).stddev.detach()[:, 0]
    class_mean = torch.stack([q_mean[y == k].mean() for k in range(K)])
    gaps = prior_mean.sort().values.diff()
    assert (gaps > 3 * prior_std.max()).all(), (prior_mean, prior_std)
    torch.testing.assert_close(prior_mean, class_mean, atol=0.1 * gaps.min().item(), rtol=0)
