"""vaekit.likelihoods: layouts, shapes and values against SciPy / NumPy references.

Parameters are split into blocks here with ``np.split`` along the channel axis (the
documented layout: ``n`` consecutive blocks of ``C`` channels), and every log-density is
recomputed with SciPy, so the module's own reshaping is checked rather than reused.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from scipy import special, stats

import vaekit
from vaekit import likelihoods as L

F64 = torch.float64
LEVELS = np.linspace(-1.0, 1.0, 256)
H = 1.0 / 255.0

FACTORIES = {
    "bernoulli": L.Bernoulli,
    "continuous_bernoulli": L.ContinuousBernoulli,
    "gaussian_fixed": lambda: L.Gaussian(0.3),
    "gaussian_learned": lambda: L.Gaussian("learned"),
    "gaussian_optimal": lambda: L.Gaussian("optimal"),
    "laplace_fixed": lambda: L.Laplace(0.5),
    "laplace_learned": lambda: L.Laplace("learned"),
    "discretized_logistic": L.DiscretizedLogistic,
    "discretized_logistic_mixture_3": lambda: L.DiscretizedLogisticMixture(3),
    "categorical": L.Categorical,
}
N_PARAMS = {
    "bernoulli": 1,
    "continuous_bernoulli": 1,
    "gaussian_fixed": 1,
    "gaussian_learned": 2,
    "gaussian_optimal": 1,
    "laplace_fixed": 1,
    "laplace_learned": 2,
    "discretized_logistic": 2,
    "discretized_logistic_mixture_3": 9,
    "categorical": 256,
}
NAMES = list(FACTORIES)
EVENT_SHAPES = {"flat": (6,), "image": (2, 3, 2)}


def make_x(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Data in the likelihood's support."""
    if name == "bernoulli":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    if name == "continuous_bernoulli":
        return rng.uniform(size=shape)
    if name.startswith("discretized"):
        return LEVELS[rng.integers(0, 256, size=shape)]
    if name == "categorical":
        return rng.integers(0, 256, size=shape) / 255.0
    return rng.normal(size=shape)


