"""Models: networks (encoders/decoders) and the composed VAE."""

from vaekit.models.networks import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    GatedDense,
    GatedMLP,
    build_networks,
)
from vaekit.models.vae import VAE, VAEOutput

__all__ = [
    "MLP",
    "ConvDecoder",
    "ConvEncoder",
    "GatedDense",
    "GatedMLP",
    "build_networks",
    "VAE",
    "VAEOutput",
]
