"""Objectives: small callables ``objective(model, x) -> LossOutput``.

They hold hyperparameters only; the model and the batch are arguments of each call.
Every per-example term is in nats, shape ``[B]``; ``reduction`` acts on the batch axis
only. Sign conventions (DESIGN.md): ``bound`` is the lower bound on log p(x) that the
objective estimates (negative for images), ``rec = -E_q[log p(x|z)]`` (positive),
``kl = KL(q(z|x) || p(z))`` (analytic: never negative), ``loss`` is what is minimised.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit import functional as VF
from vaekit._checks import check_choice, check_positive
from vaekit.models.vae import VAEOutput

__all__ = ["LossOutput", "ELBO", "IWAE", "MIWAE", "CIWAE", "log_weights", "analytic_kl"]

_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class LossOutput:
    """``loss`` (reduced as asked), ``per_example`` terms ``[B]`` and detached batch ``metrics``."""

    loss: torch.Tensor
    per_example: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def _describe(d: Distribution) -> str:
    if isinstance(d, Independent):
        return f"Independent({_describe(d.base_dist)}, {d.reinterpreted_batch_ndims})"
    return type(d).__name__


def analytic_kl(q: Distribution, p: Distribution, per_dim: bool = False) -> torch.Tensor:
    """KL(q || p) from the ``torch.distributions`` registry, nats ``[B]`` (``[B, D]`` with ``per_dim``).

    ``per_dim`` returns the terms of a factorised pair before the sum over latents (both
    ``Independent``); a pair without a registered closed form raises ``ValueError``.
    """
    try:
        if per_dim:
            if not (isinstance(q, Independent) and isinstance(p, Independent)):
                raise NotImplementedError
            return kl_divergence(q.base_dist, p.base_dist)
        return kl_divergence(q, p)
    except NotImplementedError:
        what = "per-dimension" if per_dim else "analytic"
        raise ValueError(
            f"there is no {what} KL for the pair ({_describe(q)}, {_describe(p)}) in the "
            "torch.distributions kl_divergence registry; use kl='mc' (a Monte Carlo estimate) "
            "or register a closed form with torch.distributions.kl.register_kl"
        ) from None


class _Terms:
    """Log-densities of S samples z_s ~ q(z|x), each ``[S, B]`` nats, computed on first use.

    Lazy, so an analytic-KL ELBO never pays for log q and log p of the samples.
    """

    def __init__(self, model, x: torch.Tensor, out: VAEOutput, stop_q: bool):
        self._model, self._x, self.out, self._stop_q = model, x, out, stop_q

    @functools.cached_property
    def log_px(self) -> torch.Tensor:
        """log p(x | z_s)."""
        return self.out.likelihood.log_prob(self._x)

    @functools.cached_property
    def log_pz(self) -> torch.Tensor:
        """log p(z_s)."""
        return self.out.prior.log_prob(self.out.z)

    @functools.cached_property
    def log_qz(self) -> torch.Tensor:
        """log q(z_s | x), with q's parameters detached when ``stop_q``."""
        q = self.out.posterior
        if self._stop_q:
            detached = getattr(self._model, "detached_posterior", None)
            q = (
                detached(self.out)
                if detached is not None
                else self._model.posterior(self.out.encoder_out.detach())
            )
        return q.log_prob(self.out.z)

    @property
    def log_w(self) -> torch.Tensor:
        """Log importance weights ``log p(x, z_s) - log q(z_s | x)``, ``[S, B]``."""
        return self.log_px + self.log_pz - self.log_qz


def log_weights(
    model, x: torch.Tensor, samples: int, stop_q: bool = False, prior: Distribution | None = None
) -> _Terms:
    """One pass of ``model`` and the log-densities that every sampled bound is built from.

    ``stop_q=True`` evaluates log q(z|x) with q's parameters detached (z keeps its
    reparameterisation path): the "sticking the landing" form (Roeder et al. 2017).
    ``prior``: a p(z) built once by the caller (see :meth:`vaekit.VAE.forward`).
    """
    out = model(x, samples=samples) if prior is None else model(x, samples=samples, prior=prior)
    return _Terms(model, x, out, stop_q)


