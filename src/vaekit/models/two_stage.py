"""Two-stage VAE (Dai & Wipf 2019, "Diagnosing and enhancing VAE models").

A first VAE's aggregate posterior q(z) = E_x q(z|x) is generally not N(0, I), so decoding
z ~ N(0, I) samples regions the decoder never saw. Stage two fits a small VAE to the first
stage's codes, ``p2(z) = int N(u; 0, I) p2(z|u) du`` with
``ELBO_2(z) = E_q2(u|z)[log p2(z|u)] - KL(q2(u|z) || N(0, I))`` nats, and sampling becomes
``u ~ N(0, I) -> z = E p2(z|u) -> x ~ p1(x|z)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vaekit._checks import check_choice, check_positive
from vaekit.evaluate import posterior_means
from vaekit.likelihoods import Gaussian
from vaekit.models.networks import MLP
from vaekit.models.vae import VAE
from vaekit.objectives import ELBO
from vaekit.priors import StandardNormal
from vaekit.schedules import LinearWarmup
from vaekit.training.fit import fit

__all__ = ["first_stage_codes", "fit_second_stage", "second_stage_vae", "TwoStageSampler"]


def _tensor(data) -> torch.Tensor:
    x = getattr(data, "x", data)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(
            "data must be a non-empty tensor [N, ...] or have such an .x tensor; received "
            f"{type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ''}"
        )
    return x


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def first_stage_codes(first: nn.Module, data, batch_size: int = 500) -> torch.Tensor:
    """One draw ``z ~ q1(z|x)`` per example, ``[N, D]`` (a fresh draw each call)."""
    x = _tensor(data)
    device = _device(first)
    return torch.cat(
        [
            first.encode(x[i : i + batch_size].to(device)).sample().cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def second_stage_vae(dim: int, latent_dim: int, hidden: Sequence[int] = (1024, 1024)) -> VAE:
    """The (untrained) second-stage VAE of :func:`fit_second_stage` for ``dim``-sized codes.

    MLP encoder ``[N, dim] -> [N, 2 latent_dim]`` and mirrored decoder (ReLU, ``hidden``
    wide), prior N(0, I) on u, likelihood ``Gaussian(scale="learned")`` on z (nats).
    """
    hidden = tuple(hidden)
    likelihood = Gaussian(scale="learned")
    return VAE(
        MLP(dim, 2 * latent_dim, hidden),
        MLP(latent_dim, likelihood.param_shape((dim,))[0], hidden[::-1]),
        prior=StandardNormal(latent_dim),
        likelihood=likelihood,
    )


def fit_second_stage(
    first: nn.Module,
    data,
    *,
    latent_dim: int | None = None,
    hidden: Sequence[int] = (1024, 1024),
    epochs: int = 50,
    batch_size: int = 100,
    lr: float = 1e-3,
    codes: str = "mean",
    warmup_epochs: int | None = None,
    seed: int = 0,
) -> VAE:
    """Fit the second-stage VAE on the first model's codes: maximises ``ELBO_2(z)`` (nats).

    Codes are ``E_q1[z|x]`` (``codes="mean"``, computed once) or a fresh draw
    ``z ~ q1(z|x)`` every epoch (``codes="sample"``). The second VAE has MLP encoder and
    decoder (ReLU, ``hidden`` wide, mirrored), a standard-normal prior and a Gaussian
    likelihood with a learned scale per dimension (``Gaussian(scale="learned")``, the role of
    Dai & Wipf's learned gamma), trained with Adam on the analytic-KL ELBO, the KL weight
    warmed up linearly from 0 to 1 over ``warmup_epochs`` (without it the learned scale
    explains the codes as one wide Gaussian before the latents are used: posterior collapse).

    Args:
        first: a trained first-stage model with ``encode(x)`` (``VAE`` or ``HVAE``), left
            unchanged (no gradient reaches it).
        data: training examples ``[N, ...]`` (or an object with ``.x``) as the first encoder takes them.
        latent_dim: size of u; default the first stage's latent size (as in the paper).
        hidden, epochs, batch_size, lr: the second VAE and its optimisation.
        warmup_epochs: KL warm-up length (default ``epochs // 4``; 0: none).
        seed: seeds the second VAE's initialisation and the batch order (the global RNG is
            left as it was).

    Returns:
        The trained second VAE (``[N, D] -> [N, 2 * latent_dim]`` encoder), in eval mode.
    """
    check_choice("codes", codes, ("mean", "sample"))
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; received {value!r}")
    check_positive("lr", lr)
    warmup = epochs // 4 if warmup_epochs is None else warmup_epochs
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0; received {warmup_epochs!r}")
    x = _tensor(data)
    z = posterior_means(first, x) if codes == "mean" else first_stage_codes(first, x)
    n, d = z.shape
    latent_dim = d if latent_dim is None else latent_dim
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer; received {latent_dim!r}")
    device = _device(first)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        second = second_stage_vae(d, latent_dim, hidden).to(device=device, dtype=z.dtype)
        steps_per_epoch = -(-n // batch_size)
        objective = ELBO(beta=LinearWarmup(1.0, steps=warmup * steps_per_epoch), kl="analytic")
        step = 0

        def loss_fn(zb: torch.Tensor) -> torch.Tensor:  # batch mean of rec + beta KL (nats)
            nonlocal step
            loss = objective(second, zb, step=step).loss
            step += 1
            return loss

        def epoch_codes(epoch: int) -> torch.Tensor:  # codes="sample": a fresh draw per epoch
            return first_stage_codes(first, x) if codes == "sample" and epoch > 0 else z

        fit(
            second,
            loss_fn,
            epoch_codes,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            generator=torch.Generator().manual_seed(seed),
            desc="second stage",
            device=device,
        )
    return second.eval()


class TwoStageSampler(nn.Module):
    """Ancestral sampling ``u ~ N(0, I) -> z = E p2(z|u) -> x ~ p1(x|z)`` (Dai & Wipf 2019).

    Args:
        first: the first-stage model (``decode(z)`` -> p1(x|z)).
        second: the second-stage VAE from :func:`fit_second_stage` (``decode(u)`` -> p2(z|u)).
    """

    def __init__(self, first: nn.Module, second: VAE):
        super().__init__()
        self.first, self.second = first, second

    @torch.no_grad()
    def latents(self, n: int, mean: bool = True) -> torch.Tensor:
        """n first-stage codes ``z [n, D]``: ``E p2(z|u)`` (``mean=True``, as in the paper) or a draw."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer; received {n!r}")
        u = self.second.prior().sample((n,))
        pz = self.second.decode(u)
        return pz.mean if mean else pz.sample()

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, latent_mean: bool = True) -> torch.Tensor:
        """n draws ``[n, *x_shape]``: ``E[x|z]`` (``mean=True``, for pictures) or x ~ p1(x|z)."""
        px = self.first.decode(self.latents(n, mean=latent_mean))
        return px.mean if mean else px.sample()
