"""The autoencoders of latent diffusion: AutoencoderKL (Rombach et al. 2022) and VQGAN (Esser et al. 2021).

* :class:`AutoencoderKL`: a convolutional VAE whose latent is a ``C x H/f x W/f`` map with a
  diagonal-Gaussian q(z|x) and N(0, I) prior (the first-stage model of Stable Diffusion);
  p(x|z) is :class:`SharedScaleLaplace`, a Laplace with one learned scalar log-scale, which is
  the learned ``logvar`` of LDM's loss (:class:`vaekit.objectives.AutoencoderKLLoss`).
* VQGAN: a :class:`~vaekit.models.vqvae.VQVAE` with any vaekit quantizer, the same conv
  layout, and the same likelihood, trained by :class:`vaekit.objectives.VQGANLoss`.

Both expose :meth:`last_layer` (the decoder's last weight, where the adaptive weight of the
adversarial term is measured). Images are ``[B, C, H, W]`` in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution, Laplace

from vaekit._checks import check_count
from vaekit.likelihoods import Likelihood, _Event, _finite
from vaekit.models.networks import _image_shape, _spatial_sizes
from vaekit.models.vae import VAE
from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import StandardNormal

__all__ = [
    "SharedScaleLaplace",
    "AutoencoderKL",
    "build_autoencoder_kl",
    "build_vqgan",
    "last_layer",
    "level_channels",
    "quantizer_fields",
    "quantizer_options",
]

DOWNSAMPLE = (2, 4, 8, 16)


class SharedScaleLaplace(Likelihood):
    """Laplace ``p(x|z) = prod_i exp(-|x_i - loc_i| / b) / (2b)`` with one learned scale for all values.

    ``b = exp(logvar)``, ``logvar`` a scalar parameter (initial value ``logvar_init``, 0 as in
    LDM). ``-log p = sum_i |x_i - loc_i| / b + D (logvar + log 2)`` nats, so LDM's
    ``nll = L1 / e^logvar + D logvar`` (no perceptual term) is this NLL minus ``D log 2``.
    """

    n_params = 1

    def __init__(self, logvar_init: float = 0.0):
        super().__init__()
        self.logvar = nn.Parameter(torch.tensor(float(logvar_init)))

    def _distribution(self, params: torch.Tensor, nd: int) -> Distribution:
        scale = self.logvar.exp().to(params.dtype).expand_as(params)
        return _Event(Laplace(params, scale, validate_args=False), nd, _finite)


def level_channels(base: int, downsample: int) -> tuple[int, ...]:
    """Widths of the ``log2(f)`` stride-2 convs: ``base * (1, 2, 4, 4, ...)`` (LDM's ch_mult)."""
    check_count("channels", base, 1)
    if downsample not in DOWNSAMPLE:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE}; received {downsample!r}")
    return tuple(base * min(2**i, 4) for i in range(int(math.log2(downsample))))


def _encoder(image_shape, widths, out_channels) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(image_shape[0], widths[0], 3, padding=1), nn.SiLU()]
    for a, b in zip((widths[0], *widths[:-1]), widths, strict=True):
        layers += [nn.Conv2d(a, b, 4, 2, 1), nn.SiLU(), nn.Conv2d(b, b, 3, padding=1), nn.SiLU()]
    layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
    return nn.Sequential(*layers)


def _decoder(image_shape, widths, in_channels, out_channels) -> nn.Sequential:
    sizes = _spatial_sizes(image_shape, len(widths))
    rev = widths[::-1]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, rev[0], 3, padding=1), nn.SiLU()]
    for i, (a, b) in enumerate(zip(rev, (*rev[1:], rev[-1]), strict=True)):
        (h, w), (hs, ws) = sizes[-2 - i], sizes[-1 - i]
        pad = (h - 2 * hs, w - 2 * ws)  # restore odd sizes: 28 -> 14 -> 7 -> 3 -> 7 -> ...
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, output_padding=pad), nn.SiLU()]
        layers += [nn.Conv2d(b, b, 3, padding=1), nn.SiLU()]
    layers.append(nn.Conv2d(rev[-1], out_channels, 3, padding=1))
    return nn.Sequential(*layers)


