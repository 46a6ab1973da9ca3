"""Regularised ELBOs: the ELBO's two terms (:func:`rec_kl`) plus one term each.

beta-VAE is ``ELBO(beta=...)``; here: CapacityELBO, BetaTCVAE, DIPVAE, InfoVAE, WAE,
TripletELBO, PerceptualELBO. ``bound`` is always the ordinary (beta-free) ELBO, nats. Batch
statistics (a DIP covariance penalty, an MMD) are shared by every example: their per-example
entry repeats the batch value, so ``reduction="mean"`` adds it once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent

from vaekit import functional as VF
from vaekit._checks import check_choice, check_count
from vaekit.objectives._base import (
    KL_PARAM,
    LossOutput,
    Objective,
    Param,
    Terms,
    check_weight,
    describe,
    log_weights,
    rec_kl,
    register,
)
from vaekit.schedules import Capacity

__all__ = [
    "CapacityELBO",
    "BetaTCVAE",
    "DIPVAE",
    "InfoVAE",
    "WAE",
    "TripletELBO",
    "PerceptualELBO",
    "triplet_indices",
]

Weight = float | Callable[[int], float]
_KL_WEIGHT = Param("beta", 1.0, "weight of the KL term (bound stays beta-free)")


@register(
    "capacity",
    summary="capacity-annealed beta-VAE: rec + gamma |KL - C(step)| (Burgess et al. 2018)",
    params=(
        Param("gamma", 1000.0, "weight of |KL - C|"),
        Param("capacity", 25.0, "C_max, the KL target at the end", units="nats", arg="c_max"),
        Param(
            "capacity_steps", 100000, "steps over which C rises 0 -> C_max", type=int, arg="steps"
        ),
        KL_PARAM,
    ),
)
class CapacityELBO(Objective):
    """Capacity-annealed beta-VAE (Burgess et al. 2018): loss ``rec + gamma |KL - C(step)|`` nats.

    ``C(step) = c_max min(1, step / steps)`` (:class:`vaekit.schedules.Capacity`); defaults
    are the paper's dSprites values (gamma = 1000, C_max = 25 nats over 100,000 steps).
    The absolute value acts per example, as in the paper's formula (several public
    implementations apply it to the batch-mean KL instead). ``step=None`` (evaluation) uses
    ``C = c_max``. ``per_example["capacity_gap"] = |KL - C|``; ``metrics["capacity"] = C``,
    ``metrics["gamma"]``. ``gamma`` may be a schedule.
    """

    weights = ("gamma", "capacity")

    def __init__(
        self,
        gamma: Weight = 1000.0,
        c_max: float = 25.0,
        steps: int = 100_000,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_weight("gamma", gamma)
        self.capacity = Capacity(c_max, steps)  # validates c_max and steps
        check_choice("kl", kl, ("analytic", "mc"))
        self.gamma, self.c_max, self.steps, self.kl = gamma, c_max, steps, kl

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
        rec, kl = rec_kl(log_weights(model, x, 1), self.kl)
        gap = (kl - w["capacity"]).abs()
        return self._output(
            rec + w["gamma"] * gap,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"capacity_gap": gap},
            weights=w,
        )


def _factorised(name: str, d: Distribution, objective: str) -> Distribution:
    """The per-dimension base of ``Independent(base, 1)``; other distributions are an error."""
    if not (isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1):
        raise ValueError(
            f"{objective} needs a factorised {name}, Independent(base, 1) over the latent axis "
            f"(e.g. StandardNormal, LearnableGaussian, DiagonalGaussian); received {describe(d)}"
        )
    return d.base_dist


@register(
    "beta_tcvae",
    summary="beta-TCVAE: rec + alpha MI + beta TC + gamma dimension-wise KL (Chen et al. 2018)",
    params=(
        Param("beta", 6.0, "weight of the total correlation TC"),
        Param("alpha", 1.0, "weight of the index-code mutual information MI"),
        Param("gamma", 1.0, "weight of the dimension-wise KL"),
        Param(
            "tc_estimator",
            "mws",
            "estimator of log q(z): mws (minibatch weighted) | mss (stratified)",
            type=str,
            choices=("mws", "mss"),
            arg="estimator",
        ),
    ),
    context=("dataset_size",),
    schedule="beta",
)
class BetaTCVAE(Objective):
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
    The three weights may be schedules; ``metrics`` reports them.
    """

    weights = ("alpha", "beta", "gamma")

    def __init__(
        self,
        dataset_size: int,
        beta: Weight = 6.0,
        alpha: Weight = 1.0,
        gamma: Weight = 1.0,
        estimator: str = "mws",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_count("dataset_size", dataset_size, 2)
        for name, v in (("beta", beta), ("alpha", alpha), ("gamma", gamma)):
            check_weight(name, v)
        check_choice("estimator", estimator, ("mws", "mss"))
        self.dataset_size, self.estimator = dataset_size, estimator
        self.beta, self.alpha, self.gamma = beta, alpha, gamma

    @property
    def min_batch(self) -> int:
        """Minibatch stratified sampling needs two examples; weighted sampling one."""
        return 2 if self.estimator == "mss" else 1

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
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
        loss = rec + w["alpha"] * mi + w["beta"] * tc + w["gamma"] * dwkl
        return self._output(
            loss,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"mi": mi, "tc": tc, "dwkl": dwkl},
            weights=w,
        )


