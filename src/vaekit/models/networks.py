"""Encoder and decoder networks: plain ``nn.Module`` s whose sizes come from arguments.

Shape convention shared by every module here: a module is built for one *event* shape
(``in_shape``: the shape of one example, e.g. ``(1, 28, 28)`` or ``(D,)``). Its input is
``[..., *in_shape]``: the trailing ``len(in_shape)`` axes are the example, every axis before
them is a batch axis. Leading axes are flattened into one before the layers run and restored
afterwards, so a decoder takes z of shape ``[B, D]`` or ``[S, B, D]`` alike.

* :class:`MLP`, :class:`GatedDense`, :class:`GatedMLP`: fully connected.
* :class:`ConvEncoder`, :class:`ConvDecoder`: stride-2 convolutions for small images
  (28x28, 64x64, any size >= 2 ** len(channels)).
* :func:`build_networks`: an (encoder, decoder) pair for a VAE, by kind.

A leaf module: it imports only torch and :mod:`vaekit._checks`, so the models and
:mod:`vaekit.flows` can build on it (``tests/test_imports.py`` keeps it a leaf).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vaekit._checks import check_choice

__all__ = [
    "ACTIVATIONS",
    "KINDS",
    "MLP",
    "GatedDense",
    "GatedMLP",
    "ConvEncoder",
    "ConvDecoder",
    "build_networks",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}

Shape = int | Sequence[int]


def _activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def _as_shape(name: str, shape: Shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(
            f"{name} must be a positive int or a tuple of positive ints; received {shape}"
        )
    return shape


def _split_batch(name: str, x: torch.Tensor, event: tuple[int, ...]) -> torch.Size:
    """Check that ``x`` ends with ``event`` and return its leading (batch) axes."""
    n = len(event)
    if x.dim() <= n or tuple(x.shape[-n:]) != event:
        raise ValueError(
            f"{name} expected input of shape [..., {', '.join(map(str, event))}] "
            f"(at least one leading batch axis); received shape {tuple(x.shape)}"
        )
    return x.shape[:-n]


class GatedDense(nn.Module):
    """Gated linear unit for dense layers: ``h = (W1 x + b1) * sigmoid(W2 x + b2)``.

    The sigmoid gate is the only non-linearity (Dauphin et al. 2017, "Language modeling with
    gated convolutional networks"); the VampPrior paper (Tomczak & Welling 2018) builds its
    encoders and decoders from these layers.

    Args:
        in_features: size of the last input axis.
        out_features: size of the last output axis.

    Shapes: ``[..., in_features] -> [..., out_features]``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h = nn.Linear(in_features, out_features)
        self.g = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class _Dense(nn.Module):
    """Shape handling shared by :class:`MLP` and :class:`GatedMLP`; subclasses set ``net``."""

    net: nn.Module

    def __init__(
        self, in_features: Shape, out_features: int, out_shape: Shape | None, flatten_input: bool
    ):
        super().__init__()
        self.in_shape = _as_shape("in_features", in_features)
        self.in_features = math.prod(self.in_shape)
        self.out_features = int(out_features)
        self.out_shape = (
            (self.out_features,) if out_shape is None else _as_shape("out_shape", out_shape)
        )
        if math.prod(self.out_shape) != self.out_features:
            raise ValueError(
                f"out_shape {self.out_shape} holds {math.prod(self.out_shape)} values but "
                f"out_features is {self.out_features}; they must match"
            )
        self.flatten_input = flatten_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if not self.flatten_input:
            # nn.Linear semantics: the last axis is the feature axis, any leading axes.
            lead = _split_batch(name, x, (self.in_features,))
        elif (
            len(self.in_shape) == 1
            and x.dim() > 2
            and x.shape[-1] != self.in_features
            and math.prod(x.shape[1:]) == self.in_features
        ):
            # An int in_features with an image batch [B, C, H, W]: one batch axis.
            lead = x.shape[:1]
        else:
            lead = _split_batch(name, x, self.in_shape)
        y = self.net(x.reshape(-1, self.in_features))
        return y.reshape(*lead, *self.out_shape)


class MLP(_Dense):
    """Fully connected network: Linear -> activation, repeated, then a final Linear.

    Args:
        in_features: features per example (int), or the example's shape, e.g. ``(1, 28, 28)``.
            With a shape, inputs ``[..., *shape]`` take any number of leading axes. With an int,
            inputs are ``[..., in_features]`` or, for convenience, ``[B, *any]`` with
            ``in_features`` values per example (one leading axis).
        out_features: size of the output.
        hidden: widths of the hidden layers (``()`` gives a single Linear).
        activation: one of :data:`ACTIVATIONS` (``"relu"``, ``"tanh"``, ...).
        flatten_input: flatten each example before the first layer. With ``False`` the module
            acts on the last axis only, like ``nn.Linear``.
        out_shape: reshape each output to this shape (its size must equal ``out_features``).

    Shapes: ``[..., *in_shape] -> [..., out_features]`` or ``[..., *out_shape]``.
    The last layer has no activation: outputs are logits / unconstrained parameters.
    """

    def __init__(
        self,
        in_features: Shape,
        out_features: int,
        hidden: Sequence[int] = (300, 300),
        *,
        activation: str = "relu",
        flatten_input: bool = True,
        out_shape: Shape | None = None,
    ):
        super().__init__(in_features, out_features, out_shape, flatten_input)
        widths = [self.in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), _activation(activation)]
        layers.append(nn.Linear(widths[-1], self.out_features))
        self.net = nn.Sequential(*layers)


