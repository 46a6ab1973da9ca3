"""Normalising flows: a RealNVP prior p(z) and an inverse autoregressive flow posterior q(z|x).

Change of variables, in nats: for an invertible z = f(u) with u ~ p_u,
``log p(z) = log p_u(f^-1(z)) - log |det df/du|``.

* :class:`FlowPrior`: RealNVP affine couplings on N(0, I) (Dinh et al. 2017). Both directions
  are closed-form, so ``log_prob`` is exact for any z: a prior for
  ``vaekit.VAE(prior=FlowPrior(D))`` trained with ``ELBO(kl="mc")``.
* :class:`IAFPosterior`: a diagonal Gaussian pushed through K inverse autoregressive steps
  (Kingma et al. 2016). Sampling is one pass; the inverse would take D passes, so the
  returned distribution knows ``log q(z|x)`` only for the samples it drew itself (it records
  the log-determinant of each sample). The KL term is then Monte Carlo: ``ELBO(kl="mc")`` or
  ``IWAE(k)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    Normal,
    Transform,
    TransformedDistribution,
    constraints,
)

from vaekit._checks import check_count, check_finite, check_positive, validation_enabled
from vaekit.models.networks import MLP
from vaekit.posteriors import LOGVAR_MAX, LOGVAR_MIN

__all__ = ["AffineCoupling", "FlowPrior", "IAFPosterior"]


# ---------------------------------------------------------------------------------------------
# RealNVP prior


class AffineCoupling(Transform):
    """One RealNVP affine coupling ``y = x * exp(s) + t`` on the dims where ``mask == 0``.

    ``(s, t) = net(mask * x)`` only read the dims where ``mask == 1`` (those pass through
    unchanged), so the Jacobian is triangular and ``log |det dy/dx| = sum_d s_d`` nats.
    Each log-scale is soft-clamped, ``s = b * tanh(raw / b)`` with ``b = max_log_scale``,
    so one layer stretches a dimension by at most ``e^b``. Inverse:
    ``x = (y - t) * exp(-s)`` with the same ``(s, t)`` (they depend on the passed-through dims).

    A ``torch.distributions.Transform`` (event dim 1) for ``TransformedDistribution``; the
    module ``net`` (``[..., D] -> [..., 2D] = [raw s | t]``) is owned by :class:`FlowPrior`.
    """

    bijective = True
    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)

    def __init__(self, net: nn.Module, mask: torch.Tensor, max_log_scale: float = 2.0):
        super().__init__(cache_size=0)
        self.net, self.mask, self.max_log_scale = net, mask, float(max_log_scale)
        # (x, y, s) of the last pass: TransformedDistribution asks for the log-det right
        # after inverting, and recomputing s would double the cost of log_prob
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the conditioner wants a leading batch axis; a single z [D] is legal here
        out = self.net((x * self.mask).reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        raw, t = out.chunk(2, dim=-1)
        free = 1.0 - self.mask
        s = self.max_log_scale * torch.tanh(raw / self.max_log_scale)
        return s * free, t * free

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        s, t = self._scale_shift(x)
        y = x * torch.exp(s) + t
        self._last = (x, y, s)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._scale_shift(y)  # mask * y == mask * x
        x = (y - t) * torch.exp(-s)
        self._last = (x, y, s)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log |det dy/dx| = sum_d s_d(x)``: ``[...]`` nats for x ``[..., D]``."""
        last = self._last
        if last is not None and last[0] is x and last[1] is y:
            s = last[2]
        else:
            s, _ = self._scale_shift(x)
        return s.sum(-1)


