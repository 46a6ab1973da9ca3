"""Discrete bottlenecks: vector quantisation (VQ-VAE) and finite scalar quantisation (FSQ).

Shape convention (channels first, like ``nn.Conv2d``): the code dimension is **axis 1**.
A quantizer takes ``z_e`` of shape ``[B, C, *positions]`` (``[B, C]``, ``[B, C, L]`` or
``[B, C, H, W]``) and returns ``z_q`` of the same shape and ``indices`` ``[B, *positions]``
(``torch.long``). Data laid out as ``[B, N, C]`` goes in as ``z.movedim(-1, 1)``.

Units: the auxiliary losses are per-example squared Euclidean distances **summed** over all
latent positions and code dimensions, shape ``[B]`` (like every log-density in vaekit, which
is summed over its event). Nothing is averaged over the batch here.

* :class:`VectorQuantizer`: nearest-code lookup with a straight-through gradient, codebook
  and commitment losses (van den Oord et al. 2017), optional EMA codebook (Razavi et al. 2019),
  dead-code restarts, cosine codes. Memory-bounded for large codebooks.
  Options: the rotation trick instead of straight-through (Fifty et al. 2024), k-means
  initialisation of the codebook from the first training batch.
* :class:`ResidualVQ`: several codebooks in sequence, each quantising the residual of the
  previous ones (Zeghidour et al. 2021, SoundStream).
* :class:`LFQ`: lookup-free quantisation (Yu et al. 2023, MAGVIT-v2): the sign of each channel,
  with the entropy penalty that spreads code use.
* :class:`FSQ`: finite scalar quantisation (Mentzer et al. 2023): no codebook, no losses.
* :func:`nearest_codes`: the chunked lookup itself; :func:`kmeans`, :func:`rotate_to`.

Both quantizers return a :class:`QuantizerOutput` and update their state (EMA, restart
counters) only in training mode with gradients enabled, so evaluation under
``torch.no_grad()`` or ``model.eval()`` never changes the codebook. All state lives in
registered buffers: ``state_dict()`` round-trips through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vaekit._checks import (
    check_count,
    check_finite,
    check_positive,
    full_precision,
    validation_enabled,
)
from vaekit._distributed import all_reduce_, broadcast_
from vaekit.outputs import QuantizerOutput

__all__ = [
    "QuantizerOutput",
    "VectorQuantizer",
    "ResidualVQ",
    "LFQ",
    "FSQ",
    "FSQ_LEVELS",
    "nearest_codes",
    "code_statistics",
    "kmeans",
    "rotate_to",
    "MAX_BLOCK",
]

#: Largest distance block ``[rows, K]`` (in elements) that :func:`nearest_codes` builds at
#: once by default: 2**22 float32 values = 16 MiB, whatever N and K are.
MAX_BLOCK = 2**22

#: Levels recommended by Mentzer et al. (2023, Table 1) for a target codebook size
#: (their products are close to, not equal to, the target).
FSQ_LEVELS: dict[int, tuple[int, ...]] = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}


def _flatten(name: str, z: torch.Tensor, code_dim: int) -> torch.Tensor:
    """``[B, C, *positions] -> [B * prod(positions), C]`` after checking axis 1 is ``code_dim``."""
    if z.dim() < 2 or z.shape[1] != code_dim:
        raise ValueError(
            f"{name} must have shape [B, {code_dim}, *positions] (code dimension on axis 1, "
            f"channels first); received shape {tuple(z.shape)}"
        )
    if not z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; received dtype {z.dtype}")
    return z.movedim(1, -1).reshape(-1, code_dim)


def _unflatten(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_flatten`: ``[N, C] -> like.shape``."""
    b, c, *pos = like.shape
    return flat.reshape(b, *pos, c).movedim(-1, 1)


def _per_example(sq: torch.Tensor, batch: int) -> torch.Tensor:
    """Sum squared errors ``[N, C]`` (N = B * positions) to ``[B]``."""
    return sq.reshape(batch, -1).sum(1)


