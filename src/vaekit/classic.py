"""The classic-signature loss ``loss_function(recon_x, x, mu, logvar)``, exact and explicit.

Most VAE code in the wild ends in a ``loss_function(recon_x, x, mu, logvar)`` (the PyTorch
example's, Keras', Flax's): :func:`classic_loss` is a drop-in for it, with what those
functions leave implicit made explicit: whether ``recon_x`` holds probabilities or logits
(``probs``, required for the Bernoulli), the batch ``reduction`` and ``beta``. The same
function, with the same arguments, is :func:`vaekit.interop.keras.classic_loss` and
:func:`vaekit.interop.jax.classic_loss`.

The PyTorch example's ``BCE(recon_x, x, reduction="sum") + KLD`` is
``classic_loss(recon_x, x, mu, logvar, probs=True, reduction="sum").loss``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from vaekit import functional as VF
from vaekit.interop import _formulas as _f
from vaekit.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian
from vaekit.outputs import LossOutput
from vaekit.posteriors import LOGVAR_MAX, LOGVAR_MIN

__all__ = ["classic_loss"]

# what _formulas.check_classic needs from an array namespace, for torch tensors
_XP = SimpleNamespace(
    asarray=torch.as_tensor,
    reshape=torch.reshape,
    is_concrete=lambda a: True,
    to_numpy=lambda a: np.asarray(a.detach().cpu().double()),
)


def classic_loss(
    recon_x: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    probs: bool | None = None,
    likelihood: str = "bernoulli",
    reduction: str = "mean",
    beta: float | torch.Tensor = 1.0,
    scale: float = 1.0,
    param: str = "logvar",
) -> LossOutput:
    """``rec + beta * kl`` per example, reduced over the batch: the classic VAE loss, in nats.

    ``rec = -log p(x | recon_x)`` summed over pixels; ``kl = KL(N(mu, e^logvar) || N(0, I))
    = 0.5 sum(e^logvar - 1 - logvar + mu^2)`` (analytic); ``bound = -rec - kl`` (the ELBO).

    Args:
        recon_x: decoder output ``[B, ...]``: x's shape, or flat ``[B, D]`` (x ``[B, ...]``
            with D values per example is then reshaped to it, as the scripts' ``x.view(-1, 784)``).
        x: data ``[B, ...]`` (in [0, 1] for the Bernoulli likelihoods).
        mu, logvar: ``[B, Z]`` each; logvar clamped to [-30, 30]. With ``param="scale"``
            the fourth argument is sigma > 0 instead (Pyro's ``(loc, scale)``).
        probs: required for ``likelihood="bernoulli"``: ``True`` if recon_x holds
            probabilities (a decoder ending in a sigmoid; log-probabilities clamped at -100,
            as ``F.binary_cross_entropy``), ``False`` for logits. Never guessed.
        likelihood: ``"bernoulli" | "continuous_bernoulli"`` (logits) or ``"gaussian"``
            (recon_x is the mean, sigma = ``scale``; squared error is sigma^2 = 1/2).
        reduction: ``"mean" | "sum" | "none"`` over the batch axis (the PyTorch example sums).
        beta: KL weight (>= 0).

    Returns:
        ``LossOutput(loss, per_example={"rec", "kl", "bound", "loss"})``, each ``[B]`` nats.
    """
    recon_x, x, mu, p = _f.check_classic(
        _XP, recon_x, x, mu, logvar, probs=probs, likelihood=likelihood,
        reduction=reduction, beta=beta, scale=scale, param=param,
    )  # fmt: skip
    if likelihood == "gaussian":
        lik = Gaussian(scale=scale)
    elif likelihood == "continuous_bernoulli":
        lik = ContinuousBernoulli()
    else:
        lik = Bernoulli(probs=bool(probs))
    rec = -lik(recon_x).log_prob(x)
    logvar = 2.0 * torch.log(p) if param == "scale" else p.clamp(LOGVAR_MIN, LOGVAR_MAX)
    kl = VF.kl_normal_std(mu, logvar)
    per_example_loss = rec + beta * kl
    per_example = {"rec": rec, "kl": kl, "bound": -rec - kl, "loss": per_example_loss}
    if reduction == "mean":
        loss = per_example_loss.mean()
    elif reduction == "sum":
        loss = per_example_loss.sum()
    else:
        loss = per_example_loss
    beta_value = float(beta) if isinstance(beta, int | float) else beta.detach()
    metrics = {"rec": rec.detach().mean(), "kl": kl.detach().mean(), "beta": beta_value}
    return LossOutput(loss, per_example, metrics)
