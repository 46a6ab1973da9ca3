"""Feature networks for perceptual reconstruction terms.

No pretrained weights can be downloaded here, so vaekit trains its own: a 2-layer MLP
classifier on the training images and their labels; its hidden layer is the feature map
``phi(x)`` of :class:`vaekit.objectives.PerceptualELBO`.

For the autoencoder losses (:mod:`vaekit.objectives.adversarial`), :func:`perceptual_network`
gives an LPIPS-form distance ``d(x, y) = sum_l w_l mean_hw ||f^_l(x) - f^_l(y)||^2`` (``f^``: features
unit-normalised over channels; Zhang et al. 2018) over either :class:`RandomConvFeatures`
(no download) or the ``lpips`` package's calibrated network.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.training.fit import fit

__all__ = [
    "feature_classifier",
    "classifier",
    "RandomConvFeatures",
    "LPIPSDistance",
    "perceptual_network",
]


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


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Features divided by their l2 norm over channels (axis 1), as LPIPS' ``normalize_tensor``."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


class RandomConvFeatures(nn.Module):
    """LPIPS-form distance over a fixed random-weight conv net: ``[B, C, H, W]`` pairs -> ``[B]``.

    Three conv layers (3x3 to 32, 4x4 stride 2 to 64, 4x4 stride 2 to 128; ReLU after each)
    with He-normal weights drawn from a generator seeded with ``seed`` and zero biases, kept
    as buffers (never trained, saved with the objective); inputs in [0, 1] are mapped to
    [-1, 1]. ``d(x, y) = (1/3) sum_l mean_hw sum_c (f^_l(x) - f^_l(y))^2`` with
    channel-normalised features and equal layer weights (LPIPS without its learned linear
    heads): dimensionless, in [0, 4], 0 iff the features agree. Why this default: it needs no download and is the same
    on every machine; random conv features respond to local structure (edges, texture)
    that a per-pixel L1 averages away, but they are not calibrated to human judgements as
    LPIPS is, so use ``lpips`` where it is installed.
    """

    def __init__(self, in_channels: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shapes = ((32, in_channels, 3, 1, 1), (64, 32, 4, 2, 1), (128, 64, 4, 2, 1))
        for i, (out, inp, k, _, _) in enumerate(self.shapes):
            w = torch.randn(out, inp, k, k, generator=g) * (2.0 / (inp * k * k)) ** 0.5
            self.register_buffer(f"weight{i}", w)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three ReLU feature maps of ``x`` (in [0, 1])."""
        h, out = 2 * x - 1, []
        for i, (_, _, _, stride, pad) in enumerate(self.shapes):
            w = getattr(self, f"weight{i}").to(h.dtype)
            h = torch.relu(nn.functional.conv2d(h, w, stride=stride, padding=pad))
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for fx, fy in zip(self.features(x), self.features(y), strict=True):
            total = total + (_unit(fx) - _unit(fy)).square().sum(1).flatten(1).mean(1)
        return total / len(self.shapes)


class LPIPSDistance(nn.Module):
    """The ``lpips`` package's distance (Zhang et al. 2018) on images in [0, 1]: ``[B]``.

    Wraps ``lpips.LPIPS(net=net)`` (frozen, eval mode), which needs the package and its
    backbone weights on the machine; inputs are mapped to [-1, 1] as LPIPS expects; a
    1-channel image is repeated to 3 channels.
    """

    def __init__(self, net: str = "vgg", module=None):
        super().__init__()
        if module is None:
            try:
                import lpips  # noqa: PLC0415 - optional dependency
            except ImportError:
                raise ValueError(
                    "perceptual='lpips' needs the lpips package and its backbone weights "
                    "(pip install lpips); received an environment without it. Use "
                    "perceptual='random' (no download) instead"
                ) from None
            module = lpips.LPIPS(net=net, verbose=False)
        self.net = module.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # always frozen
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        return self.net(2 * x - 1, 2 * y - 1).flatten(1).sum(1)


def perceptual_network(name: str, in_channels: int = 3) -> nn.Module:
    """``"random"``: :class:`RandomConvFeatures`; ``"lpips"``: :class:`LPIPSDistance` (VGG)."""
    from vaekit._checks import check_choice

    check_choice("perceptual", name, ("random", "lpips"))
    if name == "random":
        return RandomConvFeatures(in_channels)
    return LPIPSDistance()
