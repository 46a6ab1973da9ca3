"""The variational Renyi (VR) bound of Li & Turner (2016), K samples, nats per example.

``L_alpha,K(x) = 1/(1-alpha) * log (1/K) sum_k w_k^(1-alpha)``, ``w_k = p(x, z_k) / q(z_k|x)``,
z_k ~ q(z|x): alpha = 0 is IWAE_K, alpha -> 1 the K-sample ELBO. See :class:`Renyi`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vaekit import functional as VF
from vaekit._checks import check_count
from vaekit.objectives._base import (
    LossOutput,
    Objective,
    Param,
    log_weights,
    rec_kl,
    register,
)

__all__ = ["Renyi", "renyi_bound"]

Weight = float | Callable[[int], float]


def renyi_bound(log_w: torch.Tensor, alpha: float) -> torch.Tensor:
    """``1/(1-alpha) log mean_k exp((1-alpha) log_w_k)``, nats ``[B]``; ``log_w`` is ``[K, B]``.

    Exact at ``alpha == 1`` (``mean_k log_w_k``) and accurate near it: with ``s = 1 - alpha``
    and ``m`` the draw that maximises ``s log_w`` (so every ``s (log_w - m) <= 0``),
    ``L = m + r / s`` where ``r = log mean exp(s (log_w - m))`` is taken from
    :func:`vaekit.functional.log_mean_exp` when ``|r|`` is large and from
    ``log1p(mean(expm1(.)))`` (no cancellation: every term has one sign) when it is small.
    Either way ``r / s`` keeps a relative error of a few ulps, for any finite alpha.
    """
    if log_w.dim() != 2:
        raise ValueError(f"log_w must have shape [K, B]; received shape {tuple(log_w.shape)}")
    s = 1.0 - float(alpha)
    if s == 0.0:
        return log_w.mean(0)
    # the anchor: argmax of s*log_w (max for alpha < 1, min for alpha > 1), no gradient needed
    # since L - m is shift-invariant (d L / d m = 0)
    m = (log_w.amax(0) if s > 0 else log_w.amin(0)).detach()
    t = s * (log_w - m)  # [K, B], every entry <= 0, one entry == 0
    r_log = VF.log_mean_exp(t, dim=0)  # accurate in relative terms when |r| is not small
    small = r_log > -0.5
    # the expm1 form only where it is used, so the unused branch stays finite (and its gradient)
    mean_expm1 = torch.where(small, torch.expm1(t).mean(0), torch.zeros_like(r_log))
    r = torch.where(small, torch.log1p(mean_expm1), r_log)
    return m + r / s


@register(
    "renyi",
    summary="Renyi / VR bound: 1/(1-alpha) log (1/K) sum_k w_k^(1-alpha) (Li & Turner 2016)",
    params=(
        Param(
            "alpha",
            0.5,
            "Renyi order alpha (any finite number): 0 = IWAE_K, 1 = the K-sample ELBO; "
            "alpha >= 0 is a lower bound on log p(x)",
        ),
        Param("k", 1, "samples K per example", type=int, low=1),
    ),
)
class Renyi(Objective):
    """Variational Renyi bound ``L_alpha,K = 1/(1-alpha) log (1/K) sum_k w_k^(1-alpha)``, nats.

    ``log w_k = log p(x, z_k) - log q(z_k|x)``, z_k ~ q(z|x) (Li & Turner 2016, "Renyi
    Divergence Variational Inference", NeurIPS); computed in log space (:func:`renyi_bound`).
    The loss is ``-L_alpha,K`` per example, with the reparameterised gradient.

    Limits and order: ``alpha = 0`` is ``IWAE_K``; ``alpha -> 1`` is the K-sample ELBO
    ``mean_k log w_k`` (Monte Carlo KL; exact at 1, stable near 1); ``alpha -> +inf`` tends to
    ``min_k log w_k``, ``alpha -> -inf`` to ``max_k log w_k``. For the same draws it is
    non-increasing in alpha (a power mean of the w_k), and with ``k=1`` every alpha gives
    ``log w_1``.

    Accepted: any finite alpha, or a schedule ``step -> alpha`` (finite values; reported as
    ``metrics["alpha"]``).

    - ``alpha >= 0``: ``E[L_alpha,K] <= log p(x)``, a lower bound (``alpha`` in [0, 1]
      interpolates between IWAE_K and the ELBO; ``alpha > 1`` lies below the ELBO);
      ``bound`` is ``L_alpha,K``.
    - ``alpha < 0``: not a bound: ``L_alpha,K >= IWAE_K`` on every draw, and as K grows
      ``E[L_alpha,K]`` tends to the exact Renyi value ``L_alpha >= log p(x)``, so it can
      exceed log p(x). ``bound`` is then ``IWAE_K`` of the same draws (a lower bound).

    ``per_example["renyi"]`` (and ``metrics["renyi"]``) is always ``L_alpha,K``;
    ``rec``/``kl`` are Monte Carlo over the K draws, ``elbo = -rec - kl``.
    """

    weights = ("alpha",)

    def __init__(self, alpha: Weight = 0.5, k: int = 1, reduction: str = "mean"):
        super().__init__(reduction)
        if not callable(alpha):
            _check_alpha(alpha)
        check_count("k", k)
        self.alpha, self.k = alpha, k

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
        alpha = w["alpha"]
        if not math.isfinite(alpha):
            raise ValueError(
                f"Renyi's alpha schedule gave a non-finite alpha={alpha} at step {step}"
            )
        t = log_weights(model, x, self.k)
        log_w = t.log_w
        renyi = renyi_bound(log_w, alpha)
        bound = renyi if alpha >= 0 else VF.iwae_bound(log_w)
        rec, kl = rec_kl(t, "mc")
        return self._output(
            -renyi,
            bound=bound,
            rec=rec,
            kl=kl,
            bound_name="renyi",
            terms={"renyi": renyi},
            weights=w,
        )


def _check_alpha(alpha) -> None:
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and math.isfinite(alpha)):
        raise ValueError(
            f"alpha must be a finite number (the Renyi order) or a schedule; received {alpha!r}"
        )