def _scores(z: torch.Tensor, codebook: torch.Tensor, code_sq: torch.Tensor) -> torch.Tensor:
    """``||e_k||^2 - 2 z . e_k`` for a block of rows: ``[n, C], [K, C] -> [n, K]``.

    The squared distance minus the row constant ``||z||^2`` (argmin is unchanged). A separate
    function so tests can watch the block sizes.
    """
    return torch.addmm(code_sq, z, codebook.t(), beta=1.0, alpha=-2.0)


def nearest_codes(
    z: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """``argmin_k ||z_n - e_k||^2`` for every row of ``z`` ``[N, C]``: indices ``[N]`` (long).

    The ``[N, K]`` distance matrix is never built: rows go through in blocks of ``chunk_size``
    (default ``max(1, MAX_BLOCK // K)``), so peak extra memory is ``chunk_size * K`` values,
    e.g. 64 rows x 65,536 codes = 16 MiB. No gradient flows through the lookup.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"z must be [N, C] and codebook [K, C] with the same C; received z "
            f"{tuple(z.shape)} and codebook {tuple(codebook.shape)}"
        )
    k = codebook.shape[0]
    if chunk_size is None:
        chunk_size = max(1, MAX_BLOCK // k)
    check_count("chunk_size", chunk_size, 1)
    with torch.no_grad():
        z, codebook = z.detach(), codebook.detach()
        code_sq = codebook.pow(2).sum(1)
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, z.shape[0], chunk_size):
            block = z[start : start + chunk_size]
            out[start : start + block.shape[0]] = _scores(block, codebook, code_sq).argmin(1)
    return out


def code_statistics(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Perplexity ``exp(-sum_k p_k log p_k)`` (codes) and usage ``#{k: p_k > 0} / K`` of a batch.

    ``p_k`` is the fraction of the batch's latent positions assigned to code k; perplexity
    runs from 1 (one code) to K (uniform use). Both are detached 0-dim tensors.
    """
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1.0)
    entropy = -(torch.where(p > 0, p * p.clamp(min=1e-30).log(), torch.zeros_like(p))).sum()
    return entropy.exp(), (counts > 0).float().mean()


