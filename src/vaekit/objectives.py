"""Objectives: small callables ``objective(model, x) -> LossOutput``.

They hold hyperparameters only; the model and the batch are arguments of each call.
Every per-example term is in nats, shape ``[B]``; ``reduction`` acts on the batch axis
only. Sign conventions (DESIGN.md): ``bound`` is the lower bound on log p(x) that the
objective estimates (negative for images), ``rec = -E_q[log p(x|z)]`` (positive),
``kl = KL(q(z|x) || p(z))`` (analytic: never negative), ``loss`` is what is minimised.

Bounds: ELBO, IWAE, MIWAE, CIWAE, PIWAE. Regularised ELBOs, each the ELBO's terms
(:func:`rec_kl`) plus one term: beta-VAE is ``ELBO(beta=...)``; CapacityELBO, GECO,
BetaTCVAE, FactorVAE, DIPVAE, InfoVAE, WAE. GECO and FactorVAE hold state (a multiplier, a
discriminator): they are ``nn.Module``s whose ``state_dict`` holds all of it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, kl_divergence
from torch.func import functional_call

from vaekit import functional as VF
from vaekit._checks import check_choice, check_positive
from vaekit._distributed import all_reduce_, broadcast_, world_size
from vaekit.models.vae import VAEOutput
from vaekit.schedules import Capacity

__all__ = [
    "LossOutput",
    "ELBO",
    "IWAE",
    "MIWAE",
    "CIWAE",
    "PIWAE",
    "CapacityELBO",
    "GECO",
    "BetaTCVAE",
    "FactorVAE",
    "DIPVAE",
    "InfoVAE",
    "TripletELBO",
    "PerceptualELBO",
    "triplet_indices",
    "WAE",
    "log_weights",
    "analytic_kl",
    "rec_kl",
]

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


def rec_kl(t: _Terms, kl: str = "analytic") -> tuple[torch.Tensor, torch.Tensor]:
    """The two ELBO terms of one pass, nats ``[B]``: ``rec = -mean_s log p(x | z_s)`` and the KL.

    ``kl="analytic"``: KL(q(z|x) || p(z)) from the registry (:func:`analytic_kl`);
    ``kl="mc"``: ``mean_s [log q(z_s|x) - log p(z_s)]`` over the same draws. Every
    ELBO-based objective (ELBO, CapacityELBO, GECO, FactorVAE, DIPVAE, InfoVAE, WAE) starts here.
    """
    rec = -t.log_px.mean(0)
    if kl == "analytic":
        return rec, analytic_kl(t.out.posterior, t.out.prior)
    return rec, (t.log_qz - t.log_pz).mean(0)


def _elbo_output(
    rec: torch.Tensor,
    kl: torch.Tensor,
    per_example_loss: torch.Tensor,
    reduction: str,
    terms: dict[str, torch.Tensor] | None = None,
    metrics: dict[str, torch.Tensor] | None = None,
) -> LossOutput:
    """LossOutput of an ELBO-based objective: ``bound = -rec - kl`` (the beta-free ELBO),
    ``rec``, ``kl``, ``loss`` and any extra per-example ``terms`` ``[B]``; metrics hold their
    batch means (``elbo`` for the bound) plus extra scalar ``metrics``."""
    bound = -rec - kl
    per_example = {"bound": bound, "rec": rec, "kl": kl, "loss": per_example_loss, **(terms or {})}
    means = {
        "loss": per_example_loss.detach().mean(),
        "elbo": bound.detach().mean(),
        "rec": rec.detach().mean(),
        "kl": kl.detach().mean(),
    }
    means.update({k: v.detach().mean() for k, v in (terms or {}).items()})
    means.update({k: torch.as_tensor(v).detach() for k, v in (metrics or {}).items()})
    return LossOutput(_reduce(per_example_loss, reduction), per_example, means)


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
        return _elbo_output(rec, kl, rec + beta * kl_term, self.reduction)

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
    t: _Terms,
    bound: torch.Tensor,
    per_example_loss: torch.Tensor,
    reduction: str,
    name: str,
    terms: dict[str, torch.Tensor] | None = None,
) -> LossOutput:
    """The LossOutput of a multi-sample bound: ``bound``, and Monte Carlo ``rec``, ``kl``,
    ``elbo`` averaged over all the draws, each ``[B]`` nats, plus extra per-example ``terms``."""
    rec = -t.log_px.mean(0)
    kl = (t.log_qz - t.log_pz).mean(0)
    per_example = {
        "bound": bound,
        "rec": rec,
        "kl": kl,
        "elbo": -rec - kl,
        "loss": per_example_loss,
        **(terms or {}),
    }
    metrics = {
        "loss": per_example_loss.detach().mean(),
        name: bound.detach().mean(),
        "elbo": (-rec - kl).detach().mean(),
        "rec": rec.detach().mean(),
        "kl": kl.detach().mean(),
        **{k: v.detach().mean() for k, v in (terms or {}).items()},
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


# --- regularised ELBOs and the IWAE family, continued (issues 6 and 8) ------------------------
#
# Each objective below starts from the same pass (log_weights) and the same two ELBO terms
# (rec_kl); only the term it adds or reweights is written here. beta-VAE is ELBO(beta=...).
# Batch statistics (a DIP covariance penalty, an MMD) are shared by every example: their
# per-example entry repeats the batch value, so reduction="mean" adds it once.


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number; received {value!r}")
    check_positive(name, value, allow_zero=True)


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}")


@dataclass(frozen=True)
class PIWAE:
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

    m: int = 1
    k: int = 1
    reduction: str = "mean"

    def __post_init__(self):
        _check_count("m", self.m)
        _check_count("k", self.k)
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
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
        return _sampled_output(
            t, bound, per_example_loss, self.reduction, "piwae", {"miwae": miwae}
        )


@dataclass(frozen=True)
class CapacityELBO:
    """Capacity-annealed beta-VAE (Burgess et al. 2018): loss ``rec + gamma |KL - C(step)|`` nats.

    ``C(step) = c_max min(1, step / steps)`` (:class:`vaekit.schedules.Capacity`); defaults
    are the paper's dSprites values (gamma = 1000, C_max = 25 nats over 100,000 steps).
    The absolute value acts per example, as in the paper's formula (several public
    implementations apply it to the batch-mean KL instead). ``step=None`` (evaluation) uses
    ``C = c_max``. ``per_example["capacity_gap"] = |KL - C|``; ``metrics["capacity"] = C``.
    ``bound`` is the ordinary ELBO.
    """

    gamma: float = 1000.0
    c_max: float = 25.0
    steps: int = 100_000
    kl: str = "analytic"
    reduction: str = "mean"

    def __post_init__(self):
        _check_weight("gamma", self.gamma)
        Capacity(self.c_max, self.steps)  # validates c_max and steps
        check_choice("kl", self.kl, ("analytic", "mc"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    @property
    def capacity(self) -> Capacity:
        """The schedule ``step -> C`` nats."""
        return Capacity(self.c_max, self.steps)

    def __call__(self, model, x: torch.Tensor, *, step: int | None = None) -> LossOutput:
        c = float(self.c_max) if step is None else self.capacity(step)
        rec, kl = rec_kl(log_weights(model, x, 1), self.kl)
        gap = (kl - c).abs()
        return _elbo_output(
            rec,
            kl,
            rec + self.gamma * gap,
            self.reduction,
            {"capacity_gap": gap},
            {"capacity": torch.tensor(c)},
        )


class GECO(nn.Module):
    """Constrained optimisation of the ELBO's terms (Rezende & Viola 2018, "Taming VAEs").

    Loss per example ``KL + lambda * C`` nats with the constraint ``C = rec - tolerance``:
    ``rec = -E_q[log p(x|z)]`` is the per-example reconstruction NLL in nats (for a fixed-sigma
    Gaussian, ``||x - mean||^2 / (2 sigma^2)`` plus a constant), so ``tolerance`` is in nats per
    example. After each training call (``self.training`` and gradients on), with the batch
    mean ``C_t``: ``C_ma <- alpha C_ma + (1 - alpha) C_t`` (``C_ma = C_1`` at the first call),
    then ``lambda <- clamp(lambda exp(lr * C_ma), lambda_min, lambda_max)``, detached. The
    call's loss uses lambda from before its update. lambda, C_ma and the update count are
    buffers (``state_dict``). ``per_example["constraint"] = C``; metrics ``lambda`` (used),
    ``constraint_ma`` (after the update). ``bound`` is the ordinary ELBO.

    The paper also swaps the value of C for its moving average inside the loss; that changes
    the reported number only, not the gradient, and is not done here.
    """

    def __init__(
        self,
        tolerance: float,
        alpha: float = 0.99,
        lambda_init: float = 1.0,
        lr: float = 1e-3,
        lambda_min: float = 1e-6,
        lambda_max: float = 1e6,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__()
        if isinstance(tolerance, bool) or not (
            isinstance(tolerance, int | float) and math.isfinite(tolerance)
        ):
            raise ValueError(f"tolerance must be a finite number of nats; received {tolerance!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1); received {alpha!r}")
        check_positive("lr", lr)
        check_positive("lambda_min", lambda_min)
        if not lambda_min <= lambda_init <= lambda_max:
            raise ValueError(
                f"lambda_init must be in [lambda_min, lambda_max] = [{lambda_min}, {lambda_max}]; "
                f"received {lambda_init!r}"
            )
        check_choice("kl", kl, ("analytic", "mc"))
        check_choice("reduction", reduction, _REDUCTIONS)
        self.tolerance, self.alpha, self.lr = float(tolerance), float(alpha), float(lr)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.kl, self.reduction = kl, reduction
        self.register_buffer("lagrange", torch.tensor(float(lambda_init)))
        self.register_buffer("constraint_ma", torch.tensor(0.0))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))

    def forward(self, model, x: torch.Tensor) -> LossOutput:
        rec, kl = rec_kl(log_weights(model, x, 1), self.kl)
        constraint = rec - self.tolerance
        lam = self.lagrange.clone()  # the loss keeps this value; the buffer is updated in place
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                c_t = constraint.detach().mean().to(self.constraint_ma)
                ma = self.alpha * self.constraint_ma + (1.0 - self.alpha) * c_t
                self.constraint_ma.copy_(torch.where(self.updates == 0, c_t, ma))
                new = self.lagrange * torch.exp(self.lr * self.constraint_ma)
                self.lagrange.copy_(new.clamp(self.lambda_min, self.lambda_max))
                self.updates += 1
        return _elbo_output(
            rec,
            kl,
            kl + lam * constraint,
            self.reduction,
            {"constraint": constraint},
            {"lambda": lam, "constraint_ma": self.constraint_ma.clone()},
        )

    def extra_repr(self) -> str:
        return (
            f"tolerance={self.tolerance}, alpha={self.alpha}, lr={self.lr}, "
            f"lambda={float(self.lagrange):.4g}"
        )


def _factorised(name: str, d: Distribution, objective: str) -> Distribution:
    """The per-dimension base of ``Independent(base, 1)``; other distributions are an error."""
    if not (isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1):
        raise ValueError(
            f"{objective} needs a factorised {name}, Independent(base, 1) over the latent axis "
            f"(e.g. StandardNormal, LearnableGaussian, DiagonalGaussian); received {_describe(d)}"
        )
    return d.base_dist


@dataclass(frozen=True)
class BetaTCVAE:
    """beta-TCVAE (Chen et al. 2018): ``rec + alpha MI + beta TC + gamma DWKL`` per example, nats.

    For one draw z ~ q(z|x) the Monte Carlo KL splits exactly as
    ``log q(z|x) - log p(z) = [log q(z|x) - log q(z)] + [log q(z) - sum_j log q(z_j)]
    + [sum_j log q(z_j) - sum_j log p(z_j)]`` = index-code MI + total correlation +
    dimension-wise KL, with log q(z) and log q(z_j) estimated over the minibatch by
    :func:`vaekit.functional.aggregate_log_q` (``estimator="mws"`` or ``"mss"``; both need
    ``dataset_size`` N >= the batch size). ``alpha = beta = gamma = 1`` is the ELBO with a
    one-sample KL. Needs a factorised posterior and prior (``Independent`` over the latent
    axis). ``per_example``: ``bound`` (one-sample ELBO), ``rec``, ``kl`` (= mi + tc + dwkl),
    ``loss``, ``mi``, ``tc``, ``dwkl``. MWS, as published, underestimates log q(z) (by log N
    when all posteriors coincide), so its MI and TC carry an offset; MSS is unbiased for q(z).
    """

    dataset_size: int
    beta: float = 6.0
    alpha: float = 1.0
    gamma: float = 1.0
    estimator: str = "mws"
    reduction: str = "mean"

    def __post_init__(self):
        _check_count("dataset_size", self.dataset_size, 2)
        for name in ("beta", "alpha", "gamma"):
            _check_weight(name, getattr(self, name))
        check_choice("estimator", self.estimator, ("mws", "mss"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, 1)
        q = _factorised("posterior", t.out.posterior, "BetaTCVAE")
        _factorised("prior", t.out.prior, "BetaTCVAE")  # so log p(z) = sum_j log p(z_j)
        z = t.out.z[0]  # [B, D]
        log_q = q.log_prob(z.unsqueeze(1))  # [B, B, D]: log q(z_id | x_j)
        log_qz, log_prod_qzj = VF.aggregate_log_q(log_q, self.dataset_size, self.estimator)
        rec, kl = rec_kl(t, "mc")
        mi = t.log_qz[0] - log_qz
        tc = log_qz - log_prod_qzj
        dwkl = log_prod_qzj - t.log_pz[0]
        loss = rec + self.alpha * mi + self.beta * tc + self.gamma * dwkl
        return _elbo_output(rec, kl, loss, self.reduction, {"mi": mi, "tc": tc, "dwkl": dwkl})


def _permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: samples of prod_j q(z_j)."""
    idx = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return z.gather(0, idx)


