"""vaekit: the variational autoencoder objective, written once, with explicit units (nats)."""

from vaekit import functional, likelihoods, objectives, posteriors, priors, quantizers, schedules
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
    "quantizers",
    "schedules",
    "validation",
    "train",
    "evaluate_run",
    "sample_run",
    "load_run",
]
__version__ = "0.1.0"

_RUN_API = ("train", "evaluate_run", "sample_run", "load_run")


def __getattr__(name: str):
    # the run API pulls in matplotlib and the data loaders: import it only when asked
    if name in _RUN_API:
        from vaekit.training import run

        return getattr(run, name)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
