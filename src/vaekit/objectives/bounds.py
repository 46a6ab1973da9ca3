"""Bounds on log p(x): the ELBO (with beta and free bits) and the importance-weighted family.

ELBO, IWAE (standard / STL / DReG gradients), MIWAE, CIWAE, PIWAE. Every value in nats per
example; see :mod:`vaekit.objectives._base` for the contract they share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vaekit import functional as VF
from vaekit._checks import check_choice, check_count
from vaekit.objectives._base import (
    KL_PARAM,
    LossOutput,
    Objective,
    Param,
    analytic_kl,
    check_weight,
    log_weights,
    rec_kl,
    register,
)

__all__ = ["ELBO", "IWAE", "MIWAE", "CIWAE", "PIWAE"]

Weight = float | Callable[[int], float]
_K = Param("k", 1, "importance samples K per example", type=int, low=1)
_M = Param("m", 1, "outer samples M (independent groups of K draws)", type=int, low=1)


@register(
    "elbo",
    summary="ELBO: rec + beta KL (beta-VAE, KL warm-up or cyclical annealing, free bits)",
    params=(
        Param("beta", 1.0, "weight of the KL term in the loss (bound stays beta-free)", low=0),
        KL_PARAM,
        Param("samples", 1, "z draws per example", type=int, low=1),
        Param(
            "free_bits", 0.0, "free bits per latent dimension (analytic KL)", units="nats", low=0
        ),
    ),
    schedule="beta",
)
class ELBO(Objective):
    """Evidence lower bound ``E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)``, nats.

    The loss minimised per example is ``rec + beta * KL`` with ``rec = -E_q[log p(x|z)]``
    averaged over ``samples`` draws; ``bound`` is always the beta-free ELBO.

    Args:
        beta: weight of the KL term (Higgins et al. 2017): a number or a schedule
            ``step -> beta`` (:mod:`vaekit.schedules`, e.g. a KL warm-up); reported as
            ``metrics["beta"]``.
        kl: ``"analytic"`` (closed form from the ``kl_divergence`` registry; an error if the
            pair has none) or ``"mc"`` (``mean_s [log q(z_s|x) - log p(z_s)]``, may be < 0).
        samples: number of z draws per example.
        free_bits: lambda of Kingma et al. (2016): the KL term becomes
            ``sum_d max(lambda, mean_batch KL_d)`` nats (per latent dim; analytic KL only).
            ``bound`` and ``kl`` still report the true KL.
        reduction: ``"mean" | "sum" | "none"`` over the batch axis.
    """

    weights = ("beta",)

    def __init__(
        self,
        beta: Weight = 1.0,
        kl: str = "analytic",
        samples: int = 1,
        free_bits: float = 0.0,
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_weight("beta", beta)
        check_choice("kl", kl, ("analytic", "mc"))
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1; received {samples!r}")
        check_weight("free_bits", free_bits)
        if callable(free_bits):
            raise ValueError("free_bits must be a number of nats; received a schedule")
        if free_bits > 0 and kl != "analytic":
            raise ValueError(
                f"free_bits={free_bits} needs per-dimension KL terms: use kl='analytic' "
                "with a factorised prior (free bits on a Monte Carlo KL is not defined here)"
            )
        self.beta, self.kl, self.samples, self.free_bits = beta, kl, samples, float(free_bits)

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
        t = log_weights(model, x, self.samples)
        if self.free_bits > 0:
            rec = -t.log_px.mean(0)
            kl_dims = analytic_kl(t.out.posterior, t.out.prior, per_dim=True)  # [B, D]
            kl = kl_dims.sum(-1)
            # below lambda, a dimension's KL is replaced by the constant lambda (no gradient)
            active = kl_dims.mean(0) > self.free_bits
            kl_term = torch.where(active, kl_dims, torch.full_like(kl_dims, self.free_bits)).sum(-1)
        else:
            rec, kl = rec_kl(t, self.kl)
            kl_term = kl
        return self._output(rec + w["beta"] * kl_term, bound=-rec - kl, rec=rec, kl=kl, weights=w)


@register(
    "iwae",
    summary="IWAE_K: log (1/K) sum_k p(x, z_k) / q(z_k|x) (Burda et al. 2015)",
    params=(
        _K,
        Param(
            "estimator",
            "standard",
            "gradient estimator: standard | stl (sticking the landing) | dreg (doubly "
            "reparameterised)",
            type=str,
            choices=("standard", "stl", "dreg"),
        ),
    ),
)
class IWAE(Objective):
    """Importance-weighted bound ``IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)]`` (Burda et al. 2015).

    ``ELBO <= IWAE_k <= IWAE_2k <= log p(x)``; ``IWAE(k=1)`` is the ELBO with a Monte Carlo KL.
    The loss value is always ``-IWAE_k`` (nats); ``estimator`` changes only the gradient:

    - ``"standard"``: the reparameterised gradient of ``-IWAE_k``.
    - ``"stl"``: sticking the landing (Roeder et al. 2017): log q evaluated with q's
      parameters detached. Unbiased for k = 1; for k > 1 the encoder gradient is biased
      (Tucker et al. 2019) while the decoder gradient is unchanged.
    - ``"dreg"``: doubly reparameterised (Tucker et al. 2019): encoder gradient
      ``sum_i w~_i^2 d log w_i / dz_i dz_i/dphi``, decoder/prior gradient
      ``sum_i w~_i grad log w_i``, w~ the normalised weights; unbiased, lower variance.

    ``per_example`` also reports ``rec`` and ``kl`` (Monte Carlo, averaged over the k draws)
    and ``elbo`` = ``-rec - kl``.
    """

    def __init__(self, k: int = 1, estimator: str = "standard", reduction: str = "mean"):
        super().__init__(reduction)
        check_count("k", k)
        check_choice("estimator", estimator, ("standard", "stl", "dreg"))
        self.k, self.estimator = k, estimator

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        t = log_weights(model, x, self.k, stop_q=self.estimator != "standard")
        log_w = t.log_w
        bound = VF.iwae_bound(log_w)
        if self.estimator == "standard":
            per_example_loss = -bound
        else:
            if self.estimator == "stl":
                surrogate = -bound
            else:
                w = torch.softmax(log_w.detach(), dim=0)
                if t.out.z.requires_grad:
                    # the z-path gradient of sum_i w_i log w_i gets one more factor w_i
                    t.out.z.register_hook(lambda g: g * w.unsqueeze(-1))
                surrogate = -(w * log_w).sum(0)
            # report -IWAE_k, differentiate the surrogate
            per_example_loss = -bound.detach() + (surrogate - surrogate.detach())
        rec, kl = rec_kl(t, "mc")
        return self._output(per_example_loss, bound=bound, rec=rec, kl=kl, bound_name="iwae")


class _Grouped(Objective):
    """M groups of K draws z ~ q(z|x) per example (MIWAE, PIWAE)."""

    def __init__(self, m: int = 1, k: int = 1, reduction: str = "mean"):
        super().__init__(reduction)
        check_count("m", m)
        check_count("k", k)
        self.m, self.k = m, k


@register(
    "miwae",
    summary="MIWAE_{M,K}: the mean of M independent IWAE_K estimates (Rainforth et al. 2018)",
    params=(_M, _K),
)
class MIWAE(_Grouped):
    """Multiply importance weighted bound (Rainforth et al. 2018), nats.

    ``MIWAE_{M,K} = (1/M) sum_m log (1/K) sum_k w_{m,k}`` with M*K draws z ~ q(z|x): the
    mean of M independent IWAE_K estimates. ``MIWAE(m=1, k)`` is ``IWAE(k)``; ``MIWAE(m, k=1)``
    is the ELBO with M samples. Larger M at fixed M*K gives the encoder a better gradient
    signal-to-noise ratio, larger K a tighter bound.
    """

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        t = log_weights(model, x, self.m * self.k)
        log_w = t.log_w.reshape(self.m, self.k, -1)  # draw i = m * K + k
        bound = VF.log_mean_exp(log_w, dim=1).mean(0)
        rec, kl = rec_kl(t, "mc")
        return self._output(-bound, bound=bound, rec=rec, kl=kl, bound_name="miwae")


@register(
    "ciwae",
    summary="CIWAE: beta ELBO_K + (1 - beta) IWAE_K on the same K draws (Rainforth et al. 2018)",
    params=(
        Param("beta", 0.5, "mixing weight in [0, 1]: 1 = the K-sample ELBO, 0 = IWAE_K"),
        _K,
    ),
)
class CIWAE(Objective):
    """Combination bound ``beta * ELBO_K + (1 - beta) * IWAE_K`` (Rainforth et al. 2018), nats.

    Both terms use the same K draws; ``beta=1`` is the K-sample ELBO (Monte Carlo KL),
    ``beta=0`` is IWAE_K. A convex combination of lower bounds is a lower bound. ``beta``
    may be a schedule with values in [0, 1]; ``metrics["beta"]`` reports the one used.
    """

    weights = ("beta",)

    def __init__(self, beta: Weight = 0.5, k: int = 1, reduction: str = "mean"):
        super().__init__(reduction)
        if not callable(beta) and not (
            isinstance(beta, int | float) and not isinstance(beta, bool) and 0.0 <= beta <= 1.0
        ):
            raise ValueError(f"beta must be in [0, 1]; received {beta!r}")
        check_count("k", k)
        self.beta, self.k = beta, k

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
        beta = w["beta"]
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"CIWAE's beta schedule left [0, 1]: {beta} at step {step}")
        t = log_weights(model, x, self.k)
        log_w = t.log_w
        bound = beta * log_w.mean(0) + (1.0 - beta) * VF.iwae_bound(log_w)
        rec, kl = rec_kl(t, "mc")
        return self._output(-bound, bound=bound, rec=rec, kl=kl, bound_name="ciwae", weights=w)


@register(
    "piwae",
    summary="PIWAE: encoder on MIWAE_{M,K}, decoder on IWAE_{MK}, one set of draws",
    params=(_M, _K),
)
class PIWAE(_Grouped):
    """Partially importance weighted auto-encoder (Rainforth et al. 2018), nats.

    One set of M*K draws z ~ q(z|x) serves two bounds: the inference network (q's parameters
    and the reparameterised path of z) follows the gradient of ``MIWAE_{M,K}``, the generative
    network (decoder and prior) that of ``IWAE_{MK}``. ``bound`` and the loss value are
    ``IWAE_{MK}`` / ``-IWAE_{MK}``; ``per_example["miwae"]`` is ``MIWAE_{M,K}``.

    Gradient routing: with ``c = softmax(log w)`` over all MK draws (d IWAE / d log w) and
    ``c'`` the softmax within each group of K divided by M (d MIWAE / d log w), the surrogate
    ``-sum c' log w - sum (c - c') log p(x, z-bar)`` (z-bar = z detached: a second decoder
    pass) gives the generative parameters ``sum c grad log p(x, z)`` and the inference
    parameters ``sum c' grad log w``. A prior whose parameters come from the encoder
    (VampPrior) counts as generative. A likelihood with running statistics
    (:class:`~vaekit.likelihoods.RunningGaussian`) sees two ``log_prob`` calls per step.
    """

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        t = log_weights(model, x, self.m * self.k)
        log_w = t.log_w  # [MK, B], draw i = m * K + k
        bound = VF.iwae_bound(log_w)
        miwae = VF.log_mean_exp(log_w.reshape(self.m, self.k, -1), dim=1).mean(0)
        lw = log_w.detach()
        c = torch.softmax(lw, dim=0)
        c_group = torch.softmax(lw.reshape(self.m, self.k, -1), dim=1).reshape_as(lw) / self.m
        z_bar = t.out.z.detach()
        log_p_bar = model.decode(z_bar).log_prob(x) + t.out.prior.log_prob(z_bar)
        surrogate = -(c_group * log_w).sum(0) - ((c - c_group) * log_p_bar).sum(0)
        per_example_loss = -bound.detach() + (surrogate - surrogate.detach())
        rec, kl = rec_kl(t, "mc")
        return self._output(
            per_example_loss,
            bound=bound,
            rec=rec,
            kl=kl,
            bound_name="piwae",
            terms={"miwae": miwae},
        )
