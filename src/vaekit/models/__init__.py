"""Models: networks (encoders/decoders), the composed VAE and its variants (HVAE, CVAE, VQ-VAE)."""

from vaekit.models.cvae import CVAE, build_cvae
from vaekit.models.hvae import HVAE, build_hvae
from vaekit.models.networks import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    GatedDense,
    GatedMLP,
    build_networks,
)
from vaekit.models.vae import VAE, VAEOutput
from vaekit.models.vqvae import VQVAE, CodePrior, build_vqvae
from vaekit.objectives import VQObjective  # re-exported: vaekit.models.VQObjective

__all__ = [
    "MLP",
    "ConvDecoder",
    "ConvEncoder",
    "GatedDense",
    "GatedMLP",
    "build_networks",
    "VAE",
    "VAEOutput",
    "HVAE",
    "build_hvae",
    "CVAE",
    "build_cvae",
    "VQVAE",
    "VQObjective",
    "CodePrior",
    "build_vqvae",
]