def make_params(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    p = rng.normal(size=shape)
    if name.startswith("discretized"):
        p = 0.8 * p  # locs near the data, log-scales around e^-1 .. e^1
    return p


# -- independent references -------------------------------------------------------------


def _logistic_log_mass(x, loc, scale):
    """log mass of each discretized-logistic bin from scipy's CDF; edges take the tails."""
    upper = stats.logistic.cdf(x + H, loc, scale)
    lower = stats.logistic.cdf(x - H, loc, scale)
    sf_diff = stats.logistic.sf(x - H, loc, scale) - stats.logistic.sf(x + H, loc, scale)
    mass = np.where(x > loc, sf_diff, upper - lower)
    mass = np.where(x < -1 + H, upper, mass)
    mass = np.where(x > 1 - H, stats.logistic.sf(x - H, loc, scale), mass)
    return np.log(mass)


def _cb_log_density(logits, x):
    lam = special.expit(logits)
    y = 1.0 - 2.0 * lam
    safe = np.where(np.abs(y) < 1e-8, 0.5, y)
    c = np.where(np.abs(y) < 1e-8, 2.0, 2.0 * np.arctanh(safe) / safe)
    return np.log(c) + x * np.log(lam) + (1.0 - x) * np.log1p(-lam)


def reference_elementwise(name: str, params: np.ndarray, x: np.ndarray, ch_axis: int):
    """Elementwise log p(x) in float64, params split into blocks along ``ch_axis``."""
    n = N_PARAMS[name]
    blocks = np.split(params, n, axis=ch_axis)
    if name == "bernoulli":
        return stats.bernoulli.logpmf(x, special.expit(params))
    if name == "continuous_bernoulli":
        return _cb_log_density(params, x)
    if name == "gaussian_fixed":
        return stats.norm.logpdf(x, params, 0.3)
    if name == "gaussian_learned":
        return stats.norm.logpdf(x, blocks[0], np.exp(np.clip(blocks[1], -7, 7)))
    if name == "gaussian_optimal":
        sigma = max(math.sqrt(np.mean((x - params) ** 2)), math.exp(-6.0))
        return stats.norm.logpdf(x, params, sigma)
    if name == "laplace_fixed":
        return stats.laplace.logpdf(x, params, 0.5)
    if name == "laplace_learned":
        return stats.laplace.logpdf(x, blocks[0], np.exp(np.clip(blocks[1], -7, 7)))
    if name == "discretized_logistic":
        return _logistic_log_mass(x, blocks[0], np.exp(np.maximum(blocks[1], -7)))
    if name == "discretized_logistic_mixture_3":
        logits, locs, log_scales = blocks[0:3], blocks[3:6], blocks[6:9]
        log_pi = special.log_softmax(np.stack(logits), axis=0)
        log_mass = np.stack(
            [
                _logistic_log_mass(x, m, np.exp(np.maximum(s, -7)))
                for m, s in zip(locs, log_scales, strict=True)
            ]
        )
        return special.logsumexp(log_pi + log_mass, axis=0)
    if name == "categorical":
        log_p = special.log_softmax(np.stack(blocks, axis=-1), axis=-1)  # [..., levels]
        level = np.rint(x * 255).astype(np.int64)
        return np.take_along_axis(log_p, level[..., None], axis=-1)[..., 0]
    raise AssertionError(name)


def reference_log_prob(name, params, x, event_ndim):
    """Per-example reference: elementwise log-density summed over the event axes."""
    ch_axis = params.ndim - event_ndim
    x = np.broadcast_to(x, params.shape[:ch_axis] + x.shape[x.ndim - event_ndim :])
    lp = reference_elementwise(name, params, x, ch_axis)
    return lp.sum(axis=tuple(range(-event_ndim, 0)))


# -- param_shape ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "x_shape, channel_axis",
    [((784,), 0), ((5, 784), 1), ((1, 28, 28), 0), ((5, 1, 28, 28), 1)],
    ids=["D", "B_D", "C_H_W", "B_C_H_W"],
)
def test_param_shape_multiplies_the_channel_axis(name, x_shape, channel_axis):
    expected = list(x_shape)
    expected[channel_axis] *= N_PARAMS[name]
    assert FACTORIES[name]().param_shape(x_shape) == tuple(expected)


def test_param_shape_rejects_empty_shape():
    with pytest.raises(ValueError, match="x_shape"):
        L.Bernoulli().param_shape(())


# -- values and shapes --------------------------------------------------------------------


