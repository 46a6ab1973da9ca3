"""Models: networks (encoders/decoders), the composed VAE and its variants (HVAE, CVAE, VQ-VAE)."""

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
    "HVAE",  # noqa: F822 (lazy, below)
    "build_hvae",  # noqa: F822
    "CVAE",  # noqa: F822
    "build_cvae",  # noqa: F822
    "VQVAE",  # noqa: F822
    "VQObjective",  # noqa: F822
    "CodePrior",  # noqa: F822
    "build_vqvae",  # noqa: F822
]

# the variants import vaekit.objectives, which imports this package: load them on first use
_LAZY = {
    "HVAE": "hvae",
    "build_hvae": "hvae",
    "CVAE": "cvae",
    "build_cvae": "cvae",
    "VQVAE": "vqvae",
    "VQObjective": "vqvae",
    "CodePrior": "vqvae",
    "build_vqvae": "vqvae",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"vaekit.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'vaekit.models' has no attribute {name!r}")
