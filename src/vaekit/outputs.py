"""The plain result types that models, quantizers and objectives hand to each other.

A leaf module: it imports only torch and the standard library, so any vaekit module can use
these types without importing the module that produces them. Models import their output
type from here and objectives import what they read from here, so imports run one way
(objectives never need to import a model to know what a model returns).

They stay importable where they used to live: ``vaekit.models.vae.VAEOutput`` (and
``vaekit.models.VAEOutput``), ``vaekit.quantizers.QuantizerOutput``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.distributions import Distribution

__all__ = ["VAEOutput", "QuantizerOutput", "LossOutput"]


class VAEOutput(NamedTuple):
    """What one pass hands to an objective.

    ``encoder_out``: raw encoder output ``[B, F]`` (objectives that stop gradients through
    q's parameters rebuild q from it detached); ``posterior``: q(z|x), batch ``[B]``;
    ``z``: ``[S, B, D]`` reparameterised samples; ``prior``: p(z); ``likelihood``:
    p(x|z), batch ``[S, B]``.
    """

    encoder_out: torch.Tensor
    posterior: Distribution
    z: torch.Tensor
    prior: Distribution
    likelihood: Distribution


class QuantizerOutput(NamedTuple):
    """What a quantizer hands back.

    ``z_q``: ``[B, C, *positions]`` quantised vectors with the straight-through gradient
    (forward value = the chosen codes, backward = identity to ``z_e``); ``indices``:
    ``[B, *positions]`` long; ``codebook_loss``: ``||sg[z_e] - e||^2`` summed per example,
    ``[B]`` (zero with an EMA codebook and for FSQ); ``commitment_loss``:
    ``beta ||z_e - sg[e]||^2`` summed per example, ``[B]`` (already weighted by beta);
    ``perplexity``: ``exp(H(mean code usage in the batch))``, in codes (1 to K), detached;
    ``usage``: fraction of the K codes used at least once in the batch, detached.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


@dataclass(frozen=True)
class LossOutput:
    """What every objective returns: ``loss`` (reduced as asked), ``per_example`` terms ``[B]``
    (nats) and detached batch ``metrics`` (including every weight in effect)."""

    loss: torch.Tensor
    per_example: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