@register(
    "dip_vae",
    summary="DIP-VAE: rec + KL + a penalty on the covariance of the codes (Kumar et al. 2018)",
    params=(
        Param(
            "dip",
            "ii",
            "i (covariance of the means) | ii (of q(z))",
            type=str,
            choices=("i", "ii"),
            arg="kind",
        ),
        Param(
            "lambda_od", 10.0, "weight of the off-diagonal penalty", units="per squared latent unit"
        ),
        Param(
            "lambda_d",
            None,
            "weight of the diagonal penalty; null = the paper's (10 lambda_od for i, lambda_od for ii)",
            optional=True,
        ),
        KL_PARAM,
    ),
)
class DIPVAE(Objective):
    """DIP-VAE (Kumar et al. 2018): ``rec + KL + lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2``.

    C is a covariance estimated over the batch (``1/B``, biased) from q(z|x) = N(mu, diag(s^2)):
    ``kind="i"``: ``C = Cov_batch[mu]`` (DIP-VAE-I); ``kind="ii"``: ``C = Cov_batch[mu] +
    mean_batch diag(s^2)``, the covariance of q(z) (DIP-VAE-II). ``lambda_d`` defaults to
    ``10 lambda_od`` for I and ``lambda_od`` for II, as in the paper. The penalty (squared
    latent units, unitless) is a batch statistic: ``per_example["dip"]`` repeats it for every
    example; metrics ``dip_offdiag``, ``dip_diag`` (the unweighted sums).
    """

    min_batch = 2  # a covariance over the batch

    def __init__(
        self,
        kind: str = "ii",
        lambda_od: float = 10.0,
        lambda_d: float | None = None,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_choice("kind", kind, ("i", "ii"))
        check_weight("lambda_od", lambda_od)
        if lambda_d is not None:
            check_weight("lambda_d", lambda_d)
        check_choice("kl", kl, ("analytic", "mc"))
        self.kind, self.lambda_od, self.lambda_d, self.kl = kind, lambda_od, lambda_d, kl

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

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        cov = self.covariance(t.out.posterior)
        diag = cov.diagonal()
        offdiag = cov.square().sum() - diag.square().sum()
        ondiag = (diag - 1.0).square().sum()
        penalty = (self.lambda_od * offdiag + self.diagonal_weight * ondiag).expand_as(rec)
        return self._output(
            rec + kl + penalty,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"dip": penalty},
            metrics={"dip_offdiag": offdiag, "dip_diag": ondiag},
        )


def _mmd_to_prior(t: Terms, kernel: str, bandwidth: float | None) -> torch.Tensor:
    """Unbiased MMD^2 between the draws z ~ q(z|x) of the batch and as many draws of p(z)."""
    z = t.out.z.reshape(-1, t.out.z.shape[-1])
    with torch.no_grad():
        pz = t.out.prior.sample((z.shape[0],)).to(z)
    return VF.mmd(z, pz, kernel=kernel, bandwidth=bandwidth, unbiased=True)


