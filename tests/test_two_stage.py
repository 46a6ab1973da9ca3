"""Two-stage VAE: the second stage fits a known non-Gaussian code distribution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaekit import VAE
from vaekit.likelihoods import Gaussian
from vaekit.models.two_stage import TwoStageSampler, first_stage_codes, fit_second_stage
from vaekit.priors import StandardNormal


def blobs(n: int, seed: int = 0) -> torch.Tensor:
    """Four Gaussian blobs at (+-2, +-2), std 0.3: mean 0, variance 4.09 per axis, no
    correlation, but kurtosis ~1.1 per axis (a Gaussian has 3) and almost no mass near the axes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    return centres[torch.randint(0, 4, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g)


def identity_first_stage(d: int = 2, log_var: float = -20.0) -> VAE:
    """A 'first stage' whose posterior means are the data themselves: E_q[z|x] = x."""
    enc, dec = nn.Linear(d, 2 * d), nn.Linear(d, d)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([torch.eye(d), torch.zeros(d, d)]))
        enc.bias.copy_(torch.cat([torch.zeros(d), torch.full((d,), log_var)]))
        dec.weight.copy_(torch.eye(d))
        dec.bias.zero_()
    return VAE(enc, dec, prior=StandardNormal(d), likelihood=Gaussian(scale=0.01))


def _kurtosis(z: torch.Tensor) -> torch.Tensor:
    return ((z - z.mean(0)) ** 4).mean(0) / z.var(0) ** 2


def test_second_stage_fits_a_non_gaussian_code_distribution():
    codes = blobs(3000)
    first = identity_first_stage()
    before = torch.get_rng_state()
    second = fit_second_stage(first, codes, hidden=(64, 64), epochs=100, lr=3e-3)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left alone
    torch.manual_seed(0)
    z = TwoStageSampler(first, second).latents(20000)
    # moments: decoding the mean of p2(z|u) shrinks each blob a little (var ~3.5 of 4.09)
    torch.testing.assert_close(z.mean(0), codes.mean(0), atol=0.2, rtol=0)
    torch.testing.assert_close(z.var(0), codes.var(0), rtol=0.25, atol=0)
    assert abs(torch.corrcoef(z.T)[0, 1].item()) < 0.1
    # the shape: four modes (a Gaussian with these moments has kurtosis 3 and 38% of its
    # mass within 1 of each axis)
    assert (_kurtosis(codes) < 1.2).all() and (_kurtosis(z) < 1.6).all()
    assert ((z.abs() < 1).float().mean(0) < 0.2).all()
    quadrant = 2 * (z[:, 0] > 0).long() + (z[:, 1] > 0).long()
    quadrants = torch.bincount(quadrant, minlength=4) / len(z)
    torch.testing.assert_close(quadrants, torch.full((4,), 0.25), atol=0.04, rtol=0)


def test_sampler_shapes_and_first_stage_decoding():
    first = identity_first_stage()
    second = fit_second_stage(first, blobs(200), latent_dim=3, hidden=(8,), epochs=1)
    assert second.prior.dim == 3 and not second.training
    sampler = TwoStageSampler(first, second)
    assert sampler.latents(7).shape == (7, 2)
    assert sampler.sample(7).shape == (7, 2)
    assert sampler.sample(7, mean=False, latent_mean=False).shape == (7, 2)


def test_sampled_codes_are_draws_of_the_first_posterior():
    first = identity_first_stage(log_var=2 * torch.log(torch.tensor(0.5)).item())
    x = torch.zeros(4000, 2)
    z = first_stage_codes(first, x)
    assert z.shape == (4000, 2)
    assert z.std(0).tolist() == pytest.approx([0.5, 0.5], abs=0.03)
    second = fit_second_stage(first, x, hidden=(8,), epochs=1, codes="sample")
    assert isinstance(second, VAE)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"codes": "means"}, "did you mean 'mean'"),
        ({"epochs": 0}, "epochs"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"lr": -1.0}, "lr"),
    ],
    ids=["codes", "epochs", "latent", "lr"],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_second_stage(identity_first_stage(), blobs(10), **kwargs)


def test_bad_data_is_a_clear_error():
    with pytest.raises(ValueError, match="data must be"):
        fit_second_stage(identity_first_stage(), [1.0, 2.0])
