"""Objectives: ``objective(model, x, *, y=None, step=None) -> LossOutput``, one contract for all.

Every objective is an :class:`Objective` (an ``nn.Module``: a stateless one has no parameters
or buffers), registered with its CLI name and its hyperparameters in :data:`OBJECTIVES`.
Every per-example term is in nats, shape ``[B]``; ``reduction`` acts on the batch axis only.
Sign conventions (DESIGN.md): ``bound`` is the lower bound on log p(x) that the objective
estimates (negative for images), ``rec = -E_q[log p(x|z)]`` (positive),
``kl = KL(q(z|x) || p(z))`` (analytic: never negative), ``loss`` is what is minimised.

By family:

- :mod:`~vaekit.objectives.bounds`: ELBO, IWAE, MIWAE, CIWAE, PIWAE;
- :mod:`~vaekit.objectives.renyi`: the variational Renyi bound;
- :mod:`~vaekit.objectives.jointvae`: JointVAE (continuous + discrete capacities);
- :mod:`~vaekit.objectives.regularised`: CapacityELBO, BetaTCVAE, DIPVAE, InfoVAE, WAE,
  TripletELBO, PerceptualELBO (the ELBO's terms plus one term each);
- :mod:`~vaekit.objectives.stateful`: GECO, FactorVAE, VQObjective (state in buffers and
  sub-modules, saved by ``state_dict``);
- :mod:`~vaekit.objectives.adversarial`: AutoencoderKLLoss, VQGANLoss (latent diffusion's
  first-stage losses: a discriminator with its own optimizer).
- :mod:`~vaekit.objectives.m2`: M2Objective (semi-supervised, a discrete y summed out).

A new objective is one file: a subclass of :class:`Objective` decorated with
:func:`register`, imported below.
"""

from vaekit.objectives._base import (
    OBJECTIVES,
    LossOutput,
    Objective,
    ObjectiveSpec,
    Param,
    analytic_kl,
    log_weights,
    rec_kl,
    register,
    weight_at,
)
from vaekit.objectives.adversarial import AutoencoderKLLoss, VQGANLoss
from vaekit.objectives.bounds import CIWAE, ELBO, IWAE, MIWAE, PIWAE
from vaekit.objectives.jointvae import JointVAE
from vaekit.objectives.m2 import M2Objective
from vaekit.objectives.regularised import (
    DIPVAE,
    WAE,
    BetaTCVAE,
    CapacityELBO,
    InfoVAE,
    PerceptualELBO,
    TripletELBO,
    triplet_indices,
)
from vaekit.objectives.renyi import Renyi
from vaekit.objectives.stateful import GECO, FactorVAE, VQObjective

__all__ = [
    "LossOutput",
    "Objective",
    "ObjectiveSpec",
    "Param",
    "OBJECTIVES",
    "register",
    "weight_at",
    "ELBO",
    "IWAE",
    "MIWAE",
    "CIWAE",
    "PIWAE",
    "Renyi",
    "CapacityELBO",
    "GECO",
    "BetaTCVAE",
    "FactorVAE",
    "DIPVAE",
    "InfoVAE",
    "WAE",
    "TripletELBO",
    "PerceptualELBO",
    "VQObjective",
    "AutoencoderKLLoss",
    "VQGANLoss",
    "M2Objective",
    "JointVAE",
    "triplet_indices",
    "log_weights",
    "analytic_kl",
    "rec_kl",
]