_KERNEL = ("rbf", "imq")


@register(
    "info_vae",
    summary="InfoVAE / MMD-VAE: rec + (1 - alpha) KL + (alpha + lambda - 1) MMD (Zhao et al. 2017)",
    params=(
        Param("alpha", 0.0, "alpha <= 1: the KL weight is 1 - alpha"),
        Param("mmd_weight", 1000.0, "lambda: alpha + lambda - 1 weighs the MMD", arg="lambda_"),
        Param("kernel", "rbf", "MMD kernel: rbf | imq", type=str, choices=_KERNEL),
        KL_PARAM,
    ),
)
class InfoVAE(Objective):
    """InfoVAE / MMD-VAE (Zhao et al. 2017): ``rec + (1 - alpha) KL + (alpha + lambda_ - 1) MMD``.

    MMD = unbiased MMD^2(q(z), p(z)) (:func:`vaekit.functional.mmd`) between the batch's draws
    z ~ q(z|x) (the aggregate posterior) and as many draws of ``model.prior()``, a batch
    statistic (``per_example["mmd"]`` repeats it). ``alpha=0, lambda_=1000`` is the paper's
    MMD-VAE; ``alpha=1, lambda_=1`` is the ELBO. rec, KL in nats; MMD in squared kernel units.
    Needs ``alpha <= 1`` and ``alpha + lambda_ >= 1`` (nonnegative weights).
    """

    def __init__(
        self,
        alpha: float = 0.0,
        lambda_: float = 1000.0,
        kernel: str = "rbf",
        bandwidth: float | None = None,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        if isinstance(alpha, bool) or not (
            isinstance(alpha, int | float) and math.isfinite(alpha) and alpha <= 1.0
        ):
            raise ValueError(f"alpha must be <= 1 (the KL weight is 1 - alpha); received {alpha!r}")
        check_weight("lambda_", lambda_)
        if callable(lambda_):
            raise ValueError("lambda_ must be a number; received a schedule")
        if alpha + lambda_ - 1.0 < 0:
            raise ValueError(
                f"alpha + lambda_ must be >= 1 (the MMD weight); received alpha={alpha}, "
                f"lambda_={lambda_}"
            )
        check_choice("kernel", kernel, _KERNEL)
        check_choice("kl", kl, ("analytic", "mc"))
        self.alpha, self.lambda_, self.kernel, self.bandwidth, self.kl = (
            alpha,
            lambda_,
            kernel,
            bandwidth,
            kl,
        )

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        mmd = _mmd_to_prior(t, self.kernel, self.bandwidth).expand_as(rec)
        loss = rec + (1.0 - self.alpha) * kl + (self.alpha + self.lambda_ - 1.0) * mmd
        return self._output(loss, bound=-rec - kl, rec=rec, kl=kl, terms={"mmd": mmd})


@register(
    "wae",
    summary="WAE-MMD: rec + lambda MMD(q(z), p(z)) (Tolstikhin et al. 2018)",
    params=(
        Param("mmd_weight", 10.0, "lambda, the weight of the MMD", arg="lambda_"),
        Param("kernel", "imq", "MMD kernel: imq | rbf", type=str, choices=_KERNEL),
        KL_PARAM,
    ),
)
class WAE(InfoVAE):
    """WAE-MMD (Tolstikhin et al. 2018): loss ``rec + lambda_ MMD(q(z), p(z))``, nats + MMD units.

    ``InfoVAE(alpha=1, lambda_=lambda_)``: rec is the reconstruction NLL in nats (the paper's
    cost c(x, G(z)) is a squared distance: a fixed-sigma Gaussian likelihood gives it up to
    scale). Its codes are the draws z ~ q(z|x) of the stochastic encoder (the paper mostly
    uses a deterministic one), compared with as many draws of ``model.prior()`` by the
    unbiased MMD^2 with the IMQ kernel, C = 2 D sigma^2 (:func:`vaekit.functional.mmd`).
    The KL is not in the loss; it is reported (``kl``) with the ELBO in ``bound``.
    """

    def __init__(
        self,
        lambda_: float = 10.0,
        kernel: str = "imq",
        bandwidth: float | None = None,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(
            alpha=1.0,
            lambda_=lambda_,
            kernel=kernel,
            bandwidth=bandwidth,
            kl=kl,
            reduction=reduction,
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


@register(
    "triplet",
    summary="ELBO + gamma x triplet margin loss on the posterior means (needs labels)",
    params=(
        Param("gamma", 1.0, "weight of the triplet term", arg="weight"),
        Param("margin", 1.0, "margin of the triplet loss", units="latent units"),
        _KL_WEIGHT,
        KL_PARAM,
    ),
    schedule="beta",
)
class TripletELBO(Objective):
    """ELBO loss plus a triplet margin loss on the posterior means, nats + weight x latent units.

    Per example ``rec + beta KL + weight max(0, ||mu_a - mu_p|| - ||mu_a - mu_n|| + margin)``
    with the positive (same label) and negative (another label) drawn from the batch by
    :func:`triplet_indices`; anchors without both get no triplet term. Needs the batch's
    labels: ``objective(model, x, y=labels)`` (the trainer passes them). ``bound`` is the
    ordinary ELBO; ``per_example["triplet"]``. ``beta`` and ``weight`` may be schedules.
    """

    weights = ("beta", "weight")

    def __init__(
        self,
        weight: Weight = 1.0,
        margin: float = 1.0,
        beta: Weight = 1.0,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_weight("weight", weight)
        check_weight("margin", margin)
        check_weight("beta", beta)
        check_choice("kl", kl, ("analytic", "mc"))
        self.weight, self.margin, self.beta, self.kl = weight, margin, beta, kl

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        if y is None:
            raise ValueError("TripletELBO needs the batch's labels: objective(model, x, y=labels)")
        w = self.weights_at(step)
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        mu = t.out.posterior.mean
        positive, negative, valid = triplet_indices(y.to(mu.device))
        triplet = F.triplet_margin_loss(
            mu, mu[positive], mu[negative], margin=self.margin, reduction="none"
        ) * valid.to(mu.dtype)
        loss = rec + w["beta"] * kl + w["weight"] * triplet
        return self._output(
            loss, bound=-rec - kl, rec=rec, kl=kl, terms={"triplet": triplet}, weights=w
        )


@register(
    "perceptual",
    summary="ELBO + gamma x squared distance of frozen classifier features of x and E[x|z]",
    params=(
        Param("gamma", 1.0, "weight of the feature-space term", arg="weight"),
        _KL_WEIGHT,
        KL_PARAM,
    ),
    context=("features",),
    schedule="beta",
)
class PerceptualELBO(Objective):
    """ELBO loss plus a feature-space reconstruction term: ``rec + beta KL + weight ||phi(x) - phi(x_hat)||^2``.

    ``phi`` is a frozen feature network (its parameters get no gradient and are not trained;
    the user supplies it, or :func:`vaekit.models.perceptual.feature_classifier` trains a small
    classifier on the built-in data); ``x_hat = E[x | z]`` of the pass's draw z ~ q(z|x).
    The squared distance is summed over the feature axes (squared feature units). ``bound``
    is the ordinary ELBO; ``per_example["perceptual"]``. ``beta`` and ``weight`` may be schedules.
    """

    weights = ("beta", "weight")

    def __init__(
        self,
        features: torch.nn.Module,
        weight: Weight = 1.0,
        beta: Weight = 1.0,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_weight("weight", weight)
        check_weight("beta", beta)
        check_choice("kl", kl, ("analytic", "mc"))
        self.weight, self.beta, self.kl = weight, beta, kl
        self.features = features
        self.features.eval()
        for p in self.features.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        """Switches the objective's mode; the feature network stays in eval mode (frozen)."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
        t = log_weights(model, x, 1)
        rec, kl = rec_kl(t, self.kl)
        x_hat = t.out.likelihood.mean[0]  # E[x|z] of the one draw: [B, *x_shape]
        f_x = self.features(x).detach()
        diff = (self.features(x_hat) - f_x).reshape(x.shape[0], -1)
        perceptual = diff.square().sum(1)
        loss = rec + w["beta"] * kl + w["weight"] * perceptual
        return self._output(
            loss, bound=-rec - kl, rec=rec, kl=kl, terms={"perceptual": perceptual}, weights=w
        )
