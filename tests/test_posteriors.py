"""vaekit.posteriors.DiagonalGaussian against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import kl_divergence

import vaekit
from vaekit.posteriors import LOGVAR_MAX, LOGVAR_MIN, DiagonalGaussian

F64 = torch.float64


def test_splits_mean_first_then_log_variance():
    mean = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])
    logvar = np.array([[0.2, -1.5, 1.0], [-3.0, 0.0, 2.5]])
    q = DiagonalGaussian()(torch.tensor(np.concatenate([mean, logvar], -1)))
    np.testing.assert_allclose(q.mean.numpy(), mean, rtol=1e-15)
    np.testing.assert_allclose(q.variance.numpy(), np.exp(logvar), rtol=1e-14)


@pytest.mark.parametrize(
    "h_shape, batch, event",
    [((6,), (), (3,)), ((4, 6), (4,), (3,)), ((5, 4, 6), (5, 4), (3,))],
    ids=["unbatched", "B", "S_B"],
)
def test_batch_and_event_shapes(h_shape, batch, event):
    q = DiagonalGaussian()(torch.randn(h_shape))
    assert q.batch_shape == batch and q.event_shape == event
    assert q.rsample().shape == batch + event
    assert q.rsample((7,)).shape == (7, *batch, *event)
    assert q.log_prob(q.rsample()).shape == batch


def test_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(4, 5)), rng.uniform(-4, 3, size=(4, 5))
    z = rng.normal(size=(4, 5))
    q = DiagonalGaussian()(torch.tensor(np.concatenate([mean, logvar], -1)))
    got = q.log_prob(torch.tensor(z)).numpy()
    ref_norm = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
    ref_mvn = [
        stats.multivariate_normal(mean[b], np.diag(np.exp(logvar[b]))).logpdf(z[b])
        for b in range(4)
    ]
    np.testing.assert_allclose(got, ref_norm, rtol=1e-12)
    np.testing.assert_allclose(got, ref_mvn, rtol=1e-10)


def test_rsample_is_mean_plus_sigma_eps_and_carries_gradients():
    h = torch.randn(3, 8, dtype=F64, requires_grad=True)
    q = DiagonalGaussian()(h)
    torch.manual_seed(5)
    z = q.rsample()
    torch.manual_seed(5)
    eps = torch.randn(3, 4, dtype=F64)
    mean, logvar = h.detach()[:, :4], h.detach()[:, 4:]
    np.testing.assert_allclose(
        z.detach().numpy(), (mean + torch.exp(0.5 * logvar) * eps).numpy(), rtol=1e-13
    )
    assert z.requires_grad
    z.sum().backward()
    # dz/dmean = 1, dz/dlogvar = 0.5 sigma eps
    np.testing.assert_allclose(h.grad[:, :4].numpy(), np.ones((3, 4)))
    np.testing.assert_allclose(
        h.grad[:, 4:].numpy(), (0.5 * torch.exp(0.5 * logvar) * eps).numpy(), rtol=1e-13
    )


def test_kl_to_standard_normal_matches_closed_form():
    """The kl_divergence registry applies to the returned distribution."""
    rng = np.random.default_rng(1)
    mean, logvar = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    q = DiagonalGaussian()(torch.tensor(np.concatenate([mean, logvar], -1)))
    p = vaekit.priors.StandardNormal(4).double()()
    ref = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(-1)
    np.testing.assert_allclose(kl_divergence(q, p).numpy(), ref, rtol=1e-12)


def test_documented_logvar_bounds():
    assert (LOGVAR_MIN, LOGVAR_MAX) == (-30.0, 30.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_logvar_is_clamped_to_bounds_so_extremes_stay_finite(dtype):
    h = torch.tensor([[0.0, 1.0, -1e3, 1e3]], dtype=dtype, requires_grad=True)
    q = DiagonalGaussian()(h)
    np.testing.assert_allclose(
        q.variance.detach().double().numpy(), np.exp([[-30.0, 30.0]]), rtol=1e-6
    )
    z = q.rsample((3,))
    lp = q.log_prob(z)
    ent = q.entropy()
    assert torch.isfinite(z).all() and torch.isfinite(lp).all() and torch.isfinite(ent).all()
    (lp.sum() + ent.sum()).backward()
    assert torch.isfinite(h.grad).all()
    # value at the clamp equals scipy with variance e^-30 and e^30
    zz = np.array([[1e-8, 1.0]])
    ref = stats.norm.logpdf(zz, [[0.0, 1.0]], np.exp(0.5 * np.array([[-30.0, 30.0]]))).sum(-1)
    got = q.log_prob(torch.tensor(zz, dtype=dtype)).detach().double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("shape", [(4, 5), (7,), (2, 0), ()], ids=["odd", "odd_1d", "empty", "0d"])
def test_bad_encoder_output_shape_raises(shape):
    with pytest.raises(ValueError, match=r"encoder output.*even"):
        DiagonalGaussian()(torch.zeros(shape))


def test_non_finite_encoder_output_raises():
    with pytest.raises(ValueError, match="encoder output"):
        DiagonalGaussian()(torch.tensor([[0.0, float("nan")]]))


def test_latent_dim():
    assert DiagonalGaussian.latent_dim(80) == 40


def test_half_precision_encoder_output_gives_a_float32_posterior():
    """An encoder under bf16 autocast: q(z|x) is built in float32 from the bf16 values, so its
    log-density matches scipy on those values to float32 accuracy."""
    h = (torch.randn(3, 2 * 40) * 0.5).to(torch.bfloat16)
    q = DiagonalGaussian()(h)
    z = torch.randn(3, 40)
    got = q.log_prob(z)
    assert got.dtype == torch.float32 and q.rsample().dtype == torch.float32
    mean, logvar = h.double().numpy()[:, :40], h.double().numpy()[:, 40:]
    ref = stats.norm.logpdf(z.double().numpy(), mean, np.exp(0.5 * logvar)).sum(-1)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5)
