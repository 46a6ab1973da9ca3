"""The latent-diffusion autoencoder loss (AutoencoderKL) and VQGAN's loss: reconstruction,
perceptual distance, a learned log-variance, a KL or codebook term, and a PatchGAN
discriminator weighted adaptively (Esser et al. 2021; Rombach et al. 2022).

Written after taming-transformers' ``VQLPIPSWithDiscriminator`` and latent-diffusion's
``LPIPSWithDiscriminator``; per example, for an image of D = C x H x W values in [0, 1]::

    rec_px  = sum_i |x_i - x^_i|            (L1; or sum_i (x_i - x^_i)^2 with rec_loss="l2")
    rec_tot = rec_px + perceptual_weight * D * p(x, x^)   (LDM adds the [B,1,1,1] perceptual
                                                           distance to every pixel)
    nll     = rec_tot / e^s + D s                          (s: the learned scalar log-variance)
    loss    = nll + kl_weight KL(q(z|x) || N(0, I))        (AutoencoderKL)
            | nll + codebook_weight (codebook + commitment) (VQGAN)
            + lambda disc_weight g,    g = -mean_patches D_phi(x^)   (from step disc_start on)
    lambda  = clamp(||d nll_mean / d w_last|| / (||d g_mean / d w_last|| + 1e-4), 0, 1e4)

``_mean`` is the batch mean and ``w_last`` the decoder's last weight; lambda is detached.
Batch means of these give LDM's ``torch.sum(nll) / B`` reduction exactly. The discriminator
D_phi takes one Adam step per training call (from ``disc_start`` on, on the same batch, on
the detached reconstruction), on ``0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x^)))`` (hinge)
or ``0.5 (mean softplus(-D(x)) + mean softplus(D(x^)))`` (vanilla: binary cross-entropy,
the non-saturating GAN's discriminator). The generator term g is ``-mean D(x^)`` for both,
as in taming and LDM. Before ``disc_start`` the discriminator is neither called nor stepped,
and ``g_loss``, ``adaptive_weight``, ``disc_loss`` and the mean logits are reported as 0 (so
every step logs the same keys; an epoch's mean counts those steps as 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vaekit._checks import check_choice, check_count, check_positive
from vaekit.objectives._base import LossOutput, Param, analytic_kl, check_weight, register
from vaekit.objectives.stateful import OwnOptimizer

__all__ = [
    "AutoencoderKLLoss",
    "VQGANLoss",
    "PatchDiscriminator",
    "hinge_d_loss",
    "vanilla_d_loss",
    "adaptive_weight",
]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 (mean relu(1 - l_real) + mean relu(1 + l_fake))``, a batch scalar (taming's)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 (mean softplus(-l_real) + mean softplus(l_fake))``: binary cross-entropy, nats."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}
# reported by every call; 0 before disc_start, where nothing is computed
_DISC_METRICS = ("adaptive_weight", "disc_loss", "logits_real", "logits_fake")


def adaptive_weight(
    nll: torch.Tensor, g: torch.Tensor, last: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """``clamp(||d nll / d last|| / (||d g / d last|| + 1e-4), 0, max_weight)``, detached.

    Both scalars must depend on ``last`` (the decoder's last weight); the graph is kept.
    """
    (g_nll,) = torch.autograd.grad(nll, last, retain_graph=True)
    (g_g,) = torch.autograd.grad(g, last, retain_graph=True)
    return (g_nll.norm() / (g_g.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix; taming's ``NLayerDiscriminator`` layout): logits ``[B, 1, h, w]``.

    Conv 4x4 stride 2 to ``channels``, LeakyReLU(0.2); ``layers - 1`` more stride-2 convs
    doubling the width (at most 8x); a stride-1 conv, LeakyReLU; a stride-1 conv to 1 channel.
    Weights ~ N(0, 0.02) as taming's ``weights_init``. Unlike taming there is no BatchNorm
    (its running statistics would differ across DDP ranks and between the generator and the
    discriminator passes); each conv has a bias instead.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        check_count("in_channels", in_channels)
        check_count("disc_channels", channels)
        check_count("disc_layers", layers)
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, 2, 1), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2**layers, 8)
        seq += [nn.Conv2d(channels * prev, channels * mult, 4, 1, 1), nn.LeakyReLU(0.2)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        for m in self.main:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


_PARAMS = (
    Param(
        "perceptual_weight",
        1.0,
        "weight of the perceptual distance, added to every pixel's reconstruction error as in LDM",
    ),
    Param(
        "perceptual",
        "random",
        "perceptual network: random (fixed random-weight conv features, no download) | lpips "
        "(the lpips package and its weights)",
        type=str,
        choices=("random", "lpips"),
    ),
    Param(
        "rec_loss",
        "l1",
        "reconstruction: l1 | l2, summed over pixels",
        type=str,
        choices=("l1", "l2"),
    ),
    Param(
        "disc_start",
        50001,
        "first step of the adversarial term and the discriminator",
        type=int,
        units="steps",
        low=0,
    ),
    Param("disc_weight", 0.5, "disc_weight, times the adaptive weight, weighs the generator term"),
    Param(
        "disc_loss",
        "hinge",
        "discriminator loss: hinge | vanilla (binary cross-entropy)",
        type=str,
        choices=("hinge", "vanilla"),
    ),
    Param("disc_lr", 1e-4, "Adam learning rate of the discriminator (betas 0.5, 0.9)", low=0),
    Param("disc_layers", 3, "stride-2 conv layers of the PatchGAN discriminator", type=int, low=1),
    Param("disc_channels", 64, "width of the discriminator's first conv", type=int, low=1),
)


class _AdversarialAutoencoderLoss(OwnOptimizer):
    """Shared body of :class:`AutoencoderKLLoss` and :class:`VQGANLoss` (see the module doc).

    ``kl_weight`` weighs the KL of the KL model, ``codebook_weight`` the quantizer losses of
    VQGAN; each class uses (and registers) its own one. ``image_channels`` sizes the
    discriminator and the perceptual network.
    """

    weights = ("perceptual_weight", "disc_weight")
    kl = "analytic"  # the trainer's validation ELBO uses the closed-form KL

    def __init__(
        self,
        kl_weight: float = 1e-6,
        codebook_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        perceptual: str = "random",
        rec_loss: str = "l1",
        disc_start: int = 50001,
        disc_weight: float = 0.5,
        disc_loss: str = "hinge",
        disc_lr: float = 1e-4,
        disc_layers: int = 3,
        disc_channels: int = 64,
        image_channels: int = 3,
        reduction: str = "mean",
    ):
        super().__init__(reduction)
        weights = {"kl_weight": kl_weight, "codebook_weight": codebook_weight}
        weights.update(perceptual_weight=perceptual_weight, disc_weight=disc_weight)
        for name, value in weights.items():
            check_weight(name, value)
        choices = {"perceptual": ("random", "lpips"), "rec_loss": ("l1", "l2")}
        for name, value in (("perceptual", perceptual), ("rec_loss", rec_loss)):
            check_choice(name, value, choices[name])
        check_choice("disc_loss", disc_loss, D_LOSSES)
        check_count("disc_start", disc_start, 0)
        check_positive("disc_lr", disc_lr)
        # numbers or schedules (weights_at evaluates them)
        self.kl_weight, self.codebook_weight = kl_weight, codebook_weight
        self.perceptual_weight, self.disc_weight = perceptual_weight, disc_weight
        self.rec_loss, self.disc_start, self.disc_loss = rec_loss, int(disc_start), disc_loss
        self.perceptual_name = perceptual
        if callable(perceptual_weight) or perceptual_weight > 0:
            from vaekit.models.perceptual import perceptual_network

            self.perceptual = perceptual_network(perceptual, image_channels)
        else:
            self.perceptual = None
        self.discriminator = PatchDiscriminator(image_channels, disc_channels, disc_layers)
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=float(disc_lr), betas=(0.5, 0.9)
        )

    # -- what the two models differ in -------------------------------------------------------

    def _pass(self, model, x, w):  # pragma: no cover - abstract
        """``(x^ [B, C, H, W], weighted regulariser [B], bound, rec (nats), kl, terms, metrics)``."""
        raise NotImplementedError

    # -- the loss ----------------------------------------------------------------------------

    def forward(self, model, x, *, y=None, step=None) -> LossOutput:
        if x.dim() != 4:
            raise ValueError(
                f"{self.name} takes images [B, C, H, W]; received shape {tuple(x.shape)}"
            )
        inner = getattr(model, "module", model)  # DistributedDataParallel
        w = self.weights_at(step)
        xrec, reg, bound, rec_nats, kl, terms, metrics = self._pass(model, x, w)
        d = x[0].numel()
        diff = x - xrec
        rec_px = (diff.abs() if self.rec_loss == "l1" else diff.square()).flatten(1).sum(1)
        rec_tot = rec_px
        if self.perceptual is not None:
            p = self.perceptual(x, xrec).to(rec_px.dtype)
            rec_tot = rec_px + w["perceptual_weight"] * d * p
            terms["perceptual"] = p
        logvar = inner.likelihood.logvar
        nll = rec_tot / logvar.exp() + d * logvar
        loss = nll + reg
        train = self.training and torch.is_grad_enabled()
        active = train and step is not None and step >= self.disc_start
        metrics.update({"logvar": logvar.detach(), "disc_active": float(active)})
        if active:
            g = self._generator_term(xrec)
            from vaekit.models.autoencoders import last_layer

            lam = adaptive_weight(nll.mean(), g.mean(), last_layer(inner.decoder))
            loss = loss + lam * w["disc_weight"] * g
            terms["g_loss"] = g
            metrics["adaptive_weight"] = lam
            metrics.update(self._discriminator_step(x.detach(), xrec.detach()))
        else:  # the same keys in every row (epoch means count the steps before disc_start as 0)
            terms["g_loss"] = torch.zeros_like(nll)
            zero = torch.zeros((), device=nll.device)
            metrics.update(dict.fromkeys(_DISC_METRICS, zero))
        terms.update({"rec_px": rec_px, "nll": nll})
        return self._output(
            loss,
            bound=bound,
            rec=rec_nats,
            kl=kl,
            terms=terms,
            metrics=metrics,
            weights=w,
        )

    def _generator_term(self, xrec: torch.Tensor) -> torch.Tensor:
        """``g = -mean_patches D(x^)`` per example ``[B]``, with the discriminator's weights
        copied (its step below changes them in place before backward runs; no gradient
        reaches them from the autoencoder's loss)."""
        frozen = {k: v.detach().clone() for k, v in self.discriminator.named_parameters()}
        logits = functional_call(self.discriminator, frozen, (xrec,))
        return -logits.flatten(1).mean(1)

    def _discriminator_step(self, x: torch.Tensor, xrec: torch.Tensor) -> dict:
        params = list(self.discriminator.parameters())
        with torch.enable_grad():
            real, fake = self.discriminator(x), self.discriminator(xrec)
            loss = D_LOSSES[self.disc_loss](real, fake)
        self._step_optimizer(loss, params)
        return {
            "disc_loss": loss.detach(),
            "logits_real": real.detach().mean(),
            "logits_fake": fake.detach().mean(),
        }


@register(
    "autoencoder_kl",
    summary="latent-diffusion autoencoder loss: L1 + perceptual over a learned variance, "
    "KL weight, adaptive PatchGAN term",
    params=(Param("kl_weight", 1e-6, "weight of KL(q(z|x) || N(0, I)) (LDM: 1e-6)"), *_PARAMS),
    context=("image_channels",),
    models=("autoencoder_kl",),
)
class AutoencoderKLLoss(_AdversarialAutoencoderLoss):
    """The AutoencoderKL loss of latent diffusion (Rombach et al. 2022); see the module doc.

    Per-example terms: ``rec`` = -log p(x|z) under the model's shared-scale Laplace (nats),
    ``kl`` (nats, summed over latent values), ``bound`` = -rec - kl (the ELBO, nats),
    ``rec_px`` (L1 or squared error summed over pixels, data units), ``perceptual`` (the
    network's distance), ``nll`` (LDM's ``rec_tot / e^s + D s``), ``g_loss`` (from
    ``disc_start``), ``loss``. Metrics add ``logvar`` (s), ``adaptive_weight`` (lambda before
    ``disc_weight``), ``disc_loss``, ``logits_real``, ``logits_fake``, ``disc_active`` and the
    weights. The model must be an :class:`~vaekit.models.autoencoders.AutoencoderKL` (or any
    VAE whose likelihood has a scalar ``logvar`` and whose ``decoder`` ends in a weight).
    """

    weights = ("kl_weight", "perceptual_weight", "disc_weight")

    def _pass(self, model, x, w):
        out = model(x)
        kl = analytic_kl(out.posterior, out.prior)
        rec_nats = -out.likelihood.log_prob(x)[0]
        return out.likelihood.mean[0], w["kl_weight"] * kl, -rec_nats - kl, rec_nats, kl, {}, {}


@register(
    "vqgan",
    summary="VQGAN loss: L1 + perceptual over a learned variance, codebook terms, adaptive "
    "PatchGAN term (any vaekit quantizer)",
    params=(
        Param("codebook_weight", 1.0, "weight of the quantizer's codebook + commitment"),
        *_PARAMS,
    ),
    context=("image_channels",),
    models=("vqgan",),
)
class VQGANLoss(_AdversarialAutoencoderLoss):
    """VQGAN's loss (Esser et al. 2021) around any vaekit quantizer; see the module doc.

    The regulariser is ``codebook_weight * (codebook + commitment)`` (the quantizer's losses,
    summed per example; LFQ's entropy penalty comes as its ``codebook`` loss). Unlike taming,
    the reconstruction is summed over pixels (not averaged) and divided by the learned
    variance, as in the KL model, so the two models share one loss. ``kl = N log K`` and
    ``bound = -rec - kl`` as for :class:`~vaekit.objectives.VQObjective`; metrics add the
    batch ``perplexity`` and ``usage`` of the codes.
    """

    weights = ("codebook_weight", "perceptual_weight", "disc_weight")

    def _pass(self, model, x, w):
        out = model(x)
        q = out.quantized
        rec_nats = -out.likelihood.log_prob(x)
        k = getattr(model, "module", model).num_codes
        kl = torch.full_like(rec_nats, q.indices[0].numel() * math.log(k))
        reg = w["codebook_weight"] * (q.codebook_loss + q.commitment_loss)
        terms = {"codebook": q.codebook_loss, "commitment": q.commitment_loss}
        metrics = {"perplexity": q.perplexity, "usage": q.usage}
        return out.likelihood.mean, reg, -rec_nats - kl, rec_nats, kl, terms, metrics
