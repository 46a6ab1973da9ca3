"""Likelihoods p(x | z): map a decoder output to a ``torch.distributions.Distribution``.

Every likelihood returns a distribution whose ``log_prob(x)`` is the per-example
log-density in nats, summed over the event (pixel) dimensions, so its batch shape is the
decoder's leading shape (``[B]``, or ``[S, B]`` for S latent samples).

Parameter layout. A likelihood with ``n`` parameters per value reads them from the
*channel axis* (the first event axis) as ``n`` consecutive blocks of ``C`` channels: for
``Gaussian(scale="learned")`` and data ``[B, C, H, W]`` the decoder outputs
``[B, 2C, H, W]`` = ``[mean | log-scale]``; for flat data ``[B, D]`` it outputs ``[B, 2D]``.
``param_shape`` gives that shape for a data shape.

Value checks (support, NaN) run in ``log_prob`` while :func:`vaekit.validation` is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Bernoulli as _Bernoulli,
)
from torch.distributions import (
    Categorical as _Categorical,
)
from torch.distributions import (
    ContinuousBernoulli as _ContinuousBernoulli,
)
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    constraints,
)
from torch.distributions import (
    Laplace as _Laplace,
)

from vaekit import functional as VF
from vaekit._checks import (
    check_choice,
    check_finite,
    check_range,
    full_precision,
    validation_enabled,
)
from vaekit._fused import bernoulli_logits_log_prob

__all__ = [
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "RunningGaussian",
    "Laplace",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "Categorical",
]

# Bounds on a learned log-scale: sigma in [e^-7, e^7] keeps log-densities finite and
# stops the collapse sigma -> 0 on a perfectly reconstructed (e.g. constant) pixel.
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0


class _Event(Independent):
    """``Independent`` over the event dims that checks x's shape and support first."""

    def __init__(
        self,
        base: Distribution,
        event_ndim: int,
        check: Callable[[torch.Tensor], None],
        to_base: Callable[[torch.Tensor], torch.Tensor] | None = None,
        from_base: Callable[[torch.Tensor], torch.Tensor] | None = None,
        summed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(base, event_ndim, validate_args=False)
        self._check, self._to_base, self._from_base = check, to_base, from_base
        self._summed = summed  # x -> the event-summed log-density, when cheaper than base + sum

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_x_shape(value, self.event_shape, self.batch_shape)
        self._check(value)
        if self._to_base is not None:
            value = self._to_base(value)
        if self._summed is not None:
            return self._summed(value)
        return super().log_prob(value)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        s = super().sample(sample_shape)
        return self._from_base(s) if self._from_base is not None else s

    @property
    def mean(self) -> torch.Tensor:
        m = self.base_dist.mean
        return self._from_base(m) if self._from_base is not None else m


def _check_x_shape(value: torch.Tensor, event_shape: torch.Size, batch_shape: torch.Size) -> None:
    """x must end in the event shape and its leading axes must broadcast to the batch shape."""
    full = batch_shape + event_shape
    if value.dim() <= len(full) and value.shape == full[len(full) - value.dim() :]:
        return  # a suffix of the full shape (the common case): broadcasts, no general test
    n = len(event_shape)
    if tuple(value.shape[value.dim() - n :]) != tuple(event_shape):
        raise ValueError(
            f"x must have event shape {tuple(event_shape)} (the decoder's output "
            f"without its parameter blocks); received x of shape {tuple(value.shape)}"
        )
    try:
        torch.broadcast_shapes(value.shape[: value.dim() - n], batch_shape)
    except RuntimeError:
        raise ValueError(
            f"x batch shape {tuple(value.shape[: value.dim() - n])} does not broadcast against "
            f"the likelihood's batch shape {tuple(batch_shape)}"
        ) from None


def _in_unit_interval(x: torch.Tensor) -> None:
    check_range("x", x, 0.0, 1.0, "scale images to [0, 1] (divide 0-255 data by 255)")


def _in_symmetric_interval(x: torch.Tensor) -> None:
    check_range("x", x, -1.0, 1.0, "scale images to [-1, 1] (x * 2 - 1 for data in [0, 1])")


def _finite(x: torch.Tensor) -> None:
    check_finite("x", x)


class Likelihood(nn.Module):
    """Base: ``n_params`` parameter blocks on the channel axis; subclasses build the distribution."""

    n_params: int = 1
    #: range the data must be scaled to; the trainer maps [0, 1] data onto it
    data_range: tuple[float, float] = (0.0, 1.0)

    def param_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        """Decoder output shape for data of shape ``x_shape``: the channel axis times ``n_params``.

        ``x_shape`` is either an event shape (``(D,)`` or ``(C, H, W)``) or a batched shape
        (``(B, D)`` or ``(B, C, H, W)``); the channel axis is the first event axis.
        """
        shape = [int(s) for s in x_shape]
        if not shape:
            raise ValueError("x_shape must have at least one dimension; received ()")
        axis = 1 if len(shape) in (2, 4) else 0
        shape[axis] *= self.n_params
        return tuple(shape)

    def forward(self, params: torch.Tensor, event_ndim: int | None = None) -> Distribution:
        """Distribution p(x | params); ``event_ndim`` defaults to all axes but the first.

        Half-precision params (a decoder under ``torch.autocast``) are cast to float32 first:
        log-densities are sums over hundreds of values, which bfloat16 would round.
        """
        params = full_precision(params)
        nd = params.dim() - 1 if event_ndim is None else int(event_ndim)
        if nd < 1 or nd >= params.dim():
            raise ValueError(
                f"event_ndim must be in [1, {params.dim() - 1}] for params of shape "
                f"{tuple(params.shape)}; received {nd}"
            )
        channels = params.shape[-nd]
        if channels % self.n_params:
            raise ValueError(
                f"params channel axis (size {channels}) must be a multiple of "
                f"{self.n_params} for {type(self).__name__}; use param_shape(x_shape)"
            )
        if validation_enabled():
            check_finite("params", params)
        return self._distribution(params, nd)

    def _blocks(self, params: torch.Tensor, nd: int) -> torch.Tensor:
        """View the channel axis as ``(n_params, C)``: returns ``[..., n_params, C, *rest]``."""
        shape = params.shape
        axis = len(shape) - nd
        c = shape[axis] // self.n_params
        return params.reshape(*shape[:axis], self.n_params, c, *shape[axis + 1 :])

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        raise NotImplementedError


# torch's binary_cross_entropy clamps log-probabilities at -100: a probability of exactly 0 or
# 1 (a saturated sigmoid) costs at most 100 nats per value instead of an infinite loss
LOG_PROB_MIN = -100.0


def _clamped_log(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max(log p, -100), max(log(1 - p), -100))``, the clamps of torch's BCE, elementwise."""
    return torch.log(p).clamp(min=LOG_PROB_MIN), torch.log1p(-p).clamp(min=LOG_PROB_MIN)


def _check_probs(name: str, params: torch.Tensor, fix: str) -> None:
    check_range("params", params, 0.0, 1.0, f"{name}(probs=True) takes probabilities; {fix}")


class Bernoulli(Likelihood):
    """Bernoulli on logits: ``log p = sum(x logits - softplus(logits))``, x in [0, 1], nats.

    ``probs=True``: the decoder outputs probabilities (it ends in a sigmoid), and
    ``log p = sum(x max(log p, -100) + (1 - x) max(log(1 - p), -100))``, the clamped form
    of ``torch.nn.functional.binary_cross_entropy``. Logits are the stabler choice; the flag
    exists for existing decoders. Non-binary x in (0, 1) is accepted (as Keras' BCE does)
    but is then not a normalised density; prefer :class:`ContinuousBernoulli` for grayscale.
    """

    def __init__(self, probs: bool = False):
        super().__init__()
        if not isinstance(probs, bool):
            raise ValueError(f"probs must be True or False; received {probs!r}")
        self.probs = probs

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        dims = tuple(range(-nd, 0))
        if self.probs:
            if validation_enabled():
                _check_probs("Bernoulli", params, "for logits use Bernoulli()")
            log_p, log_1mp = _clamped_log(params)

            def summed(x: torch.Tensor) -> torch.Tensor:
                return (x * log_p + (1 - x) * log_1mp).sum(dims)

            base = _Bernoulli(probs=params, validate_args=False)
            return _Event(base, nd, _in_unit_interval, summed=summed)

        def summed(x: torch.Tensor) -> torch.Tensor:
            # two sums (x l and softplus(l)), gradient x - sigmoid(l) in closed form
            return bernoulli_logits_log_prob(params, x, nd)

        base = _Bernoulli(logits=params, validate_args=False)
        # (with no event dims, sum over () would sum everything: keep torch's elementwise form)
        return _Event(base, nd, _in_unit_interval, summed=summed if nd else None)

    def extra_repr(self) -> str:
        return "probs=True" if self.probs else ""


class _StableContinuousBernoulli(_ContinuousBernoulli):
    # torch clamps probabilities to compute log C, which is off by several nats at
    # |logits| ~ 1e4; vaekit's normaliser is exact in both tails and at logits = 0.
    def _cont_bern_log_norm(self) -> torch.Tensor:
        return VF.continuous_bernoulli_log_norm(self.logits)


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) on logits, x in [0, 1], nats.

    ``log p = sum(x logits - softplus(logits) + log C(logits))``: the normalised density
    for grayscale data in [0, 1].
    """

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        base = _StableContinuousBernoulli(logits=params, validate_args=False)
        return _Event(base, nd, _in_unit_interval)


@torch.no_grad()
def _store_variance(buffer: torch.Tensor, value: torch.Tensor, low: float) -> None:
    """Write ``value`` into a shared-variance buffer without ever making it non-finite.

    NaN (a non-finite decoder output, value checks off) keeps the old value; +inf (the
    float32 square of finite but huge residuals overflowing) becomes the largest finite
    value of the buffer's dtype; anything below ``low`` becomes ``low``. No host sync.
    """
    value = value.to(buffer)
    value = torch.where(torch.isnan(value), buffer, value)
    buffer.copy_(value.clamp(min=low, max=torch.finfo(buffer.dtype).max))


class _OptimalNormal(Distribution):
    """Gaussian with one shared sigma: the batch's maximum-likelihood value at ``log_prob``.

    ``log_prob(x)``: sigma*^2 = mean((x - loc)^2) over the whole batch (sigma-VAE, Rybkin
    et al. 2021), detached: at the optimum d log p / d sigma = 0, so detaching leaves the
    gradient of ``loc`` unchanged. In training mode with gradients on it also records
    sigma*^2 in the owner's ``variance`` buffer. ``sample``/``stddev``/``variance`` (no data
    to fit a sigma to) use that recorded value, the noise level the model was trained with;
    ``mean`` is ``loc`` and needs no sigma.
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.real

    def __init__(self, loc: torch.Tensor, event_ndim: int, owner: Gaussian):
        self.loc, self._nd, self._owner = loc, event_ndim, owner
        self._min = owner.min_log_scale
        self.last_scale: torch.Tensor | None = None  # sigma* of the last log_prob's batch
        super().__init__(loc.shape[:-event_ndim], loc.shape[-event_ndim:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_x_shape(value, self.event_shape, self.batch_shape)
        _finite(value)
        mse = (value - self.loc).detach().square().mean()
        log_scale = (0.5 * torch.log(mse)).clamp(min=self._min)
        self.last_scale = log_scale.exp()
        if self._owner.training and torch.is_grad_enabled():
            _store_variance(self._owner.variance, (2.0 * log_scale).exp(), math.exp(2 * self._min))
        lp = Normal(self.loc, self.last_scale, validate_args=False).log_prob(value)
        return lp.sum(tuple(range(-self._nd, 0)))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def _recorded_variance(self) -> torch.Tensor:
        v = self._owner.variance.detach()
        if not bool(v > 0):
            raise ValueError(
                'Gaussian(scale="optimal") has no sigma to sample with: its sigma is fitted to '
                "data (sigma^2 = mean((x - mean)^2)) and recorded in the likelihood's buffer "
                "`variance` only when log_prob(x) runs in training mode with gradients on, and "
                "none has run (an untrained model, or a checkpoint saved before vaekit recorded "
                "it). Train the model first, use the mean (model.sample(n, mean=True)), or set "
                "the noise level yourself: likelihood.variance.fill_(sigma ** 2)"
            )
        return v.to(self.loc.dtype)

    @property
    def variance(self) -> torch.Tensor:
        return self._recorded_variance().expand(self.loc.shape)

    @property
    def stddev(self) -> torch.Tensor:
        return self._recorded_variance().sqrt().expand(self.loc.shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        scale = self._recorded_variance().sqrt()
        with torch.no_grad():
            return self.loc.expand(shape) + scale * torch.randn(
                shape, dtype=self.loc.dtype, device=self.loc.device
            )


class _LocScale(Likelihood):
    """Shared logic of location-scale likelihoods: fixed or learned scale."""

    family: type[Distribution]

    def __init__(self, scale: float | str = 1.0):
        super().__init__()
        if isinstance(scale, str):
            check_choice("scale", scale, self._scale_choices())
        elif isinstance(scale, bool) or not (
            isinstance(scale, int | float) and math.isfinite(scale) and scale > 0
        ):
            raise ValueError(
                f"scale must be a positive float or one of {self._scale_choices()}; received {scale!r}"
            )
        self.scale = scale
        self.n_params = 2 if scale == "learned" else 1

    def _scale_choices(self) -> list[str]:
        return ["learned"]

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        if self.scale == "learned":
            loc, log_scale = self._blocks(params, nd).unbind(-nd - 1)
            scale = log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
        else:
            loc, scale = params, torch.full_like(params, float(self.scale))
        return _Event(self.family(loc, scale, validate_args=False), nd, _finite)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"


class Gaussian(_LocScale):
    """Diagonal Gaussian ``N(x | mean, sigma^2)``; log p in nats with the full normaliser.

    ``scale``: a float (fixed sigma), ``"learned"`` (decoder outputs mean and log-sigma per
    value, log-sigma clamped to [-7, 7]) or ``"optimal"`` (sigma-VAE: one sigma per batch,
    ``sigma^2 = mean((x - mean)^2)``, detached, log-sigma >= -6; Rybkin et al. 2021).
    With ``"optimal"`` an example's log p(x) depends on the rest of its batch (the shared
    sigma), so its test NLL depends on the evaluation batch size: report it with that size.

    ``"optimal"`` and sampling: a distribution built from a decoder output alone (no data)
    has no optimal sigma, so ``sample()`` uses the one recorded in training. Every
    ``log_prob`` in training mode with gradients on (as :class:`RunningGaussian` updates its
    variance) writes its batch's sigma*^2 into the buffer ``variance``, which is saved in
    the ``state_dict``; eval mode and ``torch.no_grad`` leave it alone. So after training,
    ``model.sample(n, mean=False)`` adds noise of the trained level (the last training
    batch's sigma*). Before any training step ``variance`` is 0 (a recorded value is never
    below e^-12) and ``sample()`` raises ``ValueError``; ``mean`` never needs sigma.
    """

    family = Normal
    #: floor of the optimal log-sigma (sigma-VAE's -6)
    min_log_scale: float = -6.0

    def __init__(self, scale: float | str = 1.0):
        super().__init__(scale)
        if self.scale == "optimal":
            # sigma^2 recorded by the last training log_prob; 0 = none recorded yet
            self.register_buffer("variance", torch.zeros(()))

    def _scale_choices(self) -> list[str]:
        return ["learned", "optimal"]

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        if self.scale == "optimal":
            return _OptimalNormal(params, nd, self)
        return super()._distribution(params, nd)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args) -> None:
        # checkpoints from before the recorded sigma lack it: load them with none recorded
        key = prefix + "variance"
        if self.scale == "optimal" and key not in state_dict:
            state_dict[key] = torch.zeros_like(self.variance)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

    def extra_repr(self) -> str:
        if self.scale == "optimal":
            return f"scale={self.scale!r}, variance={float(self.variance):.4g}"
        return super().extra_repr()


class _RunningNormal(Distribution):
    """Gaussian with the shared variance held by a :class:`RunningGaussian`, updated at ``log_prob``."""

    arg_constraints = {"loc": constraints.real}
    support = constraints.real

    def __init__(self, loc: torch.Tensor, event_ndim: int, owner: RunningGaussian):
        self.loc, self._nd, self._owner = loc, event_ndim, owner
        super().__init__(loc.shape[:-event_ndim], loc.shape[-event_ndim:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_x_shape(value, self.event_shape, self.batch_shape)
        _finite(value)
        if self._owner.training and torch.is_grad_enabled():
            self._owner.update((value - self.loc).detach().square().mean())
        scale = self._owner.variance.detach().sqrt().to(self.loc.dtype)
        lp = Normal(self.loc, scale, validate_args=False).log_prob(value)
        return lp.sum(tuple(range(-self._nd, 0)))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self._owner.variance.detach().to(self.loc.dtype).expand(self.loc.shape)

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        scale = self._owner.variance.detach().sqrt().to(self.loc.dtype)
        with torch.no_grad():
            return self.loc.expand(shape) + scale * torch.randn(
                shape, dtype=self.loc.dtype, device=self.loc.device
            )


class RunningGaussian(Likelihood):
    """Gaussian ``N(x | mean, sigma^2)`` whose one shared variance is the running mean of the MSE.

    ``sigma^2 <- momentum * sigma^2 + (1 - momentum) * mean((x - mean)^2)`` at every
    ``log_prob`` in training mode with gradients on (mean over the batch, samples and
    values, detached), *then* ``log p = -0.5 sum(log 2 pi sigma^2 + (x - mean)^2 / sigma^2)``
    nats. Asperti & Trentin (2020), "Balancing reconstruction error and KL divergence in
    VAEs": with sigma^2 tracking the MSE the reconstruction term keeps a constant weight
    against the KL (``D/2`` per unit of relative error). In eval mode, or under
    ``torch.no_grad``, sigma^2 is frozen, so test NLL does not depend on the batch (unlike
    ``Gaussian(scale="optimal")``). ``variance`` is a buffer: it is saved with the model.
    sigma^2 starts at ``init_variance`` and never goes below ``min_variance`` (= e^-12,
    sigma-VAE's log-sigma >= -6). An objective that evaluates ``log_prob`` twice in one
    step (``PIWAE``) updates it twice.
    """

    def __init__(
        self,
        momentum: float = 0.99,
        init_variance: float = 1.0,
        min_variance: float = math.exp(-12.0),
    ):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); received {momentum!r}")
        for name, v in (("init_variance", init_variance), ("min_variance", min_variance)):
            if isinstance(v, bool) or not (
                isinstance(v, int | float) and math.isfinite(v) and v > 0
            ):
                raise ValueError(f"{name} must be a positive finite number; received {v!r}")
        self.momentum, self.min_variance = float(momentum), float(min_variance)
        self.register_buffer("variance", torch.tensor(max(float(init_variance), self.min_variance)))

    @torch.no_grad()
    def update(self, mse: torch.Tensor) -> None:
        """``sigma^2 <- momentum sigma^2 + (1 - momentum) mse`` (clamped below at ``min_variance``).

        The buffer never becomes non-finite: a NaN ``mse`` (a non-finite decoder output with
        value checks off) leaves it unchanged, and an ``mse`` that overflowed to +inf (finite
        but huge residuals squared in float32) gives the dtype's largest finite value.
        """
        v = self.momentum * self.variance + (1.0 - self.momentum) * mse.to(self.variance)
        _store_variance(self.variance, v, self.min_variance)

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        return _RunningNormal(params, nd, self)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, variance={float(self.variance):.4g}"


class Laplace(_LocScale):
    """Laplace ``log p = sum(-log 2b - |x - loc| / b)`` in nats; ``scale`` fixed b or ``"learned"``."""

    family = _Laplace


class _DiscretizedLogistic(Distribution):
    """Mixture of discretized logistics over ``bins`` values in [-1, 1] (K = 1: a single one).

    ``logits, loc, log_scale``: ``[..., K, C, *rest]`` with the mixture on axis ``-nd - 1``.
    """

    arg_constraints = {}
    support = constraints.interval(-1.0, 1.0)

    def __init__(self, logits, loc, log_scale, event_ndim: int, bins: int):
        self.logits, self.loc, self.log_scale = logits, loc, log_scale
        self._nd, self.bins = event_ndim, bins
        self._k_axis = -event_ndim - 1
        shape = loc.shape[: self._k_axis] + loc.shape[self._k_axis + 1 :]
        super().__init__(shape[:-event_ndim], shape[-event_ndim:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_x_shape(value, self.event_shape, self.batch_shape)
        _in_symmetric_interval(value)
        x = value.unsqueeze(self._k_axis)
        log_mass = VF.discretized_logistic_log_mass(x, self.loc, self.log_scale, self.bins)
        log_mix = torch.log_softmax(self.logits, dim=self._k_axis)
        lp = torch.logsumexp(log_mix + log_mass, dim=self._k_axis)
        return lp.sum(tuple(range(-self._nd, 0)))

    @property
    def mean(self) -> torch.Tensor:
        w = torch.softmax(self.logits, dim=self._k_axis)
        return (w * self.loc.clamp(-1, 1)).sum(self._k_axis)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits.expand(torch.Size(sample_shape) + self.logits.shape)
            k = torch.distributions.Categorical(logits=logits.movedim(self._k_axis, -1)).sample()
            pick = F.one_hot(k, logits.shape[self._k_axis]).movedim(-1, self._k_axis)
            loc = (pick * self.loc).sum(self._k_axis)
            log_scale = (pick * self.log_scale).sum(self._k_axis)
            u = torch.rand_like(loc).clamp(1e-5, 1 - 1e-5)
            x = loc + log_scale.exp() * (torch.log(u) - torch.log1p(-u))
            half = (self.bins - 1) / 2
            return (torch.round((x.clamp(-1, 1) + 1) * half) / half - 1).clamp(-1, 1)


class DiscretizedLogistic(Likelihood):
    """Discretized logistic over ``bins`` values of x scaled to [-1, 1] (Salimans et al. 2017).

    Decoder outputs loc and log-scale per value (two blocks); log-scale >= -7. log p in nats;
    divide by ``D log 2`` for bits per dimension.
    """

    n_params = 2
    data_range = (-1.0, 1.0)

    def __init__(self, bins: int = 256):
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2; received {bins}")
        self.bins = bins

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        loc, log_scale = self._blocks(params, nd).unbind(-nd - 1)
        k_axis = -nd - 1
        loc, log_scale = loc.unsqueeze(k_axis), log_scale.clamp(min=LOG_SCALE_MIN).unsqueeze(k_axis)
        return _DiscretizedLogistic(torch.zeros_like(loc), loc, log_scale, nd, self.bins)


class DiscretizedLogisticMixture(Likelihood):
    """Mixture of K discretized logistics per value (PixelCNN++, Salimans et al. 2017).

    ``p(x) = sum_k pi_k DL(x | loc_k, s_k)``; the decoder outputs 3K blocks on the channel
    axis: K mixture logits, K locs, K log-scales. Channels are modelled independently
    (PixelCNN++'s linear dependence between RGB channels is not included).
    """

    data_range = (-1.0, 1.0)

    def __init__(self, components: int = 10, bins: int = 256):
        super().__init__()
        if components < 1:
            raise ValueError(f"components must be >= 1; received {components}")
        if bins < 2:
            raise ValueError(f"bins must be >= 2; received {bins}")
        self.components, self.bins = components, bins
        self.n_params = 3 * components

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        blocks = self._blocks(params, nd)  # [..., 3K, C, *rest]
        logits, loc, log_scale = blocks.chunk(3, dim=-nd - 1)
        return _DiscretizedLogistic(logits, loc, log_scale.clamp(min=LOG_SCALE_MIN), nd, self.bins)


class Categorical(Likelihood):
    """Categorical over ``bins`` intensity levels per value: ``log p = sum log softmax(l)[x]``, nats.

    The decoder outputs ``bins`` blocks on the channel axis (one logit per level). x is
    either an integer tensor of levels in ``{0, ..., bins-1}`` or floats in [0, 1] that are
    mapped to ``round(x (bins - 1))``; samples and means are returned as floats in [0, 1].
    ``probs=True``: the decoder outputs probabilities (a softmax over the levels), read as
    ``max(log p, -100)``.
    """

    def __init__(self, bins: int = 256, probs: bool = False):
        super().__init__()
        if bins < 2:
            raise ValueError(f"bins must be >= 2; received {bins}")
        if not isinstance(probs, bool):
            raise ValueError(f"probs must be True or False; received {probs!r}")
        self.bins = self.n_params = bins
        self.probs = probs

    def _to_index(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return torch.round(x * (self.bins - 1)).long()
        return x.long()

    def _check(self, x: torch.Tensor) -> None:
        if x.is_floating_point():
            _in_unit_interval(x)
        else:
            check_range("x", x, 0, self.bins - 1, "integer data must be levels 0..bins-1")

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        if self.probs:
            if validation_enabled():
                _check_probs("Categorical", params, "for logits use Categorical(bins)")
            params = torch.log(params).clamp(min=LOG_PROB_MIN)  # normalised again below
        logits = self._blocks(params, nd).movedim(-nd - 1, -1)  # [..., C, *rest, bins]
        base = _CategoricalLevels(logits=logits, validate_args=False)
        return _Event(base, nd, self._check, self._to_index, lambda i: i / (self.bins - 1))


class _CategoricalLevels(_Categorical):
    # torch's Categorical has no mean; ours is the expected level, so pictures can show it.
    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self.logits.shape[-1], device=self.logits.device)
        return (self.probs * levels).sum(-1)
