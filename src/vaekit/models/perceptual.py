"""A small feature network for perceptual reconstruction terms on the built-in data.

No pretrained weights can be downloaded here, so vaekit trains its own: a 2-layer MLP
classifier on the training images and their labels; its hidden layer is the feature map
``phi(x)`` of :class:`vaekit.objectives.PerceptualELBO`.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.training.fit import fit

__all__ = ["feature_classifier", "classifier"]


def feature_classifier(x: torch.Tensor, y: torch.Tensor, **options) -> nn.Module:
    """Train ``[flatten, Linear(D, hidden), ReLU, Linear(hidden, C)]`` by cross-entropy (nats) on
    ``(x [N, ...], y [N])`` and return its frozen feature part ``x -> ReLU(W x + b)`` ``[N, hidden]``.

    ``options``: those of :func:`classifier` (``hidden=256, epochs=2, batch_size=100, lr=1e-3,
    seed=0``).
    """
    return classifier(x, y, **options)[0]


def classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    hidden: int = 256,
    epochs: int = 2,
    batch_size: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Sequential:
    """The whole classifier of :func:`feature_classifier`, frozen: ``Sequential(features, head)``,
    ``x [N, ...] -> logits [N, C]``; ``[0]`` is the feature map ``[N, hidden]``.
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
    net = nn.Sequential(features, head)
    fit(
        net,
        lambda xb, yb: nn.functional.cross_entropy(net(xb), yb),  # batch mean, nats
        (x, y),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=g,
        desc="feature classifier",
        device=x.device,
    )
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
