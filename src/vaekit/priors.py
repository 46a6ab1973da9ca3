"""Priors p(z): ``nn.Module``s whose ``forward()`` returns a Distribution over z.

Each returned distribution has batch shape ``[]`` and event shape ``[D]``, so
``prior().log_prob(z)`` maps z of shape ``[..., D]`` to ``[...]`` nats, and
``prior().sample((n,))`` gives ``[n, D]``. The KL to a Gaussian posterior is analytic for
:class:`StandardNormal` and :class:`LearnableGaussian` (through the ``kl_divergence``
registry) and Monte Carlo for the mixtures.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal
from torch.distributions.kl import register_kl

from vaekit._checks import check_choice
from vaekit._fused import kl_logvar_standard

__all__ = [
    "StandardNormal",
    "UnitNormal",
    "LearnableGaussian",
    "MixtureOfGaussians",
    "VampPrior",
    "DiagonalGaussianMixture",
    "FlowPrior",  # noqa: F822 (lazy: vaekit.flows)
]


def __getattr__(name: str):
    # FlowPrior lives in vaekit.flows (with the IAF posterior); imported on first use
    if name == "FlowPrior":
        from vaekit.flows import FlowPrior

        return FlowPrior
    raise AttributeError(f"module 'vaekit.priors' has no attribute {name!r}")


def _check_dim(name: str, value: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)  # accepts numpy integers, refuses floats
    except TypeError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")
    return n


class UnitNormal(Normal):
    """``N(0, 1)`` per latent: the standard-normal prior's own type, so that its KL to a
    Gaussian posterior has a closed form of its own in the ``kl_divergence`` registry."""


@register_kl(Normal, UnitNormal)
def _kl_normal_unit(q: Normal, p: UnitNormal) -> torch.Tensor:
    """``KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2`` per dimension, nats (one
    fused autograd node; ``log s^2`` read from a :class:`vaekit.posteriors.LogvarNormal`)."""
    logvar = getattr(q, "logvar", None)
    if logvar is None:
        logvar = 2.0 * torch.log(q.scale)
    kl = kl_logvar_standard(q.loc, logvar)
    pb = p.batch_shape
    if len(pb) <= kl.dim() and kl.shape[kl.dim() - len(pb) :] == pb:
        return kl  # p's batch shape is a suffix of q's (the common case): no broadcast
    return kl.expand(torch.broadcast_shapes(kl.shape, pb))


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``dim`` latents: ``log p(z) = -0.5 sum(z^2 + log 2 pi)`` nats."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.register_buffer("loc", torch.zeros(dim), persistent=False)
        self.register_buffer("scale", torch.ones(dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(UnitNormal(self.loc, self.scale, validate_args=False), 1)


class LearnableGaussian(nn.Module):
    """p(z) = N(mu, diag(sigma^2)) with trainable ``mu`` and ``log_sigma`` (initialised to N(0, I))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self) -> Distribution:
        scale = self.log_scale.clamp(-15.0, 15.0).exp()
        return Independent(Normal(self.loc, scale, validate_args=False), 1)


