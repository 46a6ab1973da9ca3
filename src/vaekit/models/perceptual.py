"""A small feature network for perceptual reconstruction terms on the built-in data.

No pretrained weights can be downloaded here, so vaekit trains its own: a 2-layer MLP
classifier on the training images and their labels; its hidden layer is the feature map
``phi(x)`` of :class:`vaekit.objectives.PerceptualELBO`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["feature_classifier"]


def feature_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    hidden: int = 256,
    epochs: int = 2,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Train ``[flatten, Linear(D, hidden), ReLU, Linear(hidden, C)]`` by cross-entropy (nats) on
    ``(x [N, ...], y [N])`` and return its frozen feature part ``x -> ReLU(W x + b)`` ``[N, hidden]``.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x and y must hold the same non-zero number of examples; received {x.shape[0]} "
            f"and {y.shape[0]}"
        )
    g = torch.Generator().manual_seed(seed)
    features = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), hidden), nn.ReLU())
    head = nn.Linear(hidden, int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in (features, head):
            m.apply(lambda l: l.reset_parameters() if isinstance(l, nn.Linear) else None)
    opt = torch.optim.Adam([*features.parameters(), *head.parameters()], lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0], batch_size):
                idx = order[i : i + batch_size]
                loss = nn.functional.cross_entropy(head(features(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    features.eval()
    for p in features.parameters():
        p.requires_grad_(False)
    return features
