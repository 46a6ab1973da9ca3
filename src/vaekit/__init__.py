"""vaekit: the variational autoencoder objective, written once, with explicit units (nats)."""

from vaekit import functional, likelihoods, objectives, posteriors, priors
from vaekit._checks import validation
from vaekit.models.vae import VAE
from vaekit.objectives import ELBO, IWAE, LossOutput

__all__ = [
    "VAE",
    "ELBO",
    "IWAE",
    "LossOutput",
    "functional",
    "likelihoods",
    "objectives",
    "posteriors",
    "priors",
    "validation",
]
__version__ = "0.1.0"