class DiagonalGaussianMixture(MixtureSameFamily):
    """sum_c pi_c N(z | mu_c, diag(sigma_c^2)) with ``log_prob`` as two matrix products.

    ``log N(z | mu_c, sigma_c) = -0.5 [z^2 . w_c - 2 z . (mu_c w_c) + mu_c^2 . w_c]
    - sum_d log sigma_cd - D/2 log 2 pi`` with ``w_c = 1 / sigma_c^2``: for N points and C
    components the cost is two ``[N, D] x [D, C]`` products instead of an ``[N, C, D]``
    broadcast. The products run in float64 so the expansion loses nothing to cancellation
    (|z - mu| small against |z|, |mu| with small sigma); the result is cast back to z's dtype.
    Sampling, mean and variance are :class:`MixtureSameFamily`'s.
    """

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        comp = Independent(Normal(loc, scale, validate_args=False), 1)
        super().__init__(Categorical(logits=logits), comp, validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        base = self.component_distribution.base_dist
        loc, scale = base.loc.double(), base.scale.double()  # [C, D]
        d = loc.shape[-1]
        if z.shape[-1] != d:
            raise ValueError(f"z must have last axis {d}; received shape {tuple(z.shape)}")
        flat = z.reshape(-1, d).double()
        prec = scale.pow(-2)
        quad = (
            (flat * flat) @ prec.T - 2.0 * flat @ (loc * prec).T + (loc * loc * prec).sum(-1)
        ).clamp_min(0.0)  # [N, C]
        log_norm = -scale.log().sum(-1) - 0.5 * d * math.log(2.0 * math.pi)
        log_pi = torch.log_softmax(self.mixture_distribution.logits.double(), dim=-1)
        out = torch.logsumexp(log_pi + log_norm - 0.5 * quad, dim=-1)
        return out.to(z.dtype).reshape(z.shape[:-1])


class MixtureOfGaussians(nn.Module):
    """p(z) = sum_k pi_k N(z | mu_k, diag(sigma_k^2)), K learnable components and weights.

    ``log p(z) = logsumexp_k(log pi_k + log N(z | mu_k, sigma_k))``, built on
    ``MixtureSameFamily``. Means start at N(0, I) draws, scales at 1, weights uniform.

    Args:
        weights: ``"learned"`` (softmax of learnable logits) or ``"uniform"`` (pi_k = 1/K
            fixed, the VampPrior paper's MoG: ``p(z) = (1/K) sum_k N(z | mu_k, sigma_k^2)``).
    """

    def __init__(self, dim: int, components: int = 10, weights: str = "learned"):
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.components = _check_dim("components", components)
        check_choice("weights", weights, ("learned", "uniform"))
        self.loc = nn.Parameter(torch.randn(components, dim))
        self.log_scale = nn.Parameter(torch.zeros(components, dim))
        logits = torch.zeros(components)
        if weights == "learned":
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)

    def forward(self) -> Distribution:
        scale = self.log_scale.clamp(-15.0, 15.0).exp()
        return DiagonalGaussianMixture(self.logits, self.loc, scale)


class VampPrior(nn.Module):
    """VampPrior p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018).

    ``u_k`` are K learnable pseudo-inputs of shape ``input_shape`` pushed through the model's
    own ``encoder`` and ``posterior`` (shared weights), so
    ``log p(z) = logsumexp_k log q(z | u_k) - log K`` nats.

    Args:
        encoder, posterior: the VAE's own modules (pass the same objects to :class:`VAE`).
        input_shape: shape of one data point, e.g. ``(784,)`` or ``(1, 28, 28)``.
        components: K (500 in the paper).
        init: ``"random"`` (N(0.05, 0.01) as in the paper's code) or a tensor
            ``[N >= K, *input_shape]`` of data to draw the initial pseudo-inputs from.
        input_range: pseudo-inputs are clipped to this range with a hard-tanh (gradient
            zero outside), ``(0, 1)`` for images; ``None`` leaves them free.
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: nn.Module,
        input_shape: Sequence[int],
        components: int = 500,
        init: str | torch.Tensor = "random",
        input_range: tuple[float, float] | None = (0.0, 1.0),
    ):
        super().__init__()
        self.components = _check_dim("components", components)
        self.encoder, self.posterior = encoder, posterior
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_range = input_range
        if isinstance(init, torch.Tensor):
            if tuple(init.shape[1:]) != self.input_shape or init.shape[0] < components:
                raise ValueError(
                    f"init data must have shape [N >= {components}, *{self.input_shape}]; "
                    f"received {tuple(init.shape)}"
                )
            idx = torch.randperm(init.shape[0])[:components]
            u = init[idx].detach().clone()
        elif init == "random":
            u = 0.05 + 0.01 * torch.randn(components, *self.input_shape)
        else:
            raise ValueError(f"init must be 'random' or a data tensor; received {init!r}")
        self.pseudo_inputs = nn.Parameter(u)

    def forward(self) -> Distribution:
        u = self.pseudo_inputs
        if self.input_range is not None:
            u = torch.nn.functional.hardtanh(u, *self.input_range)
        components = self.posterior(self.encoder(u))  # batch [K], event [D]
        # weights in the pseudo-inputs' dtype: float32 zeros would round a float64 prior's log K
        logits = torch.zeros(self.components, device=u.device, dtype=u.dtype)
        base = getattr(components, "base_dist", None)
        if isinstance(components, Independent) and isinstance(base, Normal):
            return DiagonalGaussianMixture(logits, base.loc, base.scale)
        return MixtureSameFamily(Categorical(logits=logits), components, validate_args=False)
