"""Objectives with state: GECO (a Lagrange multiplier), FactorVAE (a discriminator) and the
VQ-VAE loss (its codebook statistics live in the model's quantizer).

Their state is buffers and sub-modules of the objective, saved and restored by its one
``state_dict``; under DistributedDataParallel it is kept identical across the ranks.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vaekit._checks import check_choice, check_count, check_positive
from vaekit._distributed import all_reduce_, broadcast_, world_size
from vaekit.objectives._base import (
    KL_PARAM,
    LossOutput,
    Objective,
    Param,
    check_weight,
    log_weights,
    rec_kl,
    register,
)

__all__ = ["GECO", "FactorVAE", "VQObjective"]


@register(
    "geco",
    summary="GECO: KL + lambda (rec - tolerance), lambda adapted to meet the constraint",
    params=(
        Param(
            "tolerance",
            None,
            "reconstruction target: the constraint is rec <= tolerance (e.g. 80 for binarised MNIST)",
            units="nats per example",
            optional=True,
        ),
        Param("alpha", 0.99, "decay of the constraint's moving average, in [0, 1)"),
        KL_PARAM,
    ),
    required=("tolerance",),
)
class GECO(Objective):
    """Constrained optimisation of the ELBO's terms (Rezende & Viola 2018, "Taming VAEs").

    Loss per example ``KL + lambda * C`` nats with the constraint ``C = rec - tolerance``:
    ``rec = -E_q[log p(x|z)]`` is the per-example reconstruction NLL in nats (for a fixed-sigma
    Gaussian, ``||x - mean||^2 / (2 sigma^2)`` plus a constant), so ``tolerance`` is in nats per
    example. After each training call (``self.training`` and gradients on), with the batch
    mean ``C_t`` (averaged over all ranks under DDP, so every rank keeps the same lambda):
    ``C_ma <- alpha C_ma + (1 - alpha) C_t`` (``C_ma = C_1`` at the first call),
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
        super().__init__(reduction)
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
        self.tolerance, self.alpha, self.lr = float(tolerance), float(alpha), float(lr)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.kl = kl
        self.register_buffer("lagrange", torch.tensor(float(lambda_init)))
        self.register_buffer("constraint_ma", torch.tensor(0.0))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        rec, kl = rec_kl(log_weights(model, x, 1), self.kl)
        constraint = rec - self.tolerance
        lam = self.lagrange.clone()  # the loss keeps this value; the buffer is updated in place
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                c_t = constraint.detach().mean().to(self.constraint_ma)
                all_reduce_(c_t, average=True)  # one multiplier for all ranks
                ma = self.alpha * self.constraint_ma + (1.0 - self.alpha) * c_t
                self.constraint_ma.copy_(torch.where(self.updates == 0, c_t, ma))
                new = self.lagrange * torch.exp(self.lr * self.constraint_ma)
                self.lagrange.copy_(new.clamp(self.lambda_min, self.lambda_max))
                self.updates += 1
        return self._output(
            kl + lam * constraint,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"constraint": constraint},
            metrics={"lambda": lam, "constraint_ma": self.constraint_ma.clone()},
        )


class OwnOptimizer(Objective):
    """Base of objectives that train a sub-module (a discriminator) with their own optimizer.

    ``self.optimizer`` steps inside the objective's call (:meth:`_step_optimizer`); its state
    is saved with the objective (``get_extra_state``: tensors and numbers only, loadable with
    ``torch.load(weights_only=True)``) and follows ``.to(device)``. Under
    DistributedDataParallel the sub-module starts from rank 0's weights and steps with the
    gradient averaged over the ranks, so the replicas stay identical.
    """

    _replicas_synced = False

    def _step_optimizer(self, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        grads = torch.autograd.grad(loss, params)
        if world_size() > 1:
            # every rank steps with the mean gradient over the ranks' batches (as DDP does
            # for the model), starting from rank 0's weights
            if not self._replicas_synced:
                broadcast_(*(p.detach() for p in params))
                self._replicas_synced = True
            all_reduce_(*grads, average=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_extra_state(self) -> dict:
        """The optimizer's state (tensors, numbers), saved under ``_extra_state``."""
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


def _permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: samples of prod_j q(z_j)."""
    idx = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return z.gather(0, idx)


@register(
    "factor_vae",
    summary="FactorVAE: rec + KL + gamma TC, TC from a discriminator trained alongside",
    params=(Param("gamma", 35.0, "weight of the total correlation TC"), KL_PARAM),
    context=("latent_dim",),
)
class FactorVAE(OwnOptimizer):
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
    (the step's batch, before the step), ``gamma``. Under DistributedDataParallel the
    discriminator starts from rank 0's weights and steps with the gradient averaged over the
    ranks. ``gamma`` may be a schedule.
    """

    weights = ("gamma",)
    min_batch = 2  # two halves of the batch train the discriminator

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
        super().__init__(reduction)
        check_count("latent_dim", latent_dim)
        check_weight("gamma", gamma)
        check_count("hidden", hidden)
        check_count("layers", layers)
        check_positive("lr", lr)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1); received {betas!r}")
        check_choice("kl", kl, ("analytic", "mc"))
        self.latent_dim, self.kl = latent_dim, kl
        self.gamma = gamma if callable(gamma) else float(gamma)
        net: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            net += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.discriminator = nn.Sequential(*net, nn.Linear(width, 2))
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=lr, betas=tuple(float(b) for b in betas)
        )

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        w = self.weights_at(step)
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
        return self._output(
            rec + kl + w["gamma"] * tc,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"tc": tc},
            metrics=metrics,
            weights=w,
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
            self._step_optimizer(loss, params)
        return {"disc_loss": loss.detach(), "disc_acc": acc}


@register(
    "vqvae",
    summary="VQ-VAE: -log p(x|z_q) + codebook + commitment (van den Oord et al. 2017)",
    models=("vqvae",),
)
class VQObjective(Objective):
    """VQ-VAE loss ``-log p(x|z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2``, nats, per example.

    ``beta`` lives in the quantizer (its commitment loss is already weighted). Per-example
    terms ``[B]``: ``rec = -log p(x|z_q)`` (nats), ``codebook``, ``commitment`` (squared
    distances summed over positions and code dims), ``loss`` (their sum), ``kl = N log K``
    (KL of the one-hot posterior to a uniform prior over K codes at N positions, nats) and
    ``bound = log p(x|z_q) - N log K`` (the ELBO, <= log p(x)). ``metrics`` adds the batch
    ``perplexity`` and codebook ``usage``.

    Args:
        reduction: ``"mean" | "sum" | "none"`` over the batch axis.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction)

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        out = model(x)
        q = out.quantized
        rec = -out.likelihood.log_prob(x)
        n_latents = q.indices[0].numel()
        kl = torch.full_like(rec, n_latents * math.log(model.num_codes))
        return self._output(
            rec + q.codebook_loss + q.commitment_loss,
            bound=-rec - kl,
            rec=rec,
            kl=kl,
            terms={"codebook": q.codebook_loss, "commitment": q.commitment_loss},
            metrics={"perplexity": q.perplexity, "usage": q.usage},
        )