def rotate_to(z: torch.Tensor, e: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024, sec. 4.2): the value of ``e``, a rotated gradient to ``z``.

    Rows ``[N, C]``: ``out = (|e| / |z|) R z`` with ``R = I - 2 w w^T + 2 e_hat z_hat^T``,
    ``w = (z_hat + e_hat) / |z_hat + e_hat|``, where R, the hats and the norm ratio are
    constants (detached). R rotates ``z_hat`` onto ``e_hat``, so the forward value is ``e``;
    backward, ``dL/dz = (|e| / |z|) R^T dL/dout`` (straight-through would pass ``dL/dout``).
    Norms are clamped below at ``eps`` (as vector-quantize-pytorch's ``safe_div``).
    """
    nz = z.norm(dim=-1, keepdim=True).clamp(min=eps)
    ne = e.norm(dim=-1, keepdim=True).clamp(min=eps)
    u, q = (z / nz).detach(), (e / ne).detach()
    w = F.normalize(u + q, dim=-1, eps=eps)
    out = z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * u).sum(-1, keepdim=True) * q
    return out * (ne / nz).detach()


@torch.no_grad()
def kmeans(
    x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Lloyd's k-means of the rows of ``x`` ``[N, C]``: centroids ``[k, C]``.

    Starts from k distinct random rows (with replacement when N < k), then ``iters`` rounds of
    nearest-centroid assignment (squared Euclidean) and centroid = mean of its rows; a
    centroid with no rows keeps its place (as vector-quantize-pytorch's ``kmeans``).
    """
    check_count("k", k, 1)
    check_count("iters", iters, 0)
    n = x.shape[0]
    if n >= k:
        pick = torch.randperm(n, generator=generator)[:k]
    else:
        pick = torch.randint(n, (k,), generator=generator)
    centroids = x[pick.to(x.device)].clone()
    for _ in range(iters):
        idx = nearest_codes(x, centroids)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centroids


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with a straight-through gradient (VQ-VAE).

    ``z_q = e_k, k = argmin_j ||z_e - e_j||^2``; backward passes ``dL/dz_q`` to ``z_e``
    unchanged. Per example (summed over positions and code dims, ``[B]``):
    codebook loss ``||sg[z_e] - e||^2`` (trains the codebook only) and commitment loss
    ``beta ||z_e - sg[e]||^2`` (trains the encoder only) (van den Oord et al. 2017, eq. 3).

    Args:
        num_codes: codebook size K.
        code_dim: size C of each code; ``z_e`` is ``[B, C, *positions]`` (channels first).
        beta: commitment weight (0.25 in the paper); the returned commitment loss includes it.
        ema: update the codebook by exponential moving averages of its assigned encoder
            outputs instead of by the codebook loss (van den Oord et al. 2017, appendix A.1;
            Razavi et al. 2019). The codebook is then a buffer (no gradient) and
            ``codebook_loss`` is zero.
        decay: EMA decay gamma: ``N_k <- gamma N_k + (1 - gamma) n_k``,
            ``m_k <- gamma m_k + (1 - gamma) sum_{i: k_i = k} z_i``, ``e_k = m_k / N~_k``
            with Laplace-smoothed counts ``N~_k = (N_k + eps) / (sum_j N_j + K eps) sum_j N_j``.
        eps: Laplace smoothing constant of the EMA counts.
        restart_after: re-initialise a code to a random encoder output of the current batch
            after it went unused for this many consecutive training steps (dead-code
            restart, as in Jukebox, Dhariwal et al. 2020); 0 disables restarts.
        cosine: l2-normalise encoder outputs and codes before the lookup and the losses
            (distances are then ``2 - 2 cos``; Yu et al. 2022, ViT-VQGAN); ``z_q`` has unit norm.
        chunk_size: rows per distance block in :func:`nearest_codes` (default: bounded by
            :data:`MAX_BLOCK` elements).
        rotation_trick: pass gradients to ``z_e`` by :func:`rotate_to` (Fifty et al. 2024)
            instead of straight-through; the forward value is the same code.
        kmeans_init: at the first training call, set the codebook to :func:`kmeans`
            (``kmeans_iters`` rounds) of that batch's encoder outputs (rank 0's, broadcast);
            the buffer ``initialised`` records that it happened (saved in ``state_dict``).

    State updates (EMA, restarts) run only when ``self.training`` and gradients are enabled.
    Restarts write the rows of a learned codebook in place; an optimiser's moments for those
    rows are not reset.
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        *,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        restart_after: int = 0,
        cosine: bool = False,
        chunk_size: int | None = None,
        rotation_trick: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
    ):
        super().__init__()
        self.num_codes = check_count("num_codes", num_codes, 1)
        self.code_dim = check_count("code_dim", code_dim, 1)
        check_positive("beta", beta, allow_zero=True)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), e.g. 0.99; received {decay!r}")
        check_positive("eps", eps)
        self.restart_after = check_count("restart_after", restart_after, 0)
        if chunk_size is not None:
            check_count("chunk_size", chunk_size, 1)
        self.beta, self.ema, self.decay, self.eps = float(beta), bool(ema), float(decay), float(eps)
        self.cosine, self.chunk_size = bool(cosine), chunk_size

        # uniform(-1/K, 1/K) as in the reference implementations; with EMA the statistics
        # start from the codebook itself with unit counts
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if self.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
        self.rotation_trick, self.kmeans_init = bool(rotation_trick), bool(kmeans_init)
        self.kmeans_iters = check_count("kmeans_iters", kmeans_iters, 0)
        if self.kmeans_init:
            self.register_buffer("initialised", torch.tensor(False))

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, "
            f"ema={self.ema}, decay={self.decay}, restart_after={self.restart_after}, "
            f"cosine={self.cosine}, rotation_trick={self.rotation_trick}, "
            f"kmeans_init={self.kmeans_init}"
        )

    def codes(self) -> torch.Tensor:
        """The codebook as the lookup sees it, ``[K, C]`` (l2-normalised when ``cosine``)."""
        return F.normalize(self.codebook, dim=1) if self.cosine else self.codebook

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes ``e_k`` for indices ``[B, *positions]``: ``[B, C, *positions]``."""
        _check_indices(indices, self.num_codes)
        return F.embedding(indices, self.codes()).movedim(-1, 1)

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z_e`` ``[B, C, *positions]``; see :class:`QuantizerOutput`.

        Always in float32, also under ``torch.autocast``: bfloat16 distances would pick
        wrong nearest codes and round the EMA statistics.
        """
        with torch.autocast(z_e.device.type, enabled=False):
            return self._quantise(full_precision(z_e))

    def _quantise(self, z_e: torch.Tensor) -> QuantizerOutput:
        flat = _flatten("z_e", z_e, self.code_dim)
        check_finite("z_e", z_e)
        if self.cosine:
            flat = F.normalize(flat, dim=1)
        if self.kmeans_init and self.training and torch.is_grad_enabled():
            if not bool(self.initialised):
                self._kmeans(flat.detach())
        codes = self.codes()
        idx = nearest_codes(flat, codes, self.chunk_size)
        e = F.embedding(idx, codes)  # [N, C]; with EMA the codebook is a buffer: no gradient
        batch = z_e.shape[0]
        commitment = self.beta * _per_example((flat - e.detach()).pow(2), batch)
        if self.ema:
            codebook_loss = torch.zeros(batch, dtype=flat.dtype, device=flat.device)
        else:
            codebook_loss = _per_example((flat.detach() - e).pow(2), batch)
        if self.rotation_trick:  # the value of e, a rotated and rescaled gradient to z_e
            z_q = rotate_to(flat, e.detach())
        else:  # straight-through: the value of e, the gradient of the identity to z_e
            z_q = flat + (e - flat).detach()
        indices = idx.reshape(batch, *z_e.shape[2:])
        perplexity, usage = code_statistics(idx, self.num_codes)
        if self.training and torch.is_grad_enabled():
            self._update(flat.detach(), idx)
        return QuantizerOutput(
            _unflatten(z_q, z_e), indices, codebook_loss, commitment, perplexity, usage
        )

    @torch.no_grad()
    def _kmeans(self, flat: torch.Tensor) -> None:
        centroids = kmeans(flat, self.num_codes, self.kmeans_iters).to(self.codebook.dtype)
        broadcast_(centroids)  # every replica starts from rank 0's codebook
        self.codebook.data.copy_(centroids)
        if self.ema:
            self.ema_sum.copy_(centroids)
            self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        if not (self.ema or self.restart_after):
            return
        counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, flat)
            all_reduce_(counts, sums)  # summed: every replica keeps the same codebook
            self.ema_count.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        else:
            all_reduce_(counts)
        if self.restart_after:
            self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
            dead = (self.unused_steps >= self.restart_after).nonzero().squeeze(1)
            if dead.numel():
                self._restart(dead, flat)

    def _restart(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """Set the dead codes to distinct random rows of this batch's encoder outputs."""
        n = flat.shape[0]
        if n >= dead.numel():
            pick = torch.randperm(n, device=flat.device)[: dead.numel()]
        else:
            pick = torch.randint(n, (dead.numel(),), device=flat.device)
        new = flat[pick]
        broadcast_(new)  # the same restart on every replica
        self.codebook.data[dead] = new
        if self.ema:
            # a fresh cluster of one member at the new position
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new
        self.unused_steps[dead] = 0


def _check_indices(indices: torch.Tensor, num_codes: int) -> None:
    if indices.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"indices must be an integer tensor; received dtype {indices.dtype}")
    # a value check (one device sync): off under vaekit.validation(False), like check_finite
    if (
        validation_enabled()
        and indices.numel()
        and (int(indices.min()) < 0 or int(indices.max()) >= num_codes)
    ):
        raise ValueError(
            f"indices must lie in [0, {num_codes - 1}]; received values in "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )


