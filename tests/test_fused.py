"""The fused ELBO terms against PyTorch's own forms: values, gradients, second derivatives."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from vaekit._fused import bernoulli_logits_log_prob, kl_logvar_standard
from vaekit.likelihoods import Bernoulli
from vaekit.posteriors import DiagonalGaussian, LogvarNormal
from vaekit.priors import StandardNormal, UnitNormal


def _bce_reference(logits, x, nd):
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        tuple(range(-nd, 0))
    )


@pytest.mark.parametrize(
    "lshape, xshape, nd",
    [
        ((5, 7), (5, 7), 1),
        ((3, 5, 7), (5, 7), 1),
        ((4, 1, 3, 3), (4, 1, 3, 3), 3),
        ((2, 4, 6), (4, 6), 2),
    ],
)
def test_bernoulli_log_prob_matches_torch_bce(lshape, xshape, nd):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(lshape, generator=g, dtype=torch.float64)).requires_grad_()
    x = torch.rand(xshape, generator=g, dtype=torch.float64).round()
    got = bernoulli_logits_log_prob(logits, x, nd)
    ref = _bce_reference(logits, x, nd)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(got.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((got * w).sum(), logits)
    (gb,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_bernoulli_log_prob_gradcheck_both_inputs_and_second_order():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    f = lambda a, b: bernoulli_logits_log_prob(a, b, 1)  # noqa: E731
    assert torch.autograd.gradcheck(f, (logits, x))
    assert torch.autograd.gradgradcheck(f, (logits, x))


def test_kl_logvar_standard_matches_torch_registry_and_gradients():
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = (2 * torch.randn(6, 4, generator=g, dtype=torch.float64)).requires_grad_()
    got = kl_logvar_standard(loc, logvar)
    ref = kl_divergence(
        Normal(loc, torch.exp(0.5 * logvar)), Normal(torch.zeros(4, dtype=torch.float64), 1.0)
    )
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(kl_logvar_standard, (loc, logvar))
    assert torch.autograd.gradgradcheck(kl_logvar_standard, (loc, logvar))


def test_registered_kl_is_chosen_and_equals_the_closed_form():
    enc = torch.randn(8, 6, dtype=torch.float64)
    q = DiagonalGaussian()(enc)
    assert isinstance(q.base_dist, LogvarNormal)
    p = StandardNormal(3).double()()
    assert isinstance(p.base_dist, UnitNormal)
    mean, logvar = enc.chunk(2, -1)
    closed = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(-1)
    torch.testing.assert_close(kl_divergence(q, p), closed, rtol=1e-12, atol=1e-12)
    # a plain Normal posterior (no stored log-variance) takes the same closed form
    q2 = Independent(Normal(mean, torch.exp(0.5 * logvar)), 1)
    torch.testing.assert_close(kl_divergence(q2, p), closed, rtol=1e-12, atol=1e-12)
    # an expanded posterior keeps its log-variance
    e = q.base_dist.expand(torch.Size([2, 8, 3]))
    torch.testing.assert_close(e.logvar[1], logvar)


def test_bernoulli_likelihood_uses_the_fused_form_with_mixed_dtypes():
    lik = Bernoulli()
    logits = torch.randn(2, 5, 4, dtype=torch.bfloat16)
    x = torch.rand(5, 4).round()
    got = lik(logits).log_prob(x)
    ref = _bce_reference(logits.float(), x, 2)
    assert got.shape == (2,) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)


def test_kl_never_rounds_below_zero_near_the_prior():
    """float32, v near 0 and m = 0: e^v - 1 - v >= 0 exactly as expm1 gives it (the naive form
    exp(v) - 1 - v rounds to negative values here)."""
    v = torch.linspace(-1e-3, 1e-3, 2001)
    kl = kl_logvar_standard(torch.zeros_like(v), v)
    assert (kl >= 0).all()
    # float32 rounding of expm1(v) - v is ~eps |v| = 1e-10 here; the naive form is off by ~eps = 1e-7
    ref = (torch.expm1(v.double()) - v.double()) / 2
    torch.testing.assert_close(kl.double(), ref, rtol=0, atol=1e-10)
    naive = (torch.exp(v) - 1 - v) / 2
    assert (naive.double() - ref).abs().max() > 1e-9
