"""Metrics of learned representations (see :mod:`vaekit.metrics.disentanglement`).

The observational scores default to disentanglement_lib's forms (:mod:`vaekit.metrics.reference`
holds the scikit-learn estimators: ``pip install "vaekit[metrics]"``).
"""

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
from vaekit.metrics.reference import explicitness, modularity

__all__ = [
    "DCIScores",
    "FactorDataset",
    "beta_vae_score",
    "dci",
    "discretize",
    "evaluate_disentanglement",
    "explicitness",
    "factor_vae_score",
    "image_representation",
    "mig",
    "modularity",
    "mutual_info_matrix",
    "sap",
]
