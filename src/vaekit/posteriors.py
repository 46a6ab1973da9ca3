"""Posteriors q(z | x): map an encoder output to a reparameterisable distribution."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaekit._checks import check_finite, full_precision, validation_enabled

__all__ = [
    "DiagonalGaussian",
    "LOGVAR_MIN",
    "LOGVAR_MAX",
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


class DiagonalGaussian(nn.Module):
    """q(z | x) = N(mean, diag(e^logvar)) from an encoder output ``[..., 2D] = [mean | logvar]``.

    Returns ``Independent(Normal(mean, e^{logvar/2}), 1)``: batch shape ``[...]``, event
    ``[D]``, with ``rsample`` (the reparameterisation z = mean + sigma * eps). logvar is
    clamped to [LOGVAR_MIN, LOGVAR_MAX] = [-30, 30].
    """

    def forward(self, h: torch.Tensor) -> Independent:
        if h.dim() < 1 or h.shape[-1] % 2 or h.shape[-1] == 0:
            raise ValueError(
                "encoder output must have an even, non-zero last axis [mean | log-variance]; "
                f"received shape {tuple(h.shape)}"
            )
        if validation_enabled():
            check_finite("encoder output", h)
        h = full_precision(h)  # an encoder under torch.autocast
        mean, logvar = h.chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
        return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)

    @staticmethod
    def latent_dim(encoder_features: int) -> int:
        """Latent size D for an encoder output of ``2D`` features."""
        return encoder_features // 2