def last_layer(decoder: nn.Module) -> nn.Parameter:
    """The weight of the decoder's last layer that has one (LDM's ``get_last_layer``)."""
    for module in reversed(list(decoder.modules())):
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() >= 2:
            return w
    raise ValueError(f"the decoder {type(decoder).__name__} has no layer with a weight matrix")


class AutoencoderKL(VAE):
    """Conv VAE with a spatial latent: ``x [B, C, H, W] -> z [B, C_z * H/f * W/f]`` (flattened).

    Encoder: a 3x3 conv, then per level a stride-2 4x4 conv and a 3x3 conv (SiLU), then a
    3x3 conv to ``2 C_z`` channels (mean | log-variance maps); decoder: the mirror with
    transposed convs and a last 3x3 conv to the image. q(z|x) is diagonal Gaussian, p(z) is
    N(0, I), p(x|z) a :class:`SharedScaleLaplace` by default. ``latent_shape = (C_z, h, w)``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        *,
        downsample: int = 8,
        latent_channels: int = 4,
        channels: int = 64,
        likelihood: Likelihood | None = None,
    ):
        image_shape = _image_shape(image_shape)
        check_count("latent_channels", latent_channels, 1)
        widths = level_channels(channels, downsample)
        h, w = _spatial_sizes(image_shape, len(widths))[-1]
        likelihood = likelihood if likelihood is not None else SharedScaleLaplace()
        out = likelihood.param_shape(image_shape)[0]
        encoder = nn.Sequential(_encoder(image_shape, widths, 2 * latent_channels), nn.Flatten())
        # [mean maps | log-variance maps] flattened: the first half is the mean, as
        # DiagonalGaussian splits it
        decoder = nn.Sequential(
            nn.Unflatten(1, (latent_channels, h, w)),
            _decoder(image_shape, widths, latent_channels, out),
        )
        d = latent_channels * h * w
        super().__init__(
            encoder,
            decoder,
            posterior=DiagonalGaussian(),
            prior=StandardNormal(d),
            likelihood=likelihood,
        )
        self.image_shape, self.latent_shape = image_shape, (latent_channels, h, w)
        self.downsample = downsample

    def last_layer(self) -> nn.Parameter:
        """The decoder's last conv weight."""
        return last_layer(self.decoder)


def build_autoencoder_kl(cfg, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    """``--model autoencoder_kl`` from a :class:`~vaekit.config.ModelConfig`."""
    if len(tuple(image_shape)) != 3:
        raise ValueError(
            f"model 'autoencoder_kl' is convolutional: images (C, H, W); received shape "
            f"{tuple(image_shape)}"
        )
    return AutoencoderKL(
        image_shape,
        downsample=cfg.downsample,
        latent_channels=cfg.latent_channels,
        channels=cfg.channels,
    )


def quantizer_fields(cfg) -> tuple[str, ...]:
    """The model config keys that ``cfg.quantizer`` reads (besides ``quantizer``)."""
    if cfg.quantizer in ("fsq", "lfq"):
        return ("num_codes", "code_dim", "commitment")
    residual = ("num_quantizers",) if cfg.quantizer == "residual" else ()
    return (
        "num_codes",
        "code_dim",
        "commitment",
        "restart_after",
        "rotation_trick",
        "kmeans_init",
        *residual,
    )


def quantizer_options(cfg) -> dict:
    """Keyword arguments of :func:`~vaekit.models.vqvae.build_vqvae` beyond the common ones."""
    keys = [k for k in quantizer_fields(cfg) if k not in ("num_codes", "code_dim", "commitment")]
    return {k: getattr(cfg, k) for k in keys}


def build_vqgan(cfg, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    """``--model vqgan``: a VQ-VAE with the AutoencoderKL conv widths, any quantizer, and a
    :class:`SharedScaleLaplace` likelihood; its decoder's last weight is
    ``last_layer(model.decoder)``."""
    from vaekit.models.vqvae import build_vqvae

    if len(tuple(image_shape)) != 3:
        raise ValueError(
            f"model 'vqgan' is convolutional: images (C, H, W); received shape {tuple(image_shape)}"
        )
    return build_vqvae(
        image_shape,
        SharedScaleLaplace(),
        quantizer=cfg.quantizer,
        code_dim=cfg.code_dim or None,
        num_codes=cfg.num_codes or None,
        beta=cfg.commitment,
        channels=level_channels(cfg.channels, cfg.downsample),
        **quantizer_options(cfg),
    )
