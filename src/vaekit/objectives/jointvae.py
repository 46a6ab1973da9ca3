"""JointVAE (Dupont 2018): a continuous and a discrete latent, each pulled to its own capacity."""

from __future__ import annotations

from collections.abc import Callable

from vaekit.objectives._base import (
    LossOutput,
    Objective,
    Param,
    analytic_kl,
    check_weight,
    describe,
    log_weights,
    register,
)
from vaekit.schedules import Capacity

__all__ = ["JointVAE"]

Weight = float | Callable[[int], float]


@register(
    "jointvae",
    summary="JointVAE: rec + gamma |KL_z - C_z(step)| + gamma |KL_c - C_c(step)| (Dupont 2018)",
    params=(
        Param("gamma", 30.0, "weight of both capacity gaps |KL - C|", low=0),
        Param(
            "cont_capacity", 5.0, "C_z max: continuous KL target at the end", units="nats", low=0
        ),
        Param("cont_capacity_steps", 25000, "steps over which C_z rises 0 -> max", type=int, low=0),
        Param(
            "disc_capacity",
            5.0,
            "C_c max: discrete KL target at the end, capped at sum_m log C",
            units="nats",
            low=0,
        ),
        Param("disc_capacity_steps", 25000, "steps over which C_c rises 0 -> max", type=int, low=0),
    ),
    models=("jointvae",),
)
class JointVAE(Objective):
    """JointVAE loss (Dupont 2018, "Learning disentangled joint continuous and discrete
    representations"), nats per example:

    ``rec + gamma |KL(q(z|x) || N(0, I)) - C_z(step)| + gamma |KL(q(c|x) || U) - C_c(step)|``

    with ``C(step) = C_max min(1, step / steps)`` (:class:`vaekit.schedules.Capacity`) for
    each part and ``C_c`` capped at ``sum_m log C`` (the largest discrete KL). Both KLs are
    closed forms; the discrete one is the KL of the categorical probabilities
    (:mod:`vaekit.discrete`), also for a relaxed sample. The absolute values act per example,
    as :class:`~vaekit.objectives.CapacityELBO` does (Dupont's code applies them to the batch
    means). ``gamma = 1`` and both capacities 0 is the ELBO. ``bound`` is the ELBO;
    ``per_example``: ``kl_cont``, ``kl_disc``; ``metrics``: ``gamma``, ``cont_capacity``,
    ``disc_capacity`` (after the cap) and ``temperature``. Defaults: Dupont's MNIST values
    (gamma 30, 5 nats over 25,000 steps each).
    """

    weights = ("gamma", "cont_capacity", "disc_capacity")
    kl = "analytic"  # the validation ELBO's KL (closed forms of both parts)

    def __init__(
        self,
        gamma: Weight = 30.0,
        cont_capacity: float = 5.0,
        cont_capacity_steps: int = 25000,
        disc_capacity: float = 5.0,
        disc_capacity_steps: int = 25000,
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_weight("gamma", gamma)
        self.gamma = gamma
        self.cont_capacity = Capacity(cont_capacity, cont_capacity_steps)
        self.disc_capacity = Capacity(disc_capacity, disc_capacity_steps)

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        from vaekit.discrete import JointLatent

        w = self.weights_at(step)
        t = log_weights(model, x, 1)
        q, p = t.out.posterior, t.out.prior
        if not (isinstance(q, JointLatent) and isinstance(p, JointLatent)):
            raise ValueError(
                "objective 'jointvae' needs a joint continuous + categorical latent "
                "(vaekit.discrete.JointPosterior and JointPrior, --model jointvae); received "
                f"posterior {describe(q)} and prior {describe(p)}"
            )
        rec = -t.log_px.mean(0)
        kl_cont = analytic_kl(q.continuous, p.continuous)
        kl_disc = analytic_kl(q.discrete, p.discrete)
        w["disc_capacity"] = min(w["disc_capacity"], q.discrete.max_kl)
        loss = (
            rec
            + w["gamma"] * (kl_cont - w["cont_capacity"]).abs()
            + w["gamma"] * (kl_disc - w["disc_capacity"]).abs()
        )
        kl = kl_cont + kl_disc
        w["temperature"] = q.discrete.temperature
        return self._output(
            loss,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"kl_cont": kl_cont, "kl_disc": kl_disc},
            weights=w,
        )