class FlowPrior(nn.Module):
    """p(z) = RealNVP flow of N(0, I): ``log p(z) = log N(f^-1(z); 0, I) + log |det df^-1/dz|``, nats.

    ``layers`` :class:`AffineCoupling` layers with alternating even/odd masks; each
    conditioner is an MLP ``D -> hidden -> hidden -> 2D`` (ELU). The conditioners' last
    layer starts at zero, so an untrained FlowPrior is exactly N(0, I).

    ``forward()`` returns a ``TransformedDistribution`` with batch shape ``[]`` and event
    shape ``[D]``: ``log_prob(z)`` maps ``[..., D] -> [...]`` nats (exact, any z), and
    ``rsample`` / ``sample`` draw ``z = f(u)``, u ~ N(0, I). There is no closed-form KL to a
    Gaussian posterior: train with ``ELBO(kl="mc")`` or ``IWAE``.

    Args:
        dim: D, the latent size.
        layers: number of coupling layers (4 covers every dimension twice).
        hidden: width of the conditioners' two hidden layers.
        max_log_scale: bound b on each layer's log-scale (``s = b tanh(raw / b)``).
    """

    def __init__(self, dim: int, layers: int = 4, hidden: int = 64, max_log_scale: float = 2.0):
        super().__init__()
        self.dim = check_count("dim", dim, 1)
        self.layers = check_count("layers", layers, 1)
        check_count("hidden", hidden, 1)
        check_positive("max_log_scale", max_log_scale)
        self.max_log_scale = float(max_log_scale)
        self.nets = nn.ModuleList(
            MLP(dim, 2 * dim, (hidden, hidden), activation="elu", flatten_input=False)
            for _ in range(layers)
        )
        for net in self.nets:
            nn.init.zeros_(net.net[-1].weight)
            nn.init.zeros_(net.net[-1].bias)
        parity = torch.arange(dim) % 2
        masks = torch.stack([(parity == k % 2).float() for k in range(layers)])
        self.register_buffer("masks", masks, persistent=False)
        self.register_buffer("loc", torch.zeros(dim), persistent=False)
        self.register_buffer("scale", torch.ones(dim), persistent=False)

    def transforms(self) -> list[AffineCoupling]:
        """The coupling layers u -> z, in order (fresh objects that share this module's weights)."""
        return [
            AffineCoupling(net, mask, self.max_log_scale)
            for net, mask in zip(self.nets, self.masks, strict=True)
        ]

    def forward(self) -> Distribution:
        base = Independent(Normal(self.loc, self.scale, validate_args=False), 1)
        return TransformedDistribution(base, self.transforms(), validate_args=False)


# ---------------------------------------------------------------------------------------------
# IAF posterior


class _MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 mask ``[out, in]``."""

    def __init__(self, mask: torch.Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _MADE(nn.Module):
    """Autoregressive network (Germain et al. 2015): ``[..., D] (+ context) -> (m, s)``, each ``[..., D]``.

    Output d reads only the inputs that come earlier in the ordering (``order``, a permutation
    of 1..D), so ``dm_d/dz_j = ds_d/dz_j = 0`` unless ``order_j < order_d``. The context enters
    the first hidden layer unmasked.
    """

    def __init__(self, dim: int, context: int, hidden: int, order: torch.Tensor, gate_bias: float):
        super().__init__()
        # hidden degrees in 1..D-1 (all 0 for D = 1: the outputs then read the context only)
        deg_h = torch.arange(hidden) % max(1, dim - 1) + min(1, dim - 1)
        self.inp = _MaskedLinear(deg_h[:, None] >= order[None, :])
        self.ctx = nn.Linear(context, hidden, bias=False) if context else None
        self.mid = _MaskedLinear(deg_h[:, None] >= deg_h[None, :])
        self.out = _MaskedLinear((order[:, None] > deg_h[None, :]).repeat(2, 1))
        with torch.no_grad():  # start near the identity: m ~ 0, sigmoid(s) ~ sigmoid(gate_bias)
            self.out.weight.mul_(0.01)
            self.out.bias.zero_()
            self.out.bias[dim:] = gate_bias

    def forward(self, z: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.inp(z)
        if self.ctx is not None:
            a = a + self.ctx(h)
        a = F.elu(self.mid(F.elu(a)))
        m, s = self.out(a).chunk(2, dim=-1)
        return m, s


class _IAFDistribution(Distribution):
    """q(z|x) of an IAF: draws z_K = f(z_0), z_0 ~ N(mean, std^2), recording ``log q`` per draw.

    ``log q(z_K|x) = log N(z_0; mean, std^2) - log |det dz_K/dz_0|`` (nats) is computed while
    sampling; ``log_prob(z)`` returns it for a tensor this object drew (matched by identity)
    and raises ``ValueError`` for any other z, whose density would need the inverse flow.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self, flow: IAFPosterior, mean: torch.Tensor, std: torch.Tensor, context: torch.Tensor
    ):
        self._flow, self.loc, self.scale, self.context = flow, mean, std, context
        self._drawn: list[tuple[torch.Tensor, torch.Tensor]] = []
        super().__init__(mean.shape[:-1], mean.shape[-1:], validate_args=False)

    def rsample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z0 = self.loc + self.scale * eps
        base = Normal(self.loc, self.scale, validate_args=False).log_prob(z0).sum(-1)
        context = self.context.expand(*shape[:-1], self.context.shape[-1])
        z, log_det = self._flow.flow(z0, context)
        self._drawn.append((z, base - log_det))
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        for z, log_q in self._drawn:
            if value is z:
                return log_q
        raise ValueError(
            "IAF posterior: log q(z|x) is known only for the samples this distribution drew "
            "(its inverse flow is not computed); received a z it did not draw. Pass the tensor "
            "returned by rsample. Estimators that rebuild q with detached parameters "
            "(IWAE estimator='stl' or 'dreg') need that inverse: use estimator='standard' "
            "or ELBO(kl='mc')"
        )

    @property
    def mean(self) -> torch.Tensor:
        """The flow applied to the base mean, ``f(mean)``: a point estimate (E[z_K] has no
        closed form), used for reconstructions and active units."""
        return self._flow.flow(self.loc, self.context)[0]