class ResidualVQ(nn.Module):
    """Residual vector quantisation: ``num_quantizers`` codebooks in sequence (SoundStream).

    ``r_1 = z_e``; layer i quantises ``r_i`` to ``q_i`` (a :class:`VectorQuantizer`, gradient
    by straight-through or the rotation trick) and passes on ``r_{i+1} = r_i - sg[q_i]``;
    ``z_q = sum_i q_i``. Codebook and commitment losses are each layer's (squared distances to
    its own residual, summed over positions and code dims) summed over the layers, ``[B]``.
    ``indices`` are ``[B, num_quantizers, *positions]`` (layer on axis 1, each in [0, K));
    ``perplexity`` and ``usage`` are the means over the layers of each layer's batch values.

    Args:
        num_quantizers: number of codebooks Q (1 is a plain :class:`VectorQuantizer`).
        num_codes, code_dim: K and C of every codebook.
        **kwargs: passed to each :class:`VectorQuantizer` (``beta``, ``ema``, ``rotation_trick``,
            ``kmeans_init``, ``restart_after``, ...).
    """

    def __init__(self, num_quantizers: int, num_codes: int, code_dim: int, **kwargs):
        super().__init__()
        self.num_quantizers = check_count("num_quantizers", num_quantizers, 1)
        self.layers = nn.ModuleList(
            VectorQuantizer(num_codes, code_dim, **kwargs) for _ in range(num_quantizers)
        )
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z_e`` ``[B, C, *positions]``; see the class docstring."""
        residual, z_q = z_e, 0.0
        outs = []
        for layer in self.layers:
            q = layer(residual)
            outs.append(q)
            z_q = z_q + q.z_q
            residual = residual - q.z_q.detach()
        return QuantizerOutput(
            z_q,
            torch.stack([q.indices for q in outs], 1),
            sum(q.codebook_loss for q in outs),
            sum(q.commitment_loss for q in outs),
            torch.stack([q.perplexity for q in outs]).mean(),
            torch.stack([q.usage for q in outs]).mean(),
        )

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``sum_i e^(i)_{k_i}`` for indices ``[B, Q, *positions]``: ``[B, C, *positions]``."""
        if indices.dim() < 2 or indices.shape[1] != self.num_quantizers:
            raise ValueError(
                f"indices must have shape [B, {self.num_quantizers}, *positions] (one index per "
                f"codebook on axis 1); received shape {tuple(indices.shape)}"
            )
        return sum(
            layer.indices_to_codes(idx)
            for layer, idx in zip(self.layers, indices.unbind(1), strict=True)
        )