@dataclass(frozen=True)
class ELBO:
    """Evidence lower bound ``E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)``, nats.

    The loss minimised per example is ``rec + beta * KL`` with ``rec = -E_q[log p(x|z)]``
    averaged over ``samples`` draws; ``bound`` is always the beta-free ELBO.

    Args:
        beta: weight of the KL term in the loss (Higgins et al. 2017); overridable per call.
        kl: ``"analytic"`` (closed form from the ``kl_divergence`` registry; an error if the
            pair has none) or ``"mc"`` (``mean_s [log q(z_s|x) - log p(z_s)]``, may be < 0).
        samples: number of z draws per example.
        free_bits: lambda of Kingma et al. (2016): the KL term becomes
            ``sum_d max(lambda, mean_batch KL_d)`` nats (per latent dim; analytic KL only).
            ``bound`` and ``kl`` still report the true KL.
        reduction: ``"mean" | "sum" | "none"`` over the batch axis.
    """

    beta: float = 1.0
    kl: str = "analytic"
    samples: int = 1
    free_bits: float = 0.0
    reduction: str = "mean"

    def __post_init__(self):
        check_positive("beta", self.beta, allow_zero=True)
        check_choice("kl", self.kl, ("analytic", "mc"))
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1; received {self.samples!r}")
        check_positive("free_bits", self.free_bits, allow_zero=True)
        check_choice("reduction", self.reduction, _REDUCTIONS)
        if self.free_bits > 0 and self.kl != "analytic":
            raise ValueError(
                f"free_bits={self.free_bits} needs per-dimension KL terms: use kl='analytic' "
                "with a factorised prior (free bits on a Monte Carlo KL is not defined here)"
            )

    def __call__(self, model, x: torch.Tensor, *, beta: float | None = None) -> LossOutput:
        beta = self.beta if beta is None else beta
        t = log_weights(model, x, self.samples)
        rec = -t.log_px.mean(0)
        if self.kl == "analytic":
            q, p = t.out.posterior, t.out.prior
            if self.free_bits > 0:
                kl_dims = analytic_kl(q, p, per_dim=True)  # [B, D]
                kl = kl_dims.sum(-1)
                # below lambda, a dimension's KL is replaced by the constant lambda (no gradient)
                active = kl_dims.mean(0) > self.free_bits
                kl_term = torch.where(
                    active, kl_dims, torch.full_like(kl_dims, self.free_bits)
                ).sum(-1)
            else:
                kl = kl_term = analytic_kl(q, p)
        else:
            kl = kl_term = (t.log_qz - t.log_pz).mean(0)
        bound = -rec - kl
        per_example_loss = rec + beta * kl_term
        loss = _reduce(per_example_loss, self.reduction)
        metrics = {
            "loss": per_example_loss.detach().mean(),
            "elbo": bound.detach().mean(),
            "rec": rec.detach().mean(),
            "kl": kl.detach().mean(),
        }
        return LossOutput(
            loss, {"bound": bound, "rec": rec, "kl": kl, "loss": per_example_loss}, metrics
        )

    def replace(self, **changes) -> ELBO:
        """A copy with some hyperparameters changed (e.g. ``beta`` from a schedule)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class IWAE:
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

    k: int = 1
    estimator: str = "standard"
    reduction: str = "mean"

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1; received {self.k!r}")
        check_choice("estimator", self.estimator, ("standard", "stl", "dreg"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
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
        return _sampled_output(t, bound, per_example_loss, self.reduction, "iwae")


def _sampled_output(
    t: _Terms, bound: torch.Tensor, per_example_loss: torch.Tensor, reduction: str, name: str
) -> LossOutput:
    """The LossOutput of a multi-sample bound: ``bound``, and Monte Carlo ``rec``, ``kl``,
    ``elbo`` averaged over all the draws, each ``[B]`` nats."""
    rec = -t.log_px.mean(0)
    kl = (t.log_qz - t.log_pz).mean(0)
    per_example = {
        "bound": bound,
        "rec": rec,
        "kl": kl,
        "elbo": -rec - kl,
        "loss": per_example_loss,
    }
    metrics = {
        "loss": per_example_loss.detach().mean(),
        name: bound.detach().mean(),
        "elbo": (-rec - kl).detach().mean(),
        "rec": rec.detach().mean(),
        "kl": kl.detach().mean(),
    }
    return LossOutput(_reduce(per_example_loss, reduction), per_example, metrics)


@dataclass(frozen=True)
class MIWAE:
    """Multiply importance weighted bound (Rainforth et al. 2018), nats.

    ``MIWAE_{M,K} = (1/M) sum_m log (1/K) sum_k w_{m,k}`` with M*K draws z ~ q(z|x): the
    mean of M independent IWAE_K estimates. ``MIWAE(m=1, k)`` is ``IWAE(k)``; ``MIWAE(m, k=1)``
    is the ELBO with M samples. Larger M at fixed M*K gives the encoder a better gradient
    signal-to-noise ratio, larger K a tighter bound.
    """

    m: int = 1
    k: int = 1
    reduction: str = "mean"

    def __post_init__(self):
        for name in ("m", "k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; received {v!r}")
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, self.m * self.k)
        log_w = t.log_w.reshape(self.m, self.k, -1)  # draw i = m * K + k
        bound = VF.log_mean_exp(log_w, dim=1).mean(0)
        return _sampled_output(t, bound, -bound, self.reduction, "miwae")


@dataclass(frozen=True)
class CIWAE:
    """Combination bound ``beta * ELBO_K + (1 - beta) * IWAE_K`` (Rainforth et al. 2018), nats.

    Both terms use the same K draws; ``beta=1`` is the K-sample ELBO (Monte Carlo KL),
    ``beta=0`` is IWAE_K. A convex combination of lower bounds is a lower bound.
    """

    beta: float = 0.5
    k: int = 1
    reduction: str = "mean"

    def __post_init__(self):
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1]; received {self.beta!r}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1; received {self.k!r}")
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, self.k)
        log_w = t.log_w
        bound = self.beta * log_w.mean(0) + (1.0 - self.beta) * VF.iwae_bound(log_w)
        return _sampled_output(t, bound, -bound, self.reduction, "ciwae")