class FactorVAE(nn.Module):
    """FactorVAE (Kim & Mnih 2018): loss ``rec + KL + gamma TC`` per example, nats.

    ``TC(z) = log D(z) / (1 - D(z)) = l_0 - l_1``, the discriminator's two logits (class 0:
    a draw of q(z), class 1: of prod_j q(z_j)), for the draw z ~ q(z|x) of each example; its
    gradient reaches z, not the discriminator. In the same call (training mode, gradients
    on) the discriminator takes one Adam step on ``cross_entropy`` between the detached
    first half of the batch (class 0) and the second half with every dimension permuted
    across it (class 1): two independent halves stand in for the paper's two minibatches.
    The discriminator used for TC is the one from before that step (a simultaneous update,
    as in the paper's Algorithm 2). Discriminator: ``layers`` x [Linear(hidden),
    LeakyReLU(0.2)], Linear(2). Its parameters and its Adam state are in ``state_dict()``
    (tensors and numbers only). ``per_example["tc"]``; metrics ``disc_loss``, ``disc_acc``
    (the step's batch, before the step). Under DistributedDataParallel the discriminator
    starts from rank 0's weights and steps with the gradient averaged over the ranks.
    """

    def __init__(
        self,
        latent_dim: int,
        gamma: float = 35.0,
        hidden: int = 1000,
        layers: int = 6,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__()
        _check_count("latent_dim", latent_dim)
        _check_weight("gamma", gamma)
        _check_count("hidden", hidden)
        _check_count("layers", layers)
        check_positive("lr", lr)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1); received {betas!r}")
        check_choice("kl", kl, ("analytic", "mc"))
        check_choice("reduction", reduction, _REDUCTIONS)
        self.latent_dim, self.gamma, self.kl, self.reduction = (
            latent_dim,
            float(gamma),
            kl,
            reduction,
        )
        net: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            net += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.discriminator = nn.Sequential(*net, nn.Linear(width, 2))
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=lr, betas=tuple(float(b) for b in betas)
        )
        self._replicas_synced = False

    def forward(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        z = t.out.z[0]
        if z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"FactorVAE was built for latent_dim={self.latent_dim}; received z of shape "
                f"{tuple(z.shape)}"
            )
        dz = z.to(next(self.discriminator.parameters()).dtype)
        # a copy of the weights: the step below changes them in place before backward runs
        frozen = {k: v.detach().clone() for k, v in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (dz,))
        tc = (logits[:, 0] - logits[:, 1]).to(z.dtype)
        metrics = self._discriminator_step(dz.detach())
        return _elbo_output(
            rec, kl, rec + kl + self.gamma * tc, self.reduction, {"tc": tc}, metrics
        )

    def _discriminator_step(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        half = z.shape[0] // 2
        update = self.training and torch.is_grad_enabled()
        if half < 1:
            if update:
                raise ValueError(
                    f"FactorVAE trains its discriminator on two halves of the batch: it needs "
                    f">= 2 examples; received a batch of {z.shape[0]}"
                )
            return {}
        inputs = torch.cat([z[:half], _permute_dims(z[half : 2 * half])])
        labels = torch.cat([torch.zeros(half), torch.ones(half)]).long().to(z.device)
        params = list(self.discriminator.parameters())
        with torch.set_grad_enabled(update):
            logits = self.discriminator(inputs)
            loss = F.cross_entropy(logits, labels)
        acc = (logits.detach().argmax(-1) == labels).float().mean()
        if update:
            grads = torch.autograd.grad(loss, params)
            if world_size() > 1:
                # under DDP every rank steps with the mean gradient over the ranks' batches
                # (as DDP does for the model), starting from rank 0's weights: the replicas'
                # discriminators, and so the TC term, stay identical
                if not self._replicas_synced:
                    broadcast_(*(p.detach() for p in params))
                    self._replicas_synced = True
                all_reduce_(*grads, average=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {"disc_loss": loss.detach(), "disc_acc": acc}

    def get_extra_state(self) -> dict:
        """The discriminator's Adam state (tensors, numbers), saved under ``_extra_state``."""
        return {"optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .double() move the Adam moments along with the parameters
        super()._apply(fn, *args, **kwargs)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and key != "step":
                    state[key] = fn(value)
        return self


@dataclass(frozen=True)
class DIPVAE:
    """DIP-VAE (Kumar et al. 2018): ``rec + KL + lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2``.

    C is a covariance estimated over the batch (``1/B``, biased) from q(z|x) = N(mu, diag(s^2)):
    ``kind="i"``: ``C = Cov_batch[mu]`` (DIP-VAE-I); ``kind="ii"``: ``C = Cov_batch[mu] +
    mean_batch diag(s^2)``, the covariance of q(z) (DIP-VAE-II). ``lambda_d`` defaults to
    ``10 lambda_od`` for I and ``lambda_od`` for II, as in the paper. The penalty (squared
    latent units, unitless) is a batch statistic: ``per_example["dip"]`` repeats it for every
    example; metrics ``dip_offdiag``, ``dip_diag`` (the unweighted sums).
    """

    kind: str = "ii"
    lambda_od: float = 10.0
    lambda_d: float | None = None
    kl: str = "analytic"
    reduction: str = "mean"

    def __post_init__(self):
        check_choice("kind", self.kind, ("i", "ii"))
        _check_weight("lambda_od", self.lambda_od)
        if self.lambda_d is not None:
            _check_weight("lambda_d", self.lambda_d)
        check_choice("kl", self.kl, ("analytic", "mc"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    @property
    def diagonal_weight(self) -> float:
        """lambda_d as used: given, else the paper's default for ``kind``."""
        if self.lambda_d is not None:
            return float(self.lambda_d)
        return (10.0 if self.kind == "i" else 1.0) * float(self.lambda_od)

    def covariance(self, q: Distribution) -> torch.Tensor:
        """The ``[D, D]`` covariance C of ``kind`` for a posterior of batch ``[B]``, event ``[D]``."""
        mu = q.mean
        if mu.dim() != 2 or mu.shape[0] < 2:
            raise ValueError(
                f"DIPVAE needs a posterior mean of shape [B, D] with B >= 2; received {tuple(mu.shape)}"
            )
        centred = mu - mu.mean(0)
        cov = centred.T @ centred / mu.shape[0]
        if self.kind == "ii":
            cov = cov + torch.diag(q.variance.mean(0))
        return cov

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        cov = self.covariance(t.out.posterior)
        diag = cov.diagonal()
        offdiag = cov.square().sum() - diag.square().sum()
        ondiag = (diag - 1.0).square().sum()
        penalty = (self.lambda_od * offdiag + self.diagonal_weight * ondiag).expand_as(rec)
        return _elbo_output(
            rec,
            kl,
            rec + kl + penalty,
            self.reduction,
            {"dip": penalty},
            {"dip_offdiag": offdiag, "dip_diag": ondiag},
        )


def _mmd_to_prior(t: _Terms, kernel: str, bandwidth: float | None) -> torch.Tensor:
    """Unbiased MMD^2 between the draws z ~ q(z|x) of the batch and as many draws of p(z)."""
    z = t.out.z.reshape(-1, t.out.z.shape[-1])
    with torch.no_grad():
        pz = t.out.prior.sample((z.shape[0],)).to(z)
    return VF.mmd(z, pz, kernel=kernel, bandwidth=bandwidth, unbiased=True)


@dataclass(frozen=True)
class InfoVAE:
    """InfoVAE / MMD-VAE (Zhao et al. 2017): ``rec + (1 - alpha) KL + (alpha + lambda_ - 1) MMD``.

    MMD = unbiased MMD^2(q(z), p(z)) (:func:`vaekit.functional.mmd`) between the batch's draws
    z ~ q(z|x) (the aggregate posterior) and as many draws of ``model.prior()``, a batch
    statistic (``per_example["mmd"]`` repeats it). ``alpha=0, lambda_=1000`` is the paper's
    MMD-VAE; ``alpha=1, lambda_=1`` is the ELBO. rec, KL in nats; MMD in squared kernel units.
    Needs ``alpha <= 1`` and ``alpha + lambda_ >= 1`` (nonnegative weights).
    """

    alpha: float = 0.0
    lambda_: float = 1000.0
    kernel: str = "rbf"
    bandwidth: float | None = None
    kl: str = "analytic"
    reduction: str = "mean"

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and self.alpha <= 1.0):
            raise ValueError(
                f"alpha must be <= 1 (the KL weight is 1 - alpha); received {self.alpha!r}"
            )
        _check_weight("lambda_", self.lambda_)
        if self.alpha + self.lambda_ - 1.0 < 0:
            raise ValueError(
                f"alpha + lambda_ must be >= 1 (the MMD weight); received alpha={self.alpha}, "
                f"lambda_={self.lambda_}"
            )
        check_choice("kernel", self.kernel, ("rbf", "imq"))
        check_choice("kl", self.kl, ("analytic", "mc"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        mmd = _mmd_to_prior(t, self.kernel, self.bandwidth).expand_as(rec)
        loss = rec + (1.0 - self.alpha) * kl + (self.alpha + self.lambda_ - 1.0) * mmd
        return _elbo_output(rec, kl, loss, self.reduction, {"mmd": mmd})


def WAE(
    lambda_: float = 10.0,
    kernel: str = "imq",
    bandwidth: float | None = None,
    kl: str = "analytic",
    reduction: str = "mean",
) -> InfoVAE:
    """WAE-MMD (Tolstikhin et al. 2018): loss ``rec + lambda_ MMD(q(z), p(z))``, nats + MMD units.

    ``InfoVAE(alpha=1, lambda_=lambda_)``: rec is the reconstruction NLL in nats (the paper's
    cost c(x, G(z)) is a squared distance: a fixed-sigma Gaussian likelihood gives it up to
    scale). Its codes are the draws z ~ q(z|x) of the stochastic encoder (the paper mostly
    uses a deterministic one), compared with as many draws of ``model.prior()`` by the
    unbiased MMD^2 with the IMQ kernel, C = 2 D sigma^2 (:func:`vaekit.functional.mmd`).
    The KL is not in the loss; it is reported (``kl``) with the ELBO in ``bound``.
    """
    return InfoVAE(
        alpha=1.0, lambda_=lambda_, kernel=kernel, bandwidth=bandwidth, kl=kl, reduction=reduction
    )


def triplet_indices(y: torch.Tensor, generator: torch.Generator | None = None):
    """For each anchor i: a random positive j != i with y_j = y_i and a random negative with
    y_k != y_i, from the batch. Returns ``(positive [B], negative [B], valid [B] bool)``;
    anchors without a positive or a negative in the batch are not valid."""
    b = y.shape[0]
    same = y[:, None] == y[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=y.device)
    u = torch.rand(b, b, generator=generator, device=y.device if generator is None else "cpu")
    u = u.to(y.device) + 1.0  # > 0, so masked-out entries (0) never win the argmax
    pos_ok, neg_ok = same & ~eye, ~same
    positive = (u * pos_ok).argmax(1)
    negative = (u * neg_ok).argmax(1)
    return positive, negative, pos_ok.any(1) & neg_ok.any(1)


@dataclass(frozen=True)
class TripletELBO:
    """ELBO loss plus a triplet margin loss on the posterior means, nats + weight x latent units.

    Per example ``rec + beta KL + weight max(0, ||mu_a - mu_p|| - ||mu_a - mu_n|| + margin)``
    with the positive (same label) and negative (another label) drawn from the batch by
    :func:`triplet_indices`; anchors without both get no triplet term. Needs the batch's
    labels: ``objective(model, x, y=labels)`` (the trainer passes them). ``bound`` is the
    ordinary ELBO; ``per_example["triplet"]``.
    """

    weight: float = 1.0
    margin: float = 1.0
    beta: float = 1.0
    kl: str = "analytic"
    reduction: str = "mean"

    def __post_init__(self):
        _check_weight("weight", self.weight)
        _check_weight("margin", self.margin)
        _check_weight("beta", self.beta)
        check_choice("kl", self.kl, ("analytic", "mc"))
        check_choice("reduction", self.reduction, _REDUCTIONS)

    def __call__(self, model, x: torch.Tensor, *, y: torch.Tensor | None = None) -> LossOutput:
        if y is None:
            raise ValueError("TripletELBO needs the batch's labels: objective(model, x, y=labels)")
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        mu = t.out.posterior.mean
        positive, negative, valid = triplet_indices(y.to(mu.device))
        triplet = F.triplet_margin_loss(
            mu, mu[positive], mu[negative], margin=self.margin, reduction="none"
        ) * valid.to(mu.dtype)
        loss = rec + self.beta * kl + self.weight * triplet
        return _elbo_output(rec, kl, loss, self.reduction, {"triplet": triplet})


@dataclass(frozen=True)
class PerceptualELBO:
    """ELBO loss plus a feature-space reconstruction term: ``rec + beta KL + weight ||phi(x) - phi(x_hat)||^2``.

    ``phi`` is a frozen feature network (its parameters get no gradient and are not trained;
    the user supplies it, or :func:`vaekit.models.perceptual.feature_classifier` trains a small
    classifier on the built-in data); ``x_hat = E[x | z]`` of the pass's draw z ~ q(z|x).
    The squared distance is summed over the feature axes (squared feature units). ``bound``
    is the ordinary ELBO; ``per_example["perceptual"]``.
    """

    features: torch.nn.Module
    weight: float = 1.0
    beta: float = 1.0
    kl: str = "analytic"
    reduction: str = "mean"

    def __post_init__(self):
        _check_weight("weight", self.weight)
        _check_weight("beta", self.beta)
        check_choice("kl", self.kl, ("analytic", "mc"))
        check_choice("reduction", self.reduction, _REDUCTIONS)
        self.features.eval()
        for p in self.features.parameters():
            p.requires_grad_(False)

    def __call__(self, model, x: torch.Tensor) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        x_hat = t.out.likelihood.mean[0]  # E[x|z] of the one draw: [B, *x_shape]
        f_x = self.features(x).detach()
        diff = (self.features(x_hat) - f_x).reshape(x.shape[0], -1)
        perceptual = diff.square().sum(1)
        loss = rec + self.beta * kl + self.weight * perceptual
        return _elbo_output(rec, kl, loss, self.reduction, {"perceptual": perceptual})
