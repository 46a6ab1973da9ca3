"""The semi-supervised M2 objective (Kingma et al. 2014), y summed out in one batched pass.

Per example, in nats (``ELBO(x, y)`` includes ``log p(y) = -log C``):

* labelled ``(x, y)``: ``L(x, y) = -ELBO(x, y) + alpha * (-log q(y|x))``;
* unlabelled ``x``: ``U(x) = sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x))``, all C classes in one
  ``[C, B]`` pass (:meth:`vaekit.models.m2.M2.enumerate`), or, with
  ``estimator="relaxed"``, one Gumbel-softmax draw ``y~`` of q(y|x) (Jang et al. 2017;
  Maddison et al. 2017): ``rec(x, y~) + KL_z(x, y~) + KL(q(y|x) || p(y))``.

Labels come through the call: ``objective(model, x, y=labels)`` with ``labels [B]`` integer
classes and :data:`UNLABELLED` (-1) marking an example without its label (``y=None``: the
whole batch is unlabelled).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import RelaxedOneHotCategorical

from vaekit._checks import check_choice, validation_enabled
from vaekit.objectives._base import KL_PARAM, LossOutput, Objective, Param, analytic_kl, register

__all__ = ["M2Objective", "UNLABELLED"]

UNLABELLED = -1  # the label of an example whose label is withheld


def _labelled_mask(y: torch.Tensor | None, batch: int, classes: int, device) -> torch.Tensor:
    if y is None:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != batch:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be labels of shape [{batch}] (-1: unlabelled); received {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels (-1: unlabelled); received {y.dtype}")
    if (
        validation_enabled()
        and y.numel()
        and (int(y.min()) < UNLABELLED or int(y.max()) >= classes)
    ):
        raise ValueError(
            f"y must lie in [0, {classes - 1}] or be {UNLABELLED} (unlabelled); received values "
            f"in [{int(y.min())}, {int(y.max())}]"
        )
    return y >= 0


def _merge(parts: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """Per-example values of the labelled then unlabelled rows, back in batch order."""
    return torch.cat(parts)[torch.argsort(order)]


@register(
    "m2",
    summary="semi-supervised M2 (Kingma et al. 2014): labelled -ELBO(x,y) + alpha(-log q(y|x)); "
    "unlabelled U(x) with y summed out (or Gumbel-relaxed)",
    params=(
        Param(
            "alpha",
            46.0,
            "weight of the classification loss -log q(y|x) of each labelled example (Pyro's "
            "aux_loss_multiplier; Kingma's 0.1 N in the same per-example units)",
            units="nats per nat",
            low=0.0,
        ),
        Param(
            "estimator",
            "enumerate",
            "enumerate (y summed out exactly, C passes batched) | relaxed (one Gumbel-softmax "
            "draw of y per unlabelled example)",
            type=str,
            choices=("enumerate", "relaxed"),
        ),
        Param(
            "relaxed_temperature",
            0.5,
            "temperature of the Gumbel-softmax relaxation of y (estimator relaxed)",
            low=1e-3,
        ),
        KL_PARAM,
    ),
    models=("m2",),
)
class M2Objective(Objective):
    """M2's loss: ``L(x, y) = -ELBO(x, y) + alpha (-log q(y|x))`` labelled, ``U(x)`` unlabelled.

    Args:
        alpha: weight of ``-log q(y|x)`` per labelled example, in the units of the per-example
            ``-ELBO`` (nats per nat). 46 is Pyro's ss-vae ``aux_loss_multiplier``, which
            multiplies the summed ``log q(y|x)`` of a batch whose ELBO is summed too, so the
            ratio per example is the same; Kingma et al. use ``0.1 N`` against a sum over the
            N training examples.
        estimator: ``"enumerate"`` (exact sum over y) or ``"relaxed"`` (Gumbel-softmax y).
        relaxed_temperature: the relaxation's temperature (``"relaxed"`` only).
        kl: ``"analytic"`` KL(q(z|x,y) || p(z)) or ``"mc"`` (one-sample estimate).

    ``per_example``: ``bound`` (``ELBO(x, y) <= log p(x, y)`` labelled, ``-U(x) <= log p(x)``
    unlabelled), ``rec``, ``kl = kl_z + kl_y`` (``kl_y = KL(q(y|x) || p(y))`` unlabelled,
    ``-log p(y)`` labelled), ``kl_z``, ``kl_y``, ``class_nll`` (``-log q(y|x)``, 0 unlabelled),
    ``labelled`` (1/0), ``loss``; all nats ``[B]``. ``bound = -rec - kl``.
    """

    def __init__(
        self,
        alpha: float = 46.0,
        estimator: str = "enumerate",
        relaxed_temperature: float = 0.5,
        kl: str = "analytic",
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        check_choice("estimator", estimator, ("enumerate", "relaxed"))
        check_choice("kl", kl, ("analytic", "mc"))
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0; received {alpha!r}")
        if not (
            isinstance(relaxed_temperature, int | float)
            and math.isfinite(relaxed_temperature)
            and relaxed_temperature > 0
        ):
            raise ValueError(
                f"relaxed_temperature must be a finite number > 0; received {relaxed_temperature!r}"
            )
        self.alpha, self.estimator, self.kl = float(alpha), estimator, kl
        self.relaxed_temperature = float(relaxed_temperature)

    def _kl_z(self, q, p, z) -> torch.Tensor:
        if self.kl == "analytic":
            return analytic_kl(q, p)
        return (q.log_prob(z) - p.log_prob(z)).mean(0)

    def _labelled(self, model, x, y, log_qy):
        """``rec, kl_z, class_nll`` of labelled rows, nats ``[Bl]``."""
        from vaekit.models.m2 import as_event

        out = model(x, y=y)
        rec = -out.likelihood.log_prob(as_event(x, out.likelihood)).mean(0)
        nll = -log_qy.gather(-1, y[:, None]).squeeze(-1)
        return rec, self._kl_z(out.posterior, out.prior, out.z), nll

    def _unlabelled(self, model, x, logits):
        """``rec, kl_z, kl_y`` of unlabelled rows (y summed out or relaxed), nats ``[Bu]``."""
        from vaekit.models.m2 import as_event

        log_qy = torch.log_softmax(logits, -1)
        probs = log_qy.exp()
        kl_y = (probs * log_qy).sum(-1) + math.log(model.num_classes)  # KL(q(y|x) || uniform)
        if self.estimator == "relaxed":
            y = RelaxedOneHotCategorical(
                torch.tensor(self.relaxed_temperature, dtype=logits.dtype, device=logits.device),
                logits=logits,
            ).rsample()
            out = model(x, y=y)
            rec = -out.likelihood.log_prob(as_event(x, out.likelihood)).mean(0)
            return rec, self._kl_z(out.posterior, out.prior, out.z), kl_y
        e = model.enumerate_z(x)
        rec = -e.likelihood.log_prob(as_event(x, e.likelihood)).mean(0)  # [C, Bu]
        kl_z = self._kl_z(e.posterior, e.prior, e.z)  # [C, Bu]
        weights = probs.T  # q(y|x) as [C, Bu]
        return (weights * rec).sum(0), (weights * kl_z).sum(0), kl_y

    def forward(
        self, model, x: torch.Tensor, *, y: torch.Tensor | None = None, step: int | None = None
    ) -> LossOutput:
        """``L(x, y)`` for rows with a label in ``y``, ``U(x)`` for rows with -1 (or ``y=None``):
        nats ``[B]`` per example, reduced over the batch by ``reduction``."""
        batch = x.shape[0]
        labelled = _labelled_mask(y, batch, model.num_classes, x.device)
        logits = model.classify(x)  # q(y|x) once for the whole batch
        log_qy = torch.log_softmax(logits, -1)
        idx_l = torch.nonzero(labelled).flatten()
        idx_u = torch.nonzero(~labelled).flatten()
        parts = {k: [] for k in ("rec", "kl_z", "kl_y", "class_nll")}
        if idx_l.numel():
            rec, kl_z, nll = self._labelled(model, x[idx_l], y[idx_l], log_qy[idx_l])
            for k, v in zip(
                ("rec", "kl_z", "kl_y", "class_nll"),
                (rec, kl_z, torch.full_like(rec, -model.log_py), nll),
                strict=True,
            ):
                parts[k].append(v)
        if idx_u.numel():
            rec, kl_z, kl_y = self._unlabelled(model, x[idx_u], logits[idx_u])
            for k, v in zip(
                ("rec", "kl_z", "kl_y", "class_nll"),
                (rec, kl_z, kl_y, torch.zeros_like(rec)),
                strict=True,
            ):
                parts[k].append(v)
        order = torch.cat([idx_l, idx_u])
        t = {k: _merge(v, order) for k, v in parts.items()}
        kl = t["kl_z"] + t["kl_y"]
        loss = t["rec"] + kl + self.alpha * t["class_nll"]
        return self._output(
            loss,
            bound=-t["rec"] - kl,
            rec=t["rec"],
            kl=kl,
            terms={**t, "labelled": labelled.to(loss.dtype)},
            weights={"alpha": self.alpha},
        )