class IAFPosterior(nn.Module):
    """q(z|x): N(mean, diag e^logvar) pushed through ``steps`` inverse autoregressive steps.

    Each step (Kingma et al. 2016, eqs. 10-11) computes ``(m, s) = MADE(z, c)`` and
    ``z <- sigma * z + (1 - sigma) * m`` with ``sigma = sigmoid(s)``, so
    ``log q(z_K|x) = log N(z_0; mean, e^logvar) - sum_k sum_d log sigma_kd`` nats. The
    variable ordering is reversed between steps.

    The encoder output is ``[..., 2D + C] = [mean | logvar | context]`` (logvar clamped to
    [-30, 30] as in :class:`~vaekit.posteriors.DiagonalGaussian`). The returned
    distribution (batch ``[...]``, event ``[D]``) has ``rsample``; ``log_prob`` holds for
    the samples it drew, so the log-determinant in the KL term is computed by Monte Carlo
    (``ELBO(kl="mc")``, ``IWAE(k)`` with the standard estimator). Asking it for the density
    of any other z raises ``ValueError``.

    Args:
        dim: D, the latent size.
        steps: number of IAF steps K (>= 1; a plain Gaussian is ``DiagonalGaussian``).
        hidden: width of each MADE's two hidden layers (default ``max(64, 4 D)``).
        context: C, the size of the encoder's extra context vector (0: none).
        gate_bias: initial bias of s: sigmoid(2) ~ 0.88 keeps early steps close to the identity.
    """

    def __init__(
        self,
        dim: int,
        steps: int = 2,
        hidden: int | None = None,
        context: int = 0,
        gate_bias: float = 2.0,
    ):
        super().__init__()
        self.dim = check_count("dim", dim, 1)
        self.steps = check_count("steps", steps, 1)
        self.context = check_count("context", context, 0)
        hidden = max(64, 4 * dim) if hidden is None else check_count("hidden", hidden, 1)
        order = torch.arange(1, dim + 1)
        self.made = nn.ModuleList(
            _MADE(dim, context, hidden, order if k % 2 == 0 else order.flip(0), gate_bias)
            for k in range(steps)
        )

    @property
    def features(self) -> int:
        """Encoder output size this posterior reads: ``2 D + C``."""
        return 2 * self.dim + self.context

    def flow(
        self, z0: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_K = f(z_0)`` and ``log |det dz_K/dz_0| = sum_k sum_d log sigma_kd``.

        ``z0``: ``[..., D]``; ``context``: ``[..., C]`` (same leading axes) or None when C = 0.
        Returns ``([..., D], [...] nats)``.
        """
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for made in self.made:
            m, s = made(z, context)
            gate = torch.sigmoid(s)
            z = gate * z + (1.0 - gate) * m
            log_det = log_det + F.logsigmoid(s).sum(-1)
        return z, log_det

    def forward(self, h: torch.Tensor) -> Distribution:
        if h.dim() < 1 or h.shape[-1] != self.features:
            raise ValueError(
                f"encoder output must have last axis 2 * dim + context = {self.features} "
                f"[mean | logvar | context] for IAFPosterior(dim={self.dim}, "
                f"context={self.context}); received shape {tuple(h.shape)}"
            )
        if validation_enabled():
            check_finite("encoder output", h)
        mean, logvar, context = h.split([self.dim, self.dim, self.context], dim=-1)
        std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
        return _IAFDistribution(self, mean, std, context)
