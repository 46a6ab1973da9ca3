"""Posteriors q(z | x): map an encoder output to a reparameterisable distribution."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit._checks import check_choice, check_finite, full_precision, validation_enabled

__all__ = [
    "DiagonalGaussian",
    "LOGVAR_MIN",
    "LOGVAR_MAX",
    "PARAMS",
    "GumbelSoftmax",  # noqa: F822 (lazy: vaekit.discrete)
    "JointPosterior",  # noqa: F822 (lazy: vaekit.discrete)
]


def __getattr__(name: str):
    # the categorical posteriors live in vaekit.discrete (with their distributions and priors)
    if name in ("GumbelSoftmax", "JointPosterior"):
        from vaekit import discrete

        return getattr(discrete, name)
    raise AttributeError(f"module 'vaekit.posteriors' has no attribute {name!r}")


# log-variance is clamped to [-30, 30]: variance in [1e-13, 1e13] keeps exp, KL and
# rsample finite in float32 while never binding in ordinary training.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 30.0
# the same range for a scale parameterisation: sigma in [e^-15, e^15]
SCALE_MIN, SCALE_MAX = math.exp(-15.0), math.exp(15.0)
#: the parameterisations an encoder may state for its second output
PARAMS = ("logvar", "scale")


class LogvarNormal(Normal):
    """``N(loc, e^logvar)``: a ``Normal`` (scale ``e^{logvar/2}``) that keeps its log-variance.

    The KL to the standard normal prior then reads ``logvar`` directly instead of taking the
    log of the scale (:func:`vaekit.priors.UnitNormal`'s registered closed form).
    """

    logvar: torch.Tensor

    @classmethod
    def from_logvar(cls, loc: torch.Tensor, logvar: torch.Tensor) -> LogvarNormal:
        """``N(loc, e^logvar)``, scale ``e^{logvar/2}``."""
        d = cls(loc, torch.exp(0.5 * logvar), validate_args=False)
        d.logvar = logvar
        return d

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new.logvar = self.logvar.expand(torch.Size(batch_shape))
        return new


class DiagonalGaussian(nn.Module):
    """q(z | x) = N(mean, diag(sigma^2)) from an encoder output, in the parameterisation stated.

    ``param="logvar"`` (default): the encoder returns ``[..., 2D] = [mean | logvar]`` or a
    tuple ``(mean, logvar)``, ``sigma = e^{logvar/2}`` with logvar clamped to
    [LOGVAR_MIN, LOGVAR_MAX] = [-30, 30]. ``param="scale"``: ``[mean | sigma]`` or
    ``(mean, sigma)`` (Pyro's ``(loc, scale)``), sigma > 0, clamped to ``[e^-15, e^15]``.
    The parameterisation is stated, never guessed from values. Returns
    ``Independent(Normal(mean, sigma), 1)``: batch ``[...]``, event ``[D]``, with ``rsample``
    (z = mean + sigma * eps).
    """

    def __init__(self, param: str = "logvar"):
        super().__init__()
        check_choice("param", param, PARAMS)
        self.param = param

    def join(self, h: torch.Tensor | tuple | list) -> torch.Tensor:
        """The encoder output as one tensor ``[..., 2D] = [mean | param]`` (a tuple is concatenated).

        A wrong arity or shape is a ``ValueError`` naming what this posterior expects.
        """
        expected = f"a tensor [..., 2D] = [mean | {self.param}] or a tuple (mean, {self.param})"
        if isinstance(h, tuple | list):
            if len(h) != 2 or not all(isinstance(t, torch.Tensor) for t in h):
                kinds = ", ".join(type(t).__name__ for t in h)
                raise ValueError(
                    f"encoder output must be {expected} of two tensors of the same shape "
                    f"(DiagonalGaussian(param={self.param!r})); received a "
                    f"{type(h).__name__} of {len(h)} ({kinds})"
                )
            mean, p = h
            if mean.shape != p.shape or mean.dim() < 1:
                raise ValueError(
                    f"encoder output must be {expected} of the same shape [..., D]; received "
                    f"mean {tuple(mean.shape)} and {self.param} {tuple(p.shape)}"
                )
            return torch.cat([mean, p], dim=-1)
        if not isinstance(h, torch.Tensor):
            raise ValueError(f"encoder output must be {expected}; received {type(h).__name__}")
        if h.dim() < 1 or h.shape[-1] % 2 or h.shape[-1] == 0:
            raise ValueError(
                f"encoder output must be {expected}: an even, non-zero last axis; "
                f"received shape {tuple(h.shape)}"
            )
        return h

    def forward(self, h: torch.Tensor | tuple | list) -> Independent:
        h = self.join(h)
        if validation_enabled():
            check_finite("encoder output", h)
        h = full_precision(h)  # an encoder under torch.autocast
        mean, p = h.chunk(2, dim=-1)
        if self.param == "scale":
            if validation_enabled() and p.numel() and not bool((p > 0).all()):
                raise ValueError(
                    "encoder output's scale (the second half / second element) must be > 0 for "
                    'DiagonalGaussian(param="scale"); received values in '
                    f"[{p.min().item():.4g}, {p.max().item():.4g}] (a log-variance? use "
                    'DiagonalGaussian(param="logvar"))'
                )
            std = p.clamp(SCALE_MIN, SCALE_MAX)
            return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)
        q = LogvarNormal.from_logvar(mean, p.clamp(LOGVAR_MIN, LOGVAR_MAX))
        return Independent(q, 1, validate_args=False)

    @staticmethod
    def latent_dim(encoder_features: int) -> int:
        """Latent size D for an encoder output of ``2D`` features."""
        return encoder_features // 2

    def extra_repr(self) -> str:
        return f"param={self.param!r}"