class GatedMLP(_Dense):
    """A stack of :class:`GatedDense` layers followed by a final ``nn.Linear``.

    The VampPrior architecture (Tomczak & Welling 2018): with ``hidden=(300, 300)`` this is
    their encoder/decoder body for one stochastic layer.

    Args:
        in_features, out_features, out_shape: as for :class:`MLP` (inputs are flattened).
        hidden: widths of the gated layers.

    Shapes: ``[..., *in_shape] -> [..., out_features]`` or ``[..., *out_shape]``.
    """

    def __init__(
        self,
        in_features: Shape,
        out_features: int,
        hidden: Sequence[int] = (300, 300),
        *,
        out_shape: Shape | None = None,
    ):
        super().__init__(in_features, out_features, out_shape, flatten_input=True)
        widths = [self.in_features, *hidden]
        layers: list[nn.Module] = [
            GatedDense(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
        layers.append(nn.Linear(widths[-1], self.out_features))
        self.net = nn.Sequential(*layers)


# Every conv halves the spatial size: kernel 4, stride 2, padding 1 maps n -> floor(n / 2).
_KERNEL, _STRIDE, _PAD = 4, 2, 1


def _default_channels(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    # 64x64: the 4-layer 32-32-64-64 stack of the beta-VAE papers (Higgins et al. 2017,
    # Burgess et al. 2018); smaller images (28x28) get two layers, 28 -> 14 -> 7.
    return (32, 32, 64, 64) if min(image_shape[1:]) >= 64 else (32, 64)


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = _as_shape("image_shape", shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W); received {shape}")
    return shape


def _spatial_sizes(image_shape: tuple[int, ...], n_layers: int) -> list[tuple[int, int]]:
    """(H, W) before the first conv and after each of ``n_layers`` halving convs."""
    sizes = [tuple(image_shape[1:])]
    for _ in range(n_layers):
        h, w = sizes[-1]
        if min(h, w) < 2:
            raise ValueError(
                f"image_shape {image_shape} is too small for {n_layers} stride-2 convolutions; "
                f"use fewer channels entries (at most log2(min(H, W)))"
            )
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """Stride-2 convolutions, then a small MLP head: ``[..., C, H, W] -> [..., out_features]``.

    Each conv (kernel 4, stride 2, padding 1, then the activation) halves H and W (rounding
    down), e.g. 28 -> 14 -> 7 or 64 -> 32 -> 16 -> 8 -> 4.

    Args:
        image_shape: ``(C, H, W)`` of one example.
        out_features: size of the output (``2 * latent_dim`` for a diagonal Gaussian posterior).
        channels: output channels of each conv; default ``(32, 64)`` below 64 pixels,
            ``(32, 32, 64, 64)`` from 64 pixels.
        hidden: widths of the dense layers between the flattened features and the output.
        activation: one of :data:`ACTIVATIONS`.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        out_features: int = 64,
        channels: Sequence[int] | None = None,
        hidden: Sequence[int] = (256,),
        *,
        activation: str = "relu",
    ):
        super().__init__()
        self.image_shape = _image_shape(image_shape)
        channels = tuple(channels) if channels is not None else _default_channels(self.image_shape)
        h, w = _spatial_sizes(self.image_shape, len(channels))[-1]
        layers: list[nn.Module] = []
        for a, b in zip((self.image_shape[0], *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(a, b, _KERNEL, _STRIDE, _PAD), _activation(activation)]
        self.convs = nn.Sequential(*layers)
        self.head = MLP(channels[-1] * h * w, out_features, hidden, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = _split_batch("ConvEncoder", x, self.image_shape)
        y = self.convs(x.reshape(-1, *self.image_shape))
        return self.head(y.flatten(1)).reshape(*lead, -1)


def _deconv_stack(
    channels: Sequence[int], sizes: list, out_channels: int, activation: str
) -> list[nn.Module]:
    """Transposed convs undoing an encoder's stride-2 convs in reverse (activations between).

    ``sizes[i]`` is the input size of the i-th encoder conv; output padding restores odd
    sizes exactly (28 -> 14 -> 7 -> 14 -> 28).
    """
    layers: list[nn.Module] = []
    ins = tuple(channels)[::-1]
    outs = (*ins[1:], out_channels)
    for i, (a, b) in enumerate(zip(ins, outs, strict=True)):
        (h, w), (h_small, w_small) = sizes[-2 - i], sizes[-1 - i]
        pad = (h - 2 * h_small, w - 2 * w_small)
        layers.append(nn.ConvTranspose2d(a, b, _KERNEL, _STRIDE, _PAD, output_padding=pad))
        if i < len(ins) - 1:
            layers.append(_activation(activation))
    return layers


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: ``[..., latent_dim] -> [..., out_channels, H, W]``
    (or ``[..., *out_shape]``).

    A dense layer maps z to the encoder's smallest feature map; each transposed conv
    (kernel 4, stride 2, padding 1) doubles H and W, with ``output_padding=1`` wherever the
    encoder rounded an odd size down, so the output is exactly ``H x W`` (7 -> 14 -> 28).
    The last layer has no activation: outputs are logits / unconstrained parameters.

    Args:
        latent_dim: size of z.
        image_shape: ``(C, H, W)`` of the data.
        out_channels: parameters per pixel (default ``C``; e.g. ``2 * C`` for a mean and a
            log-scale per pixel).
        channels: the *encoder's* conv channels (same default); the decoder runs them reversed.
        hidden: widths of the dense layers between z and the first feature map.
        activation: one of :data:`ACTIVATIONS`.
        out_shape: optional shape of each output holding the two spatial axes ``(H, W)``
            side by side, e.g. ``(2, 1, 28, 28)`` or ``(1, 28, 28, 256)``. The other axes
            are produced as channels (their product is ``out_channels``) and moved into place.
    """

    def __init__(
        self,
        latent_dim: int,
        image_shape: Sequence[int] = (1, 28, 28),
        out_channels: int | None = None,
        channels: Sequence[int] | None = None,
        hidden: Sequence[int] = (256,),
        *,
        activation: str = "relu",
        out_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.image_shape = _image_shape(image_shape)
        hw = self.image_shape[1:]
        if out_shape is None:
            out_shape = (out_channels if out_channels is not None else self.image_shape[0], *hw)
        self.out_shape = _as_shape("out_shape", out_shape)
        self._spatial_at = self._find_spatial(self.out_shape, hw)
        self.out_channels = math.prod(self.out_shape) // math.prod(hw)
        if out_channels is not None and out_channels != self.out_channels:
            raise ValueError(
                f"out_channels {out_channels} disagrees with out_shape {self.out_shape} "
                f"({self.out_channels} values per pixel); pass one of them"
            )

        channels = tuple(channels) if channels is not None else _default_channels(self.image_shape)
        sizes = _spatial_sizes(self.image_shape, len(channels))
        self.start = (channels[-1], *sizes[-1])
        self.head = MLP(self.latent_dim, math.prod(self.start), hidden, activation=activation)
        self.head_act = _activation(activation)
        self.deconvs = nn.Sequential(*_deconv_stack(channels, sizes, self.out_channels, activation))

    @staticmethod
    def _find_spatial(out_shape: tuple[int, ...], hw: tuple[int, ...]) -> int:
        """Index of the (H, W) pair in ``out_shape`` (the last one, if it occurs twice)."""
        starts = [i for i in range(len(out_shape) - 1) if out_shape[i : i + 2] == hw]
        if not starts:
            raise ValueError(
                f"out_shape must hold the image's spatial size {hw} as two adjacent axes; "
                f"received {out_shape}"
            )
        return starts[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = _split_batch("ConvDecoder", z, (self.latent_dim,))
        y = self.head_act(self.head(z.reshape(-1, self.latent_dim)))
        y = self.deconvs(y.reshape(-1, *self.start))  # [N, out_channels, H, W]
        return self._to_out_shape(y).reshape(*lead, *self.out_shape)

    def _to_out_shape(self, y: torch.Tensor) -> torch.Tensor:
        # The channel axis unpacks as [*before, *after]; (H, W) moves to sit between them.
        # For the default out_shape (C', H, W) this is the identity.
        i = self._spatial_at
        before, after = self.out_shape[:i], self.out_shape[i + 2 :]
        y = y.reshape(y.shape[0], *before, *after, *y.shape[-2:])
        nb, na = len(before), len(after)
        perm = [0, *range(1, 1 + nb), 1 + nb + na, 2 + nb + na, *range(1 + nb, 1 + nb + na)]
        return y.permute(perm)


KINDS = ("mlp", "gated", "conv")
_DEFAULT_HIDDEN = {"mlp": (300, 300), "gated": (300, 300), "conv": (256,)}


def build_networks(
    kind: str,
    input_shape: Sequence[int],
    latent_dim: int,
    *,
    hidden: Sequence[int] | None = None,
    decoder_out_shape: Sequence[int] | None = None,
    activation: str | None = None,
    channels: Sequence[int] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """An (encoder, decoder) pair for a VAE with a diagonal Gaussian posterior.

    * encoder: ``[..., *input_shape] -> [..., 2 * latent_dim]``, the posterior mean in the
      first half of the last axis and the log-variance in the second. ``input_shape`` is the
      shape of one example, so it fixes how many trailing axes form the example; any number
      of leading axes are batch axes.
    * decoder: ``[..., latent_dim] -> [..., *decoder_out_shape]``, e.g. z ``[S, B, D]`` gives
      ``[S, B, *decoder_out_shape]``.

    Args:
        kind: ``"mlp"`` (:class:`MLP`), ``"gated"`` (:class:`GatedMLP`, the VampPrior
            architecture) or ``"conv"`` (:class:`ConvEncoder` / :class:`ConvDecoder`, needs
            ``input_shape = (C, H, W)``).
        input_shape: shape of one data example, e.g. ``(1, 28, 28)`` or ``(784,)``.
        latent_dim: size of z.
        hidden: dense widths; default ``(300, 300)`` for mlp / gated, ``(256,)`` for conv's
            dense head. The decoder uses them reversed (a mirror of the encoder).
        decoder_out_shape: decoder output per example, usually
            ``likelihood.param_shape(input_shape)``; default ``input_shape``. For conv it must
            hold the image's ``(H, W)`` as two adjacent axes.
        activation: one of :data:`ACTIVATIONS` for mlp / conv (default ``"relu"``); gated
            layers have their own gate as non-linearity, so it must stay ``None`` there.
        channels: conv channels (conv only; see :class:`ConvEncoder`).

    Example:
        >>> enc, dec = build_networks("gated", (1, 28, 28), 40)
        >>> enc(torch.zeros(5, 1, 28, 28)).shape, dec(torch.zeros(3, 5, 40)).shape
        (torch.Size([5, 80]), torch.Size([3, 5, 1, 28, 28]))
    """
    check_choice("kind", kind, KINDS)
    input_shape = _as_shape("input_shape", input_shape)
    out_shape = (
        input_shape
        if decoder_out_shape is None
        else _as_shape("decoder_out_shape", decoder_out_shape)
    )
    hidden = tuple(hidden) if hidden is not None else _DEFAULT_HIDDEN[kind]
    if channels is not None and kind != "conv":
        raise ValueError(f"channels applies to kind='conv' only; received kind={kind!r}")

    if kind == "gated":
        if activation is not None:
            raise ValueError(
                f"kind='gated' uses its sigmoid gate as the non-linearity; received "
                f"activation={activation!r}: leave it None, or use kind='mlp'"
            )
        encoder = GatedMLP(input_shape, 2 * latent_dim, hidden)
        decoder = GatedMLP(latent_dim, math.prod(out_shape), hidden[::-1], out_shape=out_shape)
        return encoder, decoder

    activation = activation or "relu"
    if kind == "mlp":
        encoder = MLP(input_shape, 2 * latent_dim, hidden, activation=activation)
        decoder = MLP(
            latent_dim,
            math.prod(out_shape),
            hidden[::-1],
            activation=activation,
            out_shape=out_shape,
        )
        return encoder, decoder

    encoder = ConvEncoder(input_shape, 2 * latent_dim, channels, hidden, activation=activation)
    decoder = ConvDecoder(
        latent_dim,
        input_shape,
        None,
        channels,
        hidden[::-1],
        activation=activation,
        out_shape=out_shape,
    )
    return encoder, decoder
