"""Builders of the models with a categorical latent: the Gumbel-softmax VAE and JointVAE."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vaekit.config import ModelConfig
from vaekit.discrete import GumbelSoftmax, JointPosterior, JointPrior, UniformCategorical
from vaekit.models.networks import MLP, ConvEncoder, GatedMLP, build_networks
from vaekit.models.vae import VAE
from vaekit.schedules import Geometric

__all__ = ["build_gumbel_vae", "build_jointvae", "discrete_fields", "temperature_schedule"]


def discrete_fields(cfg: ModelConfig) -> tuple[str, ...]:
    """The config keys of a categorical latent (temperature_end only when it is annealed)."""
    anneal = ("temperature_end",) if cfg.temperature_steps > 0 else ()
    return ("categories", "discrete_variables", "temperature", "temperature_steps", *anneal, "hard")


def temperature_schedule(cfg: ModelConfig) -> float | Geometric:
    """tau: ``cfg.temperature``, or annealed geometrically to ``temperature_end`` over
    ``temperature_steps`` optimizer steps (:class:`vaekit.schedules.Geometric`)."""
    if cfg.temperature_steps > 0:
        return Geometric(cfg.temperature, cfg.temperature_end, cfg.temperature_steps)
    return float(cfg.temperature)


def _networks(
    cfg: ModelConfig, shape: Sequence[int], features: int, code: int, out_shape
) -> tuple[nn.Module, nn.Module]:
    """An encoder ``[B, *shape] -> [B, features]`` and a decoder ``[..., code] -> [..., *out_shape]``."""
    activation = None if cfg.network == "gated" else cfg.activation
    _, decoder = build_networks(
        cfg.network,
        shape,
        code,
        hidden=cfg.hidden,
        decoder_out_shape=out_shape,
        activation=activation,
    )
    if cfg.network == "mlp":
        encoder = MLP(shape, features, cfg.hidden, activation=activation)
    elif cfg.network == "gated":
        encoder = GatedMLP(shape, features, cfg.hidden)
    else:
        encoder = ConvEncoder(shape, features, None, cfg.hidden, activation=activation)
    return encoder, decoder


def build_gumbel_vae(cfg: ModelConfig, shape: Sequence[int], likelihood: nn.Module) -> VAE:
    """VAE with ``discrete_variables`` categoricals of ``categories`` (Gumbel-softmax q(c|x),
    uniform p(c)); the decoder reads the one-hot code ``[M * C]``."""
    posterior = GumbelSoftmax(
        cfg.categories, cfg.discrete_variables, temperature_schedule(cfg), cfg.hard
    )
    encoder, decoder = _networks(
        cfg, shape, posterior.features, posterior.features, likelihood.param_shape(shape)
    )
    prior = UniformCategorical(cfg.categories, cfg.discrete_variables)
    return VAE(encoder, decoder, posterior=posterior, prior=prior, likelihood=likelihood)


def build_jointvae(cfg: ModelConfig, shape: Sequence[int], likelihood: nn.Module) -> VAE:
    """JointVAE (Dupont 2018): Gaussian z of ``latent_dim`` and the categoricals c; the encoder
    gives ``[mean | logvar | logits]``, the decoder reads ``[z | one-hot c]``."""
    if cfg.latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1; received {cfg.latent_dim}")
    posterior = JointPosterior(
        cfg.latent_dim, cfg.categories, cfg.discrete_variables, temperature_schedule(cfg), cfg.hard
    )
    code = cfg.latent_dim + posterior.discrete.features
    encoder, decoder = _networks(
        cfg, shape, posterior.features, code, likelihood.param_shape(shape)
    )
    prior = JointPrior(cfg.latent_dim, cfg.categories, cfg.discrete_variables)
    return VAE(encoder, decoder, posterior=posterior, prior=prior, likelihood=likelihood)