@pytest.mark.parametrize("event", list(EVENT_SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_matches_reference(name, event):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{event}".encode()))
    lik = FACTORIES[name]()
    event_shape = EVENT_SHAPES[event]
    x = make_x(name, (3, *event_shape), rng)
    params = make_params(name, lik.param_shape(x.shape), rng)
    dist = lik(torch.tensor(params))
    assert dist.batch_shape == (3,) and dist.event_shape == event_shape
    got = dist.log_prob(torch.tensor(x))
    assert got.shape == (3,) and got.dtype == F64
    ref = reference_log_prob(name, params, x, len(event_shape))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("x_has_sample_axis", [False, True], ids=["x_B", "x_S_B"])
@pytest.mark.parametrize("event", list(EVENT_SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_with_leading_sample_axis(name, event, x_has_sample_axis):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{event}/{x_has_sample_axis}".encode()))
    lik = FACTORIES[name]()
    event_shape = EVENT_SHAPES[event]
    x = make_x(name, ((4, 3) if x_has_sample_axis else (3,)) + event_shape, rng)
    params = make_params(name, (4, *lik.param_shape((3, *event_shape))), rng)  # [S, B, ...]
    dist = lik(torch.tensor(params), event_ndim=len(event_shape))
    assert dist.batch_shape == (4, 3) and dist.event_shape == event_shape
    got = dist.log_prob(torch.tensor(x))
    assert got.shape == (4, 3)
    ref = reference_log_prob(name, params, x, len(event_shape))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9)


def test_gaussian_learned_reads_mean_block_first():
    """[B, 2C, H, W] = [mean | log-scale] on the channel axis, not interleaved."""
    mean = np.arange(2 * 2 * 3 * 3, dtype=np.float64).reshape(2, 2, 3, 3) / 10.0
    log_scale = -np.ones_like(mean)
    params = torch.tensor(np.concatenate([mean, log_scale], axis=1))
    dist = L.Gaussian("learned")(params)
    np.testing.assert_allclose(dist.mean.numpy(), mean)
    x = np.zeros_like(mean)
    ref = stats.norm.logpdf(x, mean, math.exp(-1)).reshape(2, -1).sum(1)
    np.testing.assert_allclose(dist.log_prob(torch.tensor(x)).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("family", ["gaussian", "laplace"])
def test_learned_log_scale_is_clamped_to_documented_bounds(family):
    lik = L.Gaussian("learned") if family == "gaussian" else L.Laplace("learned")
    dist_ref = stats.norm if family == "gaussian" else stats.laplace
    mean = np.array([[0.1, -0.2]])
    log_scale = np.array([[30.0, -30.0]])
    x = np.array([[0.5, -0.2 + 1e-4]])
    got = lik(torch.tensor(np.concatenate([mean, log_scale], 1))).log_prob(torch.tensor(x))
    ref = dist_ref.logpdf(x, mean, np.exp([[7.0, -7.0]])).sum(1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def test_categorical_level_is_round_x_times_255():
    rng = np.random.default_rng(8)
    params = rng.normal(size=(2, 256 * 3))
    levels = np.array([[0, 37, 255], [128, 1, 254]])
    # x slightly off the grid still maps to round(x * 255)
    x = levels / 255.0 + rng.uniform(-0.4, 0.4, size=levels.shape) / 255.0
    x = np.clip(x, 0.0, 1.0)
    blocks = np.stack(np.split(params, 256, axis=1), axis=-1)  # [B, D, 256]
    log_p = special.log_softmax(blocks, axis=-1)
    ref = np.take_along_axis(log_p, levels[..., None], -1)[..., 0].sum(1)
    dist = L.Categorical()(torch.tensor(params))
    np.testing.assert_allclose(dist.log_prob(torch.tensor(x)).numpy(), ref, rtol=1e-12)
    # integer levels give the same numbers
    np.testing.assert_allclose(dist.log_prob(torch.tensor(levels)).numpy(), ref, rtol=1e-12)


# -- Gaussian with optimal sigma ------------------------------------------------------------


def test_gaussian_optimal_uses_batch_mse_as_variance():
    rng = np.random.default_rng(9)
    x, mean = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    sigma = math.sqrt(np.mean((x - mean) ** 2))  # one sigma for the whole batch
    got = L.Gaussian("optimal")(torch.tensor(mean)).log_prob(torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), stats.norm.logpdf(x, mean, sigma).sum(1), rtol=1e-12)


def test_gaussian_optimal_gradient_treats_sigma_as_constant():
    """d/d mean sum log N(x | mean, sigma*) = (x - mean) / sigma*^2 (= the total derivative)."""
    rng = np.random.default_rng(10)
    x, mean = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    m = torch.tensor(mean, requires_grad=True)
    L.Gaussian("optimal")(m).log_prob(torch.tensor(x)).sum().backward()
    sigma2 = np.mean((x - mean) ** 2)
    np.testing.assert_allclose(m.grad.numpy(), (x - mean) / sigma2, rtol=1e-10)


def test_gaussian_optimal_sigma_has_a_floor():
    """A perfect reconstruction would give sigma = 0: log-sigma is floored at -6."""
    x = np.full((2, 3), 0.25)
    got = L.Gaussian("optimal")(torch.tensor(x)).log_prob(torch.tensor(x))
    ref = stats.norm.logpdf(x, x, math.exp(-6.0)).sum(1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


def _sigma_vae(seed: int = 0) -> vaekit.VAE:
    from torch import nn

    from vaekit.priors import StandardNormal

    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    dec = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 6))
    return vaekit.VAE(enc, dec, prior=StandardNormal(2), likelihood=L.Gaussian("optimal"))


def test_gaussian_optimal_sample_of_a_fresh_output_uses_the_sigma_recorded_in_training():
    """sigma-VAE: a training-mode log_prob records sigma*^2 = mean((x - mean)^2); a
    distribution built later from a fresh decoder output (no data) samples with that sigma,
    not with sigma = 0 (which returned the mean itself)."""
    rng = np.random.default_rng(13)
    x, mean = rng.normal(size=(8, 5)), 0.7 * rng.normal(size=(8, 5))
    sigma = math.sqrt(np.mean((x - mean) ** 2))  # the closed form, computed independently
    lik = L.Gaussian("optimal")
    lik(torch.tensor(mean, requires_grad=True)).log_prob(torch.tensor(x))  # a training step
    assert lik.variance.item() == pytest.approx(sigma**2, rel=1e-6)
    fresh = torch.tensor(rng.normal(size=(3, 5)))
    dist = lik(fresh)
    torch.manual_seed(0)
    s = dist.sample((20000,))
    assert s.shape == (20000, 3, 5)
    assert not torch.allclose(s[0], fresh)
    np.testing.assert_allclose(s.mean(0).numpy(), fresh.numpy(), atol=0.05 * sigma)
    assert (s - fresh).std().item() == pytest.approx(sigma, rel=0.01)
    assert dist.stddev.shape == (3, 5)
    np.testing.assert_allclose(dist.stddev.numpy(), sigma, rtol=1e-6)
    torch.testing.assert_close(dist.mean, fresh)


def test_gaussian_optimal_records_sigma_only_in_training_with_gradients():
    """Like RunningGaussian: eval mode or torch.no_grad (validation, test NLL) leave the
    recorded sigma alone; log_prob itself always uses its batch's own sigma*."""
    rng = np.random.default_rng(14)
    x, mean = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    lik = L.Gaussian("optimal")
    lik(torch.tensor(mean)).log_prob(torch.tensor(x))
    recorded = lik.variance.item()
    lik.eval()
    got = lik(torch.tensor(mean)).log_prob(torch.tensor(3 * x))
    sigma3 = math.sqrt(np.mean((3 * x - mean) ** 2))
    np.testing.assert_allclose(got.numpy(), stats.norm.logpdf(3 * x, mean, sigma3).sum(1))
    lik.train()
    with torch.no_grad():
        lik(torch.tensor(mean)).log_prob(torch.tensor(3 * x))
    assert lik.variance.item() == recorded


def test_gaussian_optimal_untrained_sample_raises_naming_scale_and_variance():
    """No data seen in training: there is no optimal sigma to sample with."""
    lik = L.Gaussian("optimal")
    dist = lik(torch.zeros(2, 4))
    for draw in (dist.sample, lambda: dist.stddev):
        with pytest.raises(ValueError, match=r"scale=.optimal.*variance"):
            draw()
    lik.eval()  # an eval-mode log_prob does not record one either
    dist.log_prob(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"scale=.optimal"):
        dist.sample()
    torch.testing.assert_close(dist.mean, torch.zeros(2, 4))  # the mean needs no sigma


def test_sigma_vae_model_samples_with_the_trained_sigma_and_keeps_it_in_its_state_dict():
    model = _sigma_vae()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    px = model.decode(model.encode(x).rsample())  # the forward of a training step
    px.log_prob(x).mean().neg().backward()
    sigma = (x - px.mean.detach()).square().mean().sqrt().item()  # independently

    def noise_std(m: vaekit.VAE) -> float:
        torch.manual_seed(5)
        means = m.sample(4000)
        torch.manual_seed(5)  # the same z: the draws differ from the means by the noise only
        draws = m.sample(4000, mean=False)
        assert not torch.equal(draws, means)
        return (draws - means).std().item()

    assert noise_std(model) == pytest.approx(sigma, rel=0.02)
    state = model.state_dict()
    assert state["likelihood.variance"].item() == pytest.approx(sigma**2, rel=1e-5)
    restored = _sigma_vae(seed=3)
    restored.load_state_dict(state)
    assert restored.likelihood.variance.item() == state["likelihood.variance"].item()
    assert noise_std(restored) == pytest.approx(sigma, rel=0.02)


def test_sigma_vae_state_dict_from_before_the_recorded_sigma_still_loads():
    """Checkpoints written before sigma was recorded lack the buffer: they load, and sampling
    then asks for a sigma instead of returning the mean."""
    old = {k: v for k, v in _sigma_vae().state_dict().items() if k != "likelihood.variance"}
    model = _sigma_vae(seed=2)
    model.likelihood.variance.fill_(0.5)
    model.load_state_dict(old)  # strict
    assert model.likelihood.variance.item() == 0.0  # none recorded, not the 0.5 it had
    with pytest.raises(ValueError, match="variance"):
        model.sample(2, mean=False)
    assert model.sample(2).shape == (2, 6)


@pytest.mark.parametrize("make", [lambda: L.Gaussian("optimal"), L.RunningGaussian])
def test_shared_variance_buffer_stays_finite_on_a_finite_batch_that_overflows(make):
    """(x - mean)^2 of finite float32 values can overflow to inf: the recorded variance stays
    finite (at most the largest float), and a NaN mean (validation off) leaves it unchanged."""
    lik = make()
    x = torch.zeros(2, 3)
    lik(torch.full((2, 3), 0.5)).log_prob(x)
    before = lik.variance.item()
    with vaekit.validation(False):
        lik(torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])).log_prob(x)
        assert lik.variance.item() == before
    lik(torch.full((2, 3), 1e30)).log_prob(x)  # finite, but 1e60 overflows float32
    v = lik.variance
    assert torch.isfinite(v) and v.item() >= 1e36
    lik(torch.full((2, 3), 0.5)).log_prob(x)  # and later batches keep it finite
    assert torch.isfinite(lik.variance)
    assert torch.isfinite(lik(torch.zeros(2, 3)).log_prob(x)).all()


# -- discretized logistic mixture -------------------------------------------------------------


@pytest.mark.parametrize("event", list(EVENT_SHAPES))
def test_mixture_with_one_component_equals_discretized_logistic(event):
    rng = np.random.default_rng(11)
    event_shape = EVENT_SHAPES[event]
    x = torch.tensor(make_x("discretized_logistic", (3, *event_shape), rng))
    loc_scale = rng.normal(size=(3, 2 * event_shape[0], *event_shape[1:]))
    logits = rng.normal(size=(3, event_shape[0], *event_shape[1:]))
    single = L.DiscretizedLogistic()(torch.tensor(loc_scale)).log_prob(x)
    mix_params = torch.tensor(np.concatenate([logits, loc_scale], axis=1))
    mixture = L.DiscretizedLogisticMixture(1)(mix_params).log_prob(x)
    np.testing.assert_allclose(mixture.numpy(), single.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "name, n",
    [("discretized_logistic", 2), ("discretized_logistic_mixture_3", 9), ("categorical", 256)],
)
def test_discrete_masses_over_all_levels_sum_to_one_per_pixel(name, n):
    rng = np.random.default_rng(12)
    params = torch.tensor(2.0 * rng.normal(size=(5, n)))  # 5 pixels, each its own example
    values = LEVELS if name.startswith("discretized") else np.arange(256) / 255.0
    x = torch.tensor(values).reshape(256, 1, 1)  # every level against every pixel
    lp = FACTORIES[name]()(params).log_prob(x)
    assert lp.shape == (256, 5)
    np.testing.assert_allclose(torch.logsumexp(lp, 0).numpy(), np.zeros(5), atol=1e-12)


# -- samples -------------------------------------------------------------------------------


def _in_support(name: str, s: np.ndarray) -> bool:
    if name == "bernoulli":
        return bool(np.all((s == 0) | (s == 1)))
    if name == "continuous_bernoulli":
        return bool(np.all((s >= 0) & (s <= 1)))
    if name.startswith("discretized"):
        k = (s + 1.0) * 127.5
        return bool(np.all((s >= -1) & (s <= 1)) and np.allclose(k, np.rint(k), atol=1e-4))
    if name == "categorical":
        k = s * 255.0
        return bool(np.all((s >= 0) & (s <= 1)) and np.allclose(k, np.rint(k), atol=1e-4))
    return bool(np.all(np.isfinite(s)))


@pytest.mark.parametrize("name", NAMES)
def test_samples_lie_in_the_support(name):
    lik = FACTORIES[name]()
    params = 3.0 * torch.randn(lik.param_shape((4, 2, 3, 3)))
    if name == "gaussian_optimal":  # samples use the sigma recorded by a training log_prob
        lik(params).log_prob(params + torch.randn_like(params))
    dist = lik(params)
    s = dist.sample((5,))
    assert s.shape == (5, 4, 2, 3, 3)
    assert _in_support(name, s.double().numpy())
    assert torch.isfinite(dist.log_prob(s)).all()  # a sample is legal data
    assert dist.sample().shape == (4, 2, 3, 3)


# -- extreme legal parameters --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_extreme_params_give_finite_log_prob_and_gradients(name):
    lik = FACTORIES[name]()
    rng = np.random.default_rng(13)
    shape = lik.param_shape((4, 10))
    values = np.array([-1e4, -30.0, -1e-3, 0.0, 1e-3, 30.0, 1e4], dtype=np.float32)
    params = torch.tensor(rng.choice(values, size=shape), requires_grad=True)
    x = torch.tensor(make_x(name, (4, 10), rng), dtype=torch.float32)
    lp = lik(params).log_prob(x)
    assert torch.isfinite(lp).all(), lp
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()


# -- errors --------------------------------------------------------------------------------

SUPPORT_ERRORS = {
    "bernoulli_0_255": ("bernoulli", np.full((2, 4), 255.0)),
    "bernoulli_nan": ("bernoulli", np.full((2, 4), np.nan)),
    "continuous_bernoulli_negative": ("continuous_bernoulli", np.full((2, 4), -0.5)),
    "gaussian_nan": ("gaussian_fixed", np.full((2, 4), np.nan)),
    "gaussian_learned_inf": ("gaussian_learned", np.full((2, 4), np.inf)),
    "gaussian_optimal_nan": ("gaussian_optimal", np.full((2, 4), np.nan)),
    "laplace_nan": ("laplace_learned", np.full((2, 4), np.nan)),
    "discretized_logistic_x_2": ("discretized_logistic", np.full((2, 4), 2.0)),
    "mixture_x_2": ("discretized_logistic_mixture_3", np.full((2, 4), 2.0)),
    "categorical_float_above_one": ("categorical", np.full((2, 4), 1.5)),
}


@pytest.mark.parametrize("case", list(SUPPORT_ERRORS))
def test_data_outside_support_raises_naming_x(case):
    name, x = SUPPORT_ERRORS[case]
    lik = FACTORIES[name]()
    dist = lik(torch.zeros(lik.param_shape((2, 4))))
    with pytest.raises(ValueError, match=r"\bx\b"):
        dist.log_prob(torch.tensor(x, dtype=torch.float32))


@pytest.mark.parametrize("level", [-1, 256])
def test_categorical_integer_levels_out_of_range(level):
    dist = L.Categorical()(torch.zeros(2, 256 * 4))
    with pytest.raises(ValueError, match=r"\bx\b"):
        dist.log_prob(torch.full((2, 4), level, dtype=torch.long))


@pytest.mark.parametrize("name", NAMES)
def test_wrong_event_shape_raises_naming_x(name):
    lik = FACTORIES[name]()
    dist = lik(torch.zeros(lik.param_shape((2, 4))))
    x = torch.tensor(make_x(name, (2, 5), np.random.default_rng(0)), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\bx\b.*event shape \(4,\)"):
        dist.log_prob(x)


@pytest.mark.parametrize("name", NAMES)
def test_non_broadcasting_batch_raises_naming_x(name):
    lik = FACTORIES[name]()
    dist = lik(torch.zeros(lik.param_shape((2, 4))))
    x = torch.tensor(make_x(name, (3, 4), np.random.default_rng(0)), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\bx\b batch shape \(3,\)"):
        dist.log_prob(x)


def test_params_channel_axis_must_be_a_multiple_of_n_params():
    with pytest.raises(ValueError, match=r"params channel axis \(size 5\).*multiple of 2"):
        L.Gaussian("learned")(torch.zeros(2, 5))


def test_non_finite_params_raise():
    with pytest.raises(ValueError, match="params"):
        L.Bernoulli()(torch.tensor([[0.0, float("nan")]]))
    with vaekit.validation(False):  # value checks off: no error
        L.Bernoulli()(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("event_ndim", [0, 2, -1])
def test_event_ndim_out_of_range(event_ndim):
    with pytest.raises(ValueError, match="event_ndim"):
        L.Bernoulli()(torch.zeros(2, 4), event_ndim=event_ndim)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: L.Gaussian(-1.0), "scale"),
        (lambda: L.Gaussian(0.0), "scale"),
        (lambda: L.Gaussian(float("nan")), "scale"),
        (lambda: L.Gaussian("learnd"), "did you mean 'learned'"),
        (lambda: L.Laplace("optimal"), "scale"),
        (lambda: L.DiscretizedLogistic(bins=1), "bins"),
        (lambda: L.DiscretizedLogisticMixture(0), "components"),
        (lambda: L.Categorical(bins=1), "bins"),
    ],
    ids=["negative", "zero", "nan", "typo", "laplace_optimal", "dl_bins", "dlm_k", "cat_bins"],
)
def test_invalid_configuration_raises(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_half_precision_params_give_float32_log_densities():
    """A decoder under bf16 autocast: log p(x|z) is summed in float32, so it matches the
    float64 scipy sum of the same (bf16-rounded) logits to float32 accuracy; a bf16 sum of
    784 terms of ~0.7 nats would be off by about a nat."""
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 784, generator=g) * 2).to(torch.bfloat16)
    x = torch.bernoulli(torch.full((4, 784), 0.3), generator=g)
    got = L.Bernoulli()(logits).log_prob(x)
    assert got.dtype == torch.float32
    p = special.expit(logits.double().numpy())
    ref = stats.bernoulli.logpmf(x.numpy(), p).sum(-1)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5)


def test_running_gaussian_stddev_and_samples_use_its_variance():
    lik = L.RunningGaussian(init_variance=0.25)
    dist = lik(torch.zeros(3, 4, dtype=F64))
    np.testing.assert_allclose(dist.stddev.numpy(), np.full((3, 4), 0.5))
    torch.manual_seed(0)
    s = dist.sample((20000,))
    assert s.dtype == F64 and s.std().item() == pytest.approx(0.5, rel=0.01)
