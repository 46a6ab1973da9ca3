"""Metrics of learned representations (see :mod:`vaekit.metrics.disentanglement`)."""

from vaekit.metrics.disentanglement import (
    DCIScores,
    FactorDataset,
    beta_vae_score,
    dci,
    discretize,
    evaluate_disentanglement,
    factor_vae_score,
    image_representation,
    mig,
    mutual_info_matrix,
    sap,
)

__all__ = [
    "DCIScores",
    "FactorDataset",
    "beta_vae_score",
    "dci",
    "discretize",
    "evaluate_disentanglement",
    "factor_vae_score",
    "image_representation",
    "mig",
    "mutual_info_matrix",
    "sap",
]
