"""vaekit: the variational autoencoder objective, written once, with explicit units (nats).

Every public module is an attribute after ``import vaekit``. The light ones (``functional``,
``likelihoods``, ``posteriors``, ``priors``, ``objectives``, ``schedules``, ``quantizers``) are
imported here; ``evaluate``, ``data``, ``metrics``, ``models``, ``latent``, ``discrete``, the run
API (``train``, ``evaluate_run``, ``sample_run``, ``load_run``) and ``load`` (an export folder,
:mod:`vaekit.export`) are imported on first access.
"""

import importlib as _importlib

from vaekit import functional, likelihoods, objectives, posteriors, priors, quantizers, schedules
from vaekit._checks import validation
from vaekit.classic import classic_loss
from vaekit.models.vae import VAE
from vaekit.objectives import ELBO, IWAE, LossOutput

__all__ = [
    "VAE",
    "ELBO",
    "IWAE",
    "LossOutput",
    "classic_loss",
    "functional",
    "likelihoods",
    "objectives",
    "posteriors",
    "priors",
    "quantizers",
    "schedules",
    "validation",
    "evaluate",
    "data",
    "metrics",
    "models",
    "latent",
    "discrete",
    "train",
    "evaluate_run",
    "sample_run",
    "load_run",
    "load",
]
__version__ = "0.1.0"

# Loaded on first access, to keep `import vaekit` fast (the SciPy pattern): the run API pulls
# in matplotlib, PIL and yaml (~0.8 s); evaluate, data and metrics cost tens of ms and are
# lazy as the contract says (DESIGN.md). This saves import time only and hides no import
# cycle: tests/test_imports.py checks that the module-level imports form no cycle and that
# every module imports on its own. ``models`` is normally loaded already (``vaekit.VAE``).
_LAZY_SUBMODULES = ("evaluate", "data", "metrics", "models", "latent", "discrete")
_RUN_API = {
    "train": "vaekit.training.run",
    "evaluate_run": "vaekit.training.run",
    "sample_run": "vaekit.training.run",
    "load_run": "vaekit.training.run",
    "load": "vaekit.export",
}


def __getattr__(name: str):
    """Import the lazily loaded submodules and run-API functions on first access."""
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"vaekit.{name}")
    if name in _RUN_API:
        return getattr(_importlib.import_module(_RUN_API[name]), name)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included (so tab completion sees them)."""
    return sorted({*globals(), *__all__})