def _entropy(p: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``-sum p log max(p, eps)`` over the last axis, nats (the clamp of the reference LFQ)."""
    return -(p * p.clamp(min=eps).log()).sum(-1)


class LFQ(nn.Module):
    """Lookup-free quantisation (Yu et al. 2023, "Language model beats diffusion", MAGVIT-v2).

    Each of d channels is quantised to its sign: ``z_q = where(z > 0, 1, -1)`` (straight-through
    gradient), an implicit codebook of ``K = 2^d`` codes; ``index = sum_i [z_i > 0] 2^(d-1-i)``
    (channel 0 is the most significant bit, as in vector-quantize-pytorch).

    Entropy penalty, with the soft assignment ``p_n(k) = softmax_k(2 tau z_n . c_k)`` of each
    position n to every code ``c_k`` (``tau = inv_temperature``):
    ``entropy_weight * (sum_{n in example} H(p_n) - gamma P H(mean_batch p_n))`` per example,
    nats, where P is the number of positions per example; its batch mean divided by P is
    vector-quantize-pytorch's ``entropy_aux_loss`` times the weight (per-sample entropy minus
    ``gamma`` times the codebook entropy). It is returned as ``codebook_loss`` (LFQ has no
    codebook to fit; this is the term that spreads code use). Commitment
    ``beta ||z_e - sg[z_q]||^2`` summed per example. The batch entropy is of this process's
    batch (not averaged across DDP ranks). The soft assignment builds ``[N, 2^d]``: keep d small
    (<= 14).

    Args:
        code_dim: d, the number of channels (bits); ``z_e`` is ``[B, d, *positions]``.
        entropy_weight: weight of the entropy penalty (0.1 in the reference).
        diversity_gamma: gamma, weight of the batch (codebook) entropy.
        inv_temperature: tau of the soft assignment (100 in the reference).
        beta: commitment weight (0 in the reference, 0.25 as in VQ-VAE is common).
    """

    def __init__(
        self,
        code_dim: int,
        *,
        entropy_weight: float = 0.1,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        beta: float = 0.0,
    ):
        super().__init__()
        self.code_dim = check_count("code_dim", code_dim, 1)
        if code_dim > 20:
            raise ValueError(
                f"code_dim of LFQ is log2 of its codebook size, at most 20 (2^20 codes); "
                f"received {code_dim}"
            )
        check_positive("entropy_weight", entropy_weight, allow_zero=True)
        check_positive("diversity_gamma", diversity_gamma, allow_zero=True)
        check_positive("inv_temperature", inv_temperature)
        check_positive("beta", beta, allow_zero=True)
        self.entropy_weight, self.diversity_gamma = float(entropy_weight), float(diversity_gamma)
        self.inv_temperature, self.beta = float(inv_temperature), float(beta)
        self.num_codes = 2**code_dim
        bits = 2 ** torch.arange(code_dim - 1, -1, -1)
        self.register_buffer("_bits", bits, persistent=False)
        codes = (torch.arange(self.num_codes).unsqueeze(1) & bits).ne(0).float() * 2 - 1
        self.register_buffer("_codebook", codes, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"code_dim={self.code_dim}, num_codes={self.num_codes}, "
            f"entropy_weight={self.entropy_weight}, diversity_gamma={self.diversity_gamma}"
        )

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z_e`` ``[B, d, *positions]`` (float32 under autocast); see the class docstring."""
        with torch.autocast(z_e.device.type, enabled=False):
            z_e = full_precision(z_e)
            flat = _flatten("z_e", z_e, self.code_dim)
            check_finite("z_e", z_e)
            sign = torch.where(flat > 0, 1.0, -1.0).to(flat.dtype)
            z_q = flat + (sign - flat).detach()
            idx = ((sign > 0).long() * self._bits).sum(1)
            batch = z_e.shape[0]
            positions = flat.shape[0] // batch
            prob = torch.softmax(2 * self.inv_temperature * flat @ self._codebook.t(), dim=1)
            per_sample = _entropy(prob).reshape(batch, -1).sum(1)
            codebook_entropy = _entropy(prob.mean(0))
            entropy = self.entropy_weight * (
                per_sample - self.diversity_gamma * positions * codebook_entropy
            )
            commitment = self.beta * _per_example((flat - sign).pow(2), batch)
            perplexity, usage = code_statistics(idx, self.num_codes)
            return QuantizerOutput(
                _unflatten(z_q, z_e),
                idx.reshape(batch, *z_e.shape[2:]),
                entropy,
                commitment,
                perplexity,
                usage,
            )

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes in {-1, 1}^d for indices ``[B, *positions]``: ``[B, d, *positions]``."""
        _check_indices(indices, self.num_codes)
        return F.embedding(indices.long(), self._codebook).movedim(-1, 1)


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): round each of d bounded channels.

    ``z_q_i = round(f_i(z_i)) / floor(L_i / 2)`` with the bound
    ``f_i(z) = tanh(z + s_i) h_i - o_i``, ``h_i = (L_i - 1)(1 - 1e-3) / 2``, offset
    ``o_i = 0.5`` for even ``L_i`` (else 0) and shift ``s_i = tan(o_i / h_i)`` as in the paper's
    code (f(0) is then within 1e-2 of 0, not exactly 0; ``atanh`` would make it exact but is
    undefined for L = 2, where ``o / h > 1``). Channel i then takes exactly
    ``L_i`` values in [-1, 1]; rounding has a straight-through gradient, so
    ``dz_q/dz = f'(z) / floor(L / 2)``. The implicit codebook has ``prod(L_i)`` codes and there
    are no auxiliary losses (both are zero).

    Args:
        levels: number of values per channel, each >= 2; ``z_e`` is ``[B, len(levels), *positions]``.
            :data:`FSQ_LEVELS` lists the paper's choices per codebook size.
    """

    def __init__(self, levels: Sequence[int] = (8, 5, 5, 5)):
        super().__init__()
        levels = tuple(levels)
        if not levels or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in levels
        ):
            raise ValueError(
                f"levels must be a non-empty sequence of integers >= 2; received {levels!r}"
            )
        self.levels = levels
        self.code_dim = len(levels)
        self.num_codes = math.prod(levels)
        lv = torch.tensor(levels, dtype=torch.float64)
        half_l = (lv - 1) * (1 - 1e-3) / 2
        offset = torch.where(lv.remainder(2) == 0, 0.5, 0.0)
        basis = torch.cumprod(torch.tensor((1, *levels[:-1]), dtype=torch.long), 0)
        # constants of the construction, not state: rebuilt from ``levels``, kept out of state_dict
        self.register_buffer("_half_l", half_l.float(), persistent=False)
        self.register_buffer("_offset", offset.float(), persistent=False)
        self.register_buffer("_shift", torch.tan(offset / half_l).float(), persistent=False)
        self.register_buffer("_half_width", (lv // 2).float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, num_codes={self.num_codes}"

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape(-1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """``f(z) = tanh(z + s) h - o`` per channel (axis 1): values in ``(-L/2, L/2)``, before rounding."""
        v = lambda t: self._view(t, z.dim())  # noqa: E731
        return torch.tanh(z + v(self._shift)) * v(self._half_l) - v(self._offset)

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z_e`` ``[B, d, *positions]``; see :class:`QuantizerOutput` (losses are zero)."""
        z_e = full_precision(z_e)  # rounding to L levels in bfloat16 could land between levels
        _flatten("z_e", z_e, self.code_dim)
        check_finite("z_e", z_e)
        b = self.bound(z_e)
        rounded = b + (torch.round(b) - b).detach()
        z_q = rounded / self._view(self._half_width, z_e.dim())
        indices = self.codes_to_indices(z_q.detach())
        perplexity, usage = code_statistics(indices, self.num_codes)
        zeros = torch.zeros(z_e.shape[0], dtype=z_e.dtype, device=z_e.device)
        return QuantizerOutput(z_q, indices, zeros, zeros.clone(), perplexity, usage)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """``sum_i (z_i floor(L_i/2) + floor(L_i/2)) prod_{j<i} L_j``: ``[B, d, *pos] -> [B, *pos]`` long."""
        _flatten("codes", codes, self.code_dim)
        hw = self._view(self._half_width, codes.dim())
        digits = torch.round(codes * hw + hw).long()
        return (digits * self._view(self._basis, codes.dim())).sum(1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`codes_to_indices`: ``[B, *pos]`` in ``[0, prod L)`` -> ``[B, d, *pos]``."""
        _check_indices(indices, self.num_codes)
        levels = torch.tensor(self.levels, device=indices.device)
        digits = (indices.long().unsqueeze(1) // self._view(self._basis, indices.dim() + 1)) % (
            self._view(levels, indices.dim() + 1)
        )
        hw = self._view(self._half_width, indices.dim() + 1)
        return (digits.to(hw.dtype) - hw) / hw
