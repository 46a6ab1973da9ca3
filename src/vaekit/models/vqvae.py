"""VQ-VAE: an encoder to a spatial map, a quantizer, a decoder, a likelihood; and a code prior.

The model (van den Oord et al. 2017, "Neural discrete representation learning") is trained on

    loss = -log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2      (per example, [B])

where the two squared distances come from the quantizer (summed over latent positions and code
dimensions; see :mod:`vaekit.quantizers`). With a uniform prior over K codes at each of N latent
positions and the deterministic one-hot posterior, ``KL(q(z|x) || p(z)) = N log K`` nats, so the
ELBO that training implicitly uses is ``log p(x|z_q) - N log K`` (:class:`VQObjective` reports it
as ``bound``). A learned autoregressive :class:`CodePrior` over the code grid replaces the uniform
prior for sampling and for the tighter bound ``log p(x) >= log p(x|z_q) + log p_prior(k(x))``
(:func:`bits_per_dim`).

Shapes: images ``[B, C, H, W]`` as the likelihood expects them; ``z_e`` and ``z_q``
``[B, code_dim, h, w]`` (channels first); code indices ``[B, h, w]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit._checks import check_choice
from vaekit.likelihoods import Bernoulli, Likelihood
from vaekit.models.networks import _activation, _deconv_stack, _image_shape, _spatial_sizes
from vaekit.objectives.stateful import VQObjective  # re-exported: vaekit.models.vqvae.VQObjective
from vaekit.quantizers import (
    FSQ,
    FSQ_LEVELS,
    LFQ,
    QuantizerOutput,
    ResidualVQ,
    VectorQuantizer,
    _check_indices,
)
from vaekit.training.fit import fit

__all__ = [
    "VQVAE",
    "VQVAEOutput",
    "VQObjective",
    "VQEncoder",
    "VQDecoder",
    "CodePrior",
    "QUANTIZERS",
    "build_vqvae",
    "fit_code_prior",
    "encode_dataset",
    "bits_per_dim",
]

# kernel 4, stride 2, padding 1 halves the spatial size (as in vaekit.models.networks)
_KERNEL, _STRIDE, _PAD = 4, 2, 1


class VQVAEOutput(NamedTuple):
    """One pass: ``z_e`` ``[B, C, h, w]`` encoder output, ``quantized`` the
    :class:`~vaekit.quantizers.QuantizerOutput` (``z_q`` with the straight-through gradient,
    indices ``[B, h, w]``, the two losses ``[B]``, perplexity, usage) and ``likelihood``
    p(x | z_q) with batch ``[B]``."""

    z_e: torch.Tensor
    quantized: QuantizerOutput
    likelihood: Distribution


class VQVAE(nn.Module):
    """``x -> z_e = enc(x) -> z_q = quantize(z_e) -> p(x | z_q) = likelihood(dec(z_q))``.

    Args:
        encoder: ``[B, *x_shape] -> [B, code_dim, h, w]`` (any ``[B, code_dim, *positions]``).
        decoder: ``[B, code_dim, h, w] -> [B, *likelihood.param_shape(x_shape)]``.
        quantizer: :class:`~vaekit.quantizers.VectorQuantizer` or :class:`~vaekit.quantizers.FSQ`
            (anything with ``num_codes``, ``indices_to_codes`` and returning a ``QuantizerOutput``).
        likelihood: decoder output -> p(x | z_q) (default :class:`~vaekit.likelihoods.Bernoulli`).
        prior: optional :class:`CodePrior` over the code grid, for :meth:`sample` and
            :func:`bits_per_dim`; attach one later with ``model.prior = prior``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        quantizer: nn.Module,
        likelihood: nn.Module | None = None,
        *,
        prior: CodePrior | None = None,
    ):
        super().__init__()
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self.prior = prior

    @property
    def num_codes(self) -> int:
        """K, the codebook size."""
        return self.quantizer.num_codes

    def decode_codes(self, z_q: torch.Tensor) -> Distribution:
        """p(x | z_q) for ``z_q`` ``[B, code_dim, h, w]``: batch ``[B]``."""
        params = self.decoder(z_q)
        return self.likelihood(params, event_ndim=params.dim() - 1)

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """Encode, quantise, decode ``x`` ``[B, *x_shape]`` (quantizer state updates when training)."""
        z_e = self.encoder(x)
        q = self.quantizer(z_e)
        return VQVAEOutput(z_e, q, self.decode_codes(q.z_q))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices ``k(x) = argmin_k ||z_e(x) - e_k||``: ``[B, h, w]`` long (no state update)."""
        return self.quantizer(self.encoder(x)).indices

    def decode_indices(self, indices: torch.Tensor) -> Distribution:
        """p(x | z_q = e_indices) for indices ``[B, h, w]``: batch ``[B]``."""
        return self.decode_codes(self.quantizer.indices_to_codes(indices))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """E[x | z_q(x)] (or a draw with ``mean=False``): ``[B, *x_shape]``."""
        px = self.decode_indices(self.encode(x))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, temperature: float = 1.0) -> torch.Tensor:
        """n draws x ~ p(x | z_q), codes ~ the attached :class:`CodePrior`: ``[n, *x_shape]``."""
        if self.prior is None:
            raise ValueError(
                "VQVAE.sample needs a prior over codes; received prior=None. Fit one with "
                "fit_code_prior(CodePrior(model.num_codes, grid_shape), encode_dataset(model, x)) "
                "and attach it: model.prior = prior"
            )
        px = self.decode_indices(self.prior.sample(n, temperature=temperature))
        return px.mean if mean else px.sample()


# ---------------------------------------------------------------------------- networks


class _Residual(nn.Module):
    """``h + conv1x1(act(conv3x3(act(h))))`` (the VQ-VAE paper's residual block)."""

    def __init__(self, channels: int, hidden: int, activation: str):
        super().__init__()
        self.net = nn.Sequential(
            _activation(activation),
            nn.Conv2d(channels, hidden, 3, padding=1),
            _activation(activation),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


def _default_channels(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    # 28x28 -> 7x7 (49 codes), 64x64 -> 8x8 (64 codes): small grids keep the code prior cheap
    return (32, 64, 64) if min(image_shape[1:]) >= 64 else (32, 64)


def _check_4d(name: str, t: torch.Tensor, channels: int) -> None:
    if t.dim() != 4 or t.shape[1] != channels:
        raise ValueError(
            f"{name} expected input of shape [B, {channels}, H, W]; received {tuple(t.shape)}"
        )


class VQEncoder(nn.Module):
    """Images to a code map: ``[B, C, H, W] -> [B, code_dim, H / 2^L, W / 2^L]`` (sizes round down).

    L stride-2 convolutions (kernel 4, padding 1, each followed by the activation), a 3x3
    conv, ``res_blocks`` residual blocks, the activation and a 1x1 conv to ``code_dim``
    (van den Oord et al. 2017, section 4.1). 28x28 -> 7x7 and 64x64 -> 8x8 by default.

    Args:
        image_shape: ``(C, H, W)`` of one example.
        code_dim: channels of the output (the code size).
        channels: output channels of each stride-2 conv (default ``(32, 64)`` below 64
            pixels, ``(32, 64, 64)`` from 64 pixels).
        res_blocks: residual blocks after the downsampling.
        activation: one of :data:`vaekit.models.networks.ACTIVATIONS`.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 64,
        channels: Sequence[int] | None = None,
        res_blocks: int = 2,
        *,
        activation: str = "relu",
    ):
        super().__init__()
        self.image_shape = _image_shape(image_shape)
        channels = tuple(channels) if channels is not None else _default_channels(self.image_shape)
        self.latent_shape = (code_dim, *_spatial_sizes(self.image_shape, len(channels))[-1])
        layers: list[nn.Module] = []
        for a, b in zip((self.image_shape[0], *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(a, b, _KERNEL, _STRIDE, _PAD), _activation(activation)]
        c = channels[-1]
        layers.append(nn.Conv2d(c, c, 3, padding=1))
        layers += [_Residual(c, c // 2 or 1, activation) for _ in range(res_blocks)]
        layers += [_activation(activation), nn.Conv2d(c, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"VQEncoder expected input of shape [B, {', '.join(map(str, self.image_shape))}]; "
                f"received {tuple(x.shape)}"
            )
        return self.net(x)


class VQDecoder(nn.Module):
    """Mirror of :class:`VQEncoder`: ``[B, code_dim, h, w] -> [B, out_channels, H, W]``.

    A 3x3 conv, residual blocks, then transposed convs (kernel 4, stride 2, padding 1,
    ``output_padding=1`` where the encoder rounded an odd size down) back to exactly H x W.
    The last layer has no activation: outputs are likelihood parameters.

    Args:
        image_shape: ``(C, H, W)`` of the data.
        code_dim: channels of the code map.
        out_channels: parameters per pixel, usually ``likelihood.param_shape(image_shape)[0]``
            (default C).
        channels: the *encoder's* conv channels (same default); run reversed.
        res_blocks, activation: as for :class:`VQEncoder`.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        code_dim: int = 64,
        out_channels: int | None = None,
        channels: Sequence[int] | None = None,
        res_blocks: int = 2,
        *,
        activation: str = "relu",
    ):
        super().__init__()
        self.image_shape = _image_shape(image_shape)
        self.code_dim = int(code_dim)
        self.out_channels = int(out_channels) if out_channels is not None else self.image_shape[0]
        channels = tuple(channels) if channels is not None else _default_channels(self.image_shape)
        sizes = _spatial_sizes(self.image_shape, len(channels))
        c = channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(self.code_dim, c, 3, padding=1)]
        layers += [_Residual(c, c // 2 or 1, activation) for _ in range(res_blocks)]
        layers.append(_activation(activation))
        layers += _deconv_stack(channels, sizes, self.out_channels, activation)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_4d("VQDecoder", z, self.code_dim)
        return self.net(z)


QUANTIZERS = ("vq", "ema", "fsq", "residual", "lfq")


def build_vqvae(
    image_shape: Sequence[int],
    likelihood: Likelihood | None = None,
    *,
    quantizer: str = "vq",
    code_dim: int | None = None,
    num_codes: int | None = None,
    beta: float = 0.25,
    levels: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    res_blocks: int = 2,
    num_quantizers: int = 2,
    **quantizer_kwargs,
) -> VQVAE:
    """A conv VQ-VAE for images of ``image_shape`` ``(C, H, W)``: 28x28 -> 7x7 codes, 64x64 -> 8x8.

    Args:
        image_shape: ``(C, H, W)`` of one example.
        likelihood: p(x | z_q) (default Bernoulli); the decoder outputs
            ``likelihood.param_shape(image_shape)``.
        quantizer: ``"vq"`` (codebook trained by the codebook loss), ``"ema"`` (EMA codebook),
            ``"fsq"`` (finite scalar quantisation), ``"residual"`` (``num_quantizers`` EMA
            codebooks in sequence, :class:`~vaekit.quantizers.ResidualVQ`) or ``"lfq"``
            (lookup-free, :class:`~vaekit.quantizers.LFQ`: ``num_codes`` a power of 2, default
            1024, ``code_dim = log2(num_codes)``).
        code_dim: code size (vq / ema, default 64); for fsq it is ``len(levels)`` and may be
            omitted.
        num_codes: codebook size K (vq / ema, default 512); for fsq without ``levels`` it
            picks the paper's levels from :data:`~vaekit.quantizers.FSQ_LEVELS` (one of its keys).
        beta: commitment weight (vq / ema).
        levels: FSQ levels (fsq only; default ``FSQ_LEVELS[num_codes or 1024]``).
        channels, res_blocks: conv layout (see :class:`VQEncoder`).
        **quantizer_kwargs: passed to :class:`~vaekit.quantizers.VectorQuantizer`
            (``decay``, ``eps``, ``restart_after``, ``cosine``, ``chunk_size``).
    """
    check_choice("quantizer", quantizer, QUANTIZERS)
    image_shape = _image_shape(image_shape)
    likelihood = likelihood if likelihood is not None else Bernoulli()
    q: nn.Module
    if quantizer == "fsq":
        if quantizer_kwargs:
            raise ValueError(
                f"quantizer='fsq' takes no VectorQuantizer options; received "
                f"{sorted(quantizer_kwargs)}"
            )
        if levels is None:
            key = num_codes if num_codes is not None else 2**10
            if key not in FSQ_LEVELS:
                raise ValueError(
                    f"num_codes for quantizer='fsq' must be one of {sorted(FSQ_LEVELS)} (or pass "
                    f"levels=...); received {num_codes}"
                )
            levels = FSQ_LEVELS[key]
        q = FSQ(levels)
        if code_dim is not None and code_dim != q.code_dim:
            raise ValueError(
                f"code_dim for quantizer='fsq' is len(levels) = {q.code_dim}; received {code_dim}"
            )
        code_dim = q.code_dim
    else:
        if levels is not None:
            raise ValueError(
                f"levels applies to quantizer='fsq' only; received quantizer={quantizer!r}"
            )
        q, code_dim = _codebook_quantizer(
            quantizer, num_codes, code_dim, beta, num_quantizers, quantizer_kwargs
        )
    out_channels = likelihood.param_shape(image_shape)[0]
    return _assemble(image_shape, likelihood, q, code_dim, out_channels, channels, res_blocks)


def _assemble(image_shape, likelihood, q, code_dim, out_channels, channels, res_blocks) -> VQVAE:
    encoder = VQEncoder(image_shape, code_dim, channels, res_blocks)
    decoder = VQDecoder(image_shape, code_dim, out_channels, channels, res_blocks)
    return VQVAE(encoder, decoder, q, likelihood)


def _codebook_quantizer(quantizer, num_codes, code_dim, beta, num_quantizers, kwargs):
    """The vq / ema / residual / lfq quantizer of :func:`build_vqvae` and its code size."""
    if quantizer == "lfq":
        k = 1024 if num_codes is None else num_codes
        bits = int(k).bit_length() - 1
        if k < 2 or 2**bits != k:
            raise ValueError(
                f"num_codes for quantizer='lfq' must be a power of 2 >= 2; received {k}"
            )
        if code_dim is not None and code_dim != bits:
            raise ValueError(
                f"code_dim for quantizer='lfq' is log2(num_codes) = {bits}; received {code_dim}"
            )
        if kwargs:
            raise ValueError(
                f"quantizer='lfq' takes no VectorQuantizer options; received {sorted(kwargs)}"
            )
        return LFQ(bits, beta=beta), bits
    code_dim = 64 if code_dim is None else code_dim
    k = 512 if num_codes is None else num_codes
    if quantizer == "residual":
        return ResidualVQ(num_quantizers, k, code_dim, beta=beta, ema=True, **kwargs), code_dim
    return VectorQuantizer(k, code_dim, beta=beta, ema=quantizer == "ema", **kwargs), code_dim


# ---------------------------------------------------------------------------- code prior


class CodePrior(nn.Module):
    """Autoregressive prior over a code grid: ``log p(k) = sum_t log p(k_t | k_<t)``, nats ``[B]``.

    A small causal transformer over the grid in raster order (row by row): the input at
    position t is the embedding of ``k_{t-1}`` (a learned start vector at t = 0) plus a learned
    position embedding; a causal mask keeps position t from seeing ``k_>=t``. It plays the role
    of the PixelCNN prior of van den Oord et al. (2017) without its blind spot.

    Args:
        num_codes: K.
        shape: the code grid of one example, e.g. ``(7, 7)`` (what ``VQVAE.encode`` returns
            per example).
        dim, depth, heads: transformer width, layers and attention heads.
        dropout: dropout inside the transformer layers.
    """

    def __init__(
        self,
        num_codes: int,
        shape: Sequence[int],
        *,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"shape must be a tuple of positive ints; received {shape}")
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1; received {num_codes}")
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads; received dim={dim}, heads={heads}")
        self.num_codes, self.shape = int(num_codes), shape
        self.length = math.prod(shape)
        self.embed = nn.Embedding(num_codes, dim)
        self.start = nn.Parameter(torch.zeros(dim))
        self.position = nn.Parameter(0.02 * torch.randn(self.length, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)
        mask = torch.triu(torch.full((self.length, self.length), float("-inf")), diagonal=1)
        self.register_buffer("_mask", mask, persistent=False)

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, shape={self.shape}"

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Next-code logits ``[B, T, K]`` for indices ``[B, *shape]``: row t predicts ``k_t`` from ``k_<t``."""
        flat = indices.reshape(indices.shape[0], self.length)
        tokens = self.embed(flat[:, :-1])
        start = self.start.expand(flat.shape[0], 1, -1)
        h = torch.cat([start, tokens], 1) + self.position
        h = self.blocks(h, mask=self._mask, is_causal=True)
        return self.head(self.norm(h))

    def log_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """``log p(k) = sum_t log softmax(logits_t)[k_t]`` for indices ``[B, *shape]``: nats ``[B]``."""
        if indices.dim() != len(self.shape) + 1 or tuple(indices.shape[1:]) != self.shape:
            raise ValueError(
                f"indices must have shape [B, {', '.join(map(str, self.shape))}]; received "
                f"{tuple(indices.shape)}"
            )
        _check_indices(indices, self.num_codes)
        flat = indices.reshape(indices.shape[0], self.length).long()
        logp = torch.log_softmax(self.logits(flat), -1)
        return logp.gather(-1, flat.unsqueeze(-1)).squeeze(-1).sum(1)

    @torch.no_grad()
    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n code grids ``k ~ p(k)`` in raster order: ``[n, *shape]`` long (logits / temperature)."""
        if n < 1:
            raise ValueError(f"n must be >= 1; received {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; received {temperature}")
        device = self.position.device
        out = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for t in range(self.length):
            # causal: the logits at t do not depend on the (still zero) codes at >= t
            probs = torch.softmax(self.logits(out)[:, t] / temperature, -1)
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return out.reshape(n, *self.shape)


def fit_code_prior(
    prior: CodePrior,
    indices: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Fit ``prior`` by maximum likelihood on codes ``[N, *shape]`` of a frozen encoder (Adam).

    Minimises ``-mean_n log p(k_n)``; returns the mean NLL per example (nats) of each epoch.
    The prior's train/eval mode is restored afterwards. ``progress``: a bar over the steps.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; received {epochs}, {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0; received {lr}")
    _check_indices(indices, prior.num_codes)
    return fit(
        prior,
        lambda batch: -prior.log_prob(batch),  # [B] nats
        indices,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=generator,
        progress=progress,
        desc="code prior",
        device=prior.position.device,
    )


@torch.no_grad()
def encode_dataset(model: VQVAE, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Code indices of every example of ``x`` ``[N, *x_shape]``: ``[N, h, w]`` long, on the CPU."""
    device = next(model.parameters()).device
    return torch.cat(
        [model.encode(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


@torch.no_grad()
def bits_per_dim(model: VQVAE, prior: CodePrior | None, x: torch.Tensor) -> torch.Tensor:
    """Upper bound on ``-log2 p(x) / D``: ``(-log p_prior(k(x)) - log p(x | z_q(x))) / (D ln 2)``, ``[B]``.

    Valid because ``p(x) = sum_k p(k) p(x|k) >= p(k(x)) p(x|k(x))``. D is the number of values
    per example (``x[0].numel()``); ``prior`` defaults to ``model.prior``.
    """
    prior = prior if prior is not None else model.prior
    if prior is None:
        raise ValueError(
            "bits_per_dim needs a CodePrior; received prior=None and model.prior is None"
        )
    indices = model.encode(x)
    log_px = model.decode_indices(indices).log_prob(x)
    return (-prior.log_prob(indices) - log_px) / (x[0].numel() * math.log(2))
