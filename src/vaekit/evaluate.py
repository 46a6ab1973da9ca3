"""Honest evaluation: importance-sampled log-likelihood, bound terms, active units.

``log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k | x)``, z_k ~ q(z|x) (Burda et al. 2015), in
nats per example; with K = 5000 this is the number published tables report as NLL.
Samples are drawn in chunks so memory stays bounded whatever K is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from vaekit._checks import check_finite, validation, validation_enabled
from vaekit._progress import progress as progress_bar
from vaekit.objectives import analytic_kl, log_weights
from vaekit.quantizers import code_statistics

__all__ = [
    "log_likelihood",
    "evaluate",
    "posterior_means",
    "active_units",
    "evaluate_vq",
    "disentanglement_scores",
]

# Elements of the largest intermediate tensor a chunk may create (x 4 bytes in float32):
# large enough to keep matmuls efficient, small enough that the elementwise passes over the
# decoder output (softplus, sums) stay near the cache: 2^21 measured fastest of 2^18..2^23.
_CHUNK_ELEMENTS = 1 << 21


def _as_tensor(data) -> torch.Tensor:
    x = getattr(data, "x", data)
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"data must be a tensor [N, ...] or have an .x tensor; received {type(data).__name__}"
        )
    if x.shape[0] == 0:
        raise ValueError("data is empty (0 examples)")
    return x


def _validated(model, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Check the data once (finite, in the likelihood's support), then run without checks.

    Per-chunk checks would cost a pass over every decoder output (~12% of evaluation).
    """
    if validation_enabled():
        check_finite("data", x)
        shape = model.likelihood.param_shape(tuple(x.shape[1:]))
        blank = torch.zeros(1, *shape, dtype=x.dtype, device=x.device)
        model.likelihood(blank).log_prob(x)  # raises ValueError for data outside the support
    return validation(False)


def _batches(
    x: torch.Tensor, batch_size: int, y: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x, y)`` slices of ``batch_size`` rows (``y`` None when there are no labels)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; received {batch_size}")
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], None if y is None else y[i : i + batch_size]


def _chunk_size(model, pz, batch: int, event_numel: int, samples: int) -> int:
    """Importance samples per forward pass so the largest tensor stays near _CHUNK_ELEMENTS.

    Per sample row that is the decoder output, or for a mixture prior the ``[K, D]``
    component log-densities of ``log p(z)``.
    """
    per_row = event_numel * getattr(model.likelihood, "n_params", 1)
    mix = getattr(pz, "mixture_distribution", None)
    if mix is not None:
        per_row = max(per_row, mix.logits.shape[-1] * pz.event_shape.numel())
    return max(1, min(samples, _CHUNK_ELEMENTS // max(1, batch * per_row)))


def _sums(
    model, xb: torch.Tensor, samples: int, pz, terms: bool = True
) -> tuple[torch.Tensor, ...]:
    """logsumexp of log w, and the sums over samples of log p(x|z) and log q - log p, each [B]
    (``terms=False``: the logsumexp alone, the other two None)."""
    chunk = _chunk_size(model, pz, xb.shape[0], xb[0].numel(), samples)
    # running sums updated in place: a small tensor kept per chunk would pin the heap between
    # the chunks' large temporaries and grow the resident memory with K (glibc malloc)
    lse = rec = kl = None
    done = 0
    while done < samples:
        c = min(chunk, samples - done)
        t = log_weights(model, xb, c, prior=pz)
        chunk_lse = torch.logsumexp(t.log_w, 0)
        chunk_rec = t.log_px.sum(0) if terms else None
        chunk_kl = (t.log_qz - t.log_pz).sum(0) if terms else None
        if lse is None:
            lse, rec, kl = chunk_lse, chunk_rec, chunk_kl
        else:
            torch.logaddexp(lse, chunk_lse, out=lse)
            if terms:
                rec.add_(chunk_rec)
                kl.add_(chunk_kl)
        del t, chunk_lse, chunk_rec, chunk_kl
        done += c
    return lse, rec, kl


def _labels(model, data, labels) -> torch.Tensor | None:
    """Labels for a conditional model (one with ``given``): ``labels``, else ``data.y``.

    None otherwise: then the caller's own ``with model.given(y):`` applies (or the model
    says that it needs labels).
    """
    if getattr(model, "given", None) is None:
        return None
    y = labels if labels is not None else getattr(data, "y", None)
    return None if y is None else torch.as_tensor(y)


def _given(model, y: torch.Tensor | None) -> contextlib.AbstractContextManager:
    return model.given(y) if y is not None else contextlib.nullcontext()


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _passes(
    model, data, samples: int, batch_size: int, desc: str, progress: bool, labels=None, terms=True
):
    """Yield ``(xb, yb, logsumexp_k log w, sum_k log p(x|z), sum_k [log q - log p])`` per batch.

    Puts the model in eval mode (restored after), checks the data once, then runs without
    per-chunk value checks; every yielded tensor is ``[B]`` on the CPU (``yb``: the
    labels of a conditional model, else None).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1; received {samples}")
    x = _as_tensor(data)
    y = _labels(model, data, labels)
    was_training = model.training
    model.eval()
    device = _device(model)
    try:
        with _validated(model, x):
            batches = list(_batches(x, batch_size, y))
            for xb, yb in progress_bar(batches, desc=desc, enabled=progress):
                xb = xb.to(device, non_blocking=True)
                with _given(model, yb):
                    # p(z) is fixed during evaluation: built once per batch (a conditional
                    # prior depends on the labels), not once per chunk of samples
                    pz = model.prior()
                    sums = _sums(model, xb, samples, pz, terms)
                    yield (xb, yb, *(None if t is None else t.cpu() for t in sums))
    finally:
        model.train(was_training)


@torch.inference_mode()
def log_likelihood(
    model,
    data,
    samples: int = 5000,
    batch_size: int = 100,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Importance-sampled ``log p(x)`` per example, nats ``[N]`` (a lower bound, tight as K grows).

    ``log p(x) ~= logsumexp_k(log p(x, z_k) - log q(z_k|x)) - log K`` with K = ``samples``.
    A conditional model (CVAE) gives ``log p(x | y)`` for ``labels`` (default ``data.y``).
    """
    desc = f"log p(x), K={samples}"
    passes = _passes(model, data, samples, batch_size, desc, progress, labels, terms=False)
    return torch.cat([lse for _, _, lse, _, _ in passes]) - math.log(samples)


@torch.inference_mode()
def posterior_means(
    model, data, batch_size: int = 500, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """E_q[z | x] (E_q[z | x, y] for a conditional model) for every example: ``[N, D]``."""
    x = _as_tensor(data)
    y = _labels(model, data, labels)
    device = _device(model)
    means = []
    for xb, yb in _batches(x, batch_size, y):
        with _given(model, yb):
            means.append(model.encode(xb.to(device)).mean.cpu())
    return torch.cat(means)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims with ``Cov_x(E_q[z_d | x]) > threshold`` (Burda et al. 2015)."""
    return int((means.var(0, unbiased=True) > threshold).sum())


@torch.inference_mode()
def evaluate(
    model,
    data,
    samples: int = 5000,
    batch_size: int = 100,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> dict:
    """Every evaluation number of a run, from one importance-sampling pass.

    Returns a dict (floats, nats per example unless stated): ``nll`` = -mean log p(x)
    (K = ``samples``), ``elbo`` (signed), ``rec`` = -E_q log p(x|z), ``kl`` =
    KL(q||p) (analytic where the pair has a closed form, else the mean of log q - log p
    over the K samples), ``bits_per_dim`` = nll / (D ln 2), ``active_units``,
    ``kl_per_dim`` (list, analytic pairs only), ``samples``, ``examples``.
    """
    log_px, rec, kl_mc, kl_dims = [], [], [], []
    for xb, yb, lse, rec_sum, kl_sum in _passes(
        model, data, samples, batch_size, f"eval, K={samples}", progress, labels
    ):
        log_px.append(lse - math.log(samples))
        rec.append(-rec_sum / samples)
        kl_mc.append(kl_sum / samples)
        if kl_dims is not None:
            try:
                with _given(model, yb):
                    q, p = model.encode(xb), model.prior()
                kl_dims.append(analytic_kl(q, p, per_dim=True).cpu())
            except ValueError:  # no closed form (mixture priors): the Monte Carlo KL is used
                kl_dims = None
    x = _as_tensor(data)
    log_px, rec = torch.cat(log_px), torch.cat(rec)
    kl = torch.cat(kl_dims).sum(1) if kl_dims else torch.cat(kl_mc)
    nll = -log_px.mean().item()
    n_dims = x[0].numel()
    result = {
        "nll": nll,
        "elbo": -(rec + kl).mean().item(),
        "rec": rec.mean().item(),
        "kl": kl.mean().item(),
        "bits_per_dim": nll / (n_dims * math.log(2.0)),
        "active_units": active_units(posterior_means(model, data, labels=labels)),
        "samples": samples,
        "examples": int(x.shape[0]),
    }
    if kl_dims:
        result["kl_per_dim"] = torch.cat(kl_dims).mean(0).tolist()
    return result


def _to_unit(model, x: torch.Tensor) -> torch.Tensor:
    """``x`` mapped from the likelihood's ``data_range`` ``(lo, hi)`` to [0, 1] (clamped)."""
    lo, hi = model.likelihood.data_range
    return ((x - lo) / (hi - lo)).clamp(0, 1)


@torch.inference_mode()
def evaluate_vq(model, x: torch.Tensor, batch_size: int = 100) -> dict:
    """A VQ-VAE's evaluation numbers (floats; nats per example unless stated).

    With a code prior attached: ``nll = -log p_prior(k(x)) - log p(x | z_q)``, the negative
    ELBO of the deterministic one-hot posterior (an upper bound on -log p(x)); without one
    the prior is uniform over K codes per position and ``kl = positions * log K``. Also
    ``rec`` = -log p(x|z_q), ``bits_per_dim`` = nll / (D ln 2), ``mse`` (per pixel, images
    in [0, 1]), ``perplexity`` (exp of the entropy of the code histogram), ``codes_used``
    (also reported as ``active_units``), ``code_counts``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rec, kl, sq, codes = [], [], [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device)
            out = model(xb)
            rec.append(-out.likelihood.log_prob(xb).cpu())
            idx = out.quantized.indices
            codes.append(idx.reshape(-1).cpu())
            if model.prior is not None:
                kl.append(-model.prior.log_prob(idx).cpu())
            else:
                positions = idx[0].numel()
                kl.append(torch.full((xb.shape[0],), positions * math.log(model.num_codes)))
            err = _to_unit(model, out.likelihood.mean) - _to_unit(model, xb)
            sq.append(err.square().reshape(xb.shape[0], -1).mean(1).cpu())
    finally:
        model.train(was_training)
    rec_t, kl_t = torch.cat(rec), torch.cat(kl)
    nll = (rec_t + kl_t).mean().item()
    codes_t = torch.cat(codes)
    perplexity, _ = code_statistics(codes_t, model.num_codes)
    counts = torch.bincount(codes_t, minlength=model.num_codes)
    used = int((counts > 0).sum())
    return {
        "nll": nll,
        "elbo": -nll,
        "rec": rec_t.mean().item(),
        "kl": kl_t.mean().item(),
        "bits_per_dim": nll / (x[0].numel() * math.log(2.0)),
        "active_units": used,
        "codes_used": used,
        "num_codes": model.num_codes,
        "perplexity": perplexity.item(),
        "mse": torch.cat(sq).mean().item(),
        "code_prior": model.prior is not None,
        "examples": int(x.shape[0]),
        "code_counts": counts.tolist(),
    }


def disentanglement_scores(model, cfg, shape, n: int = 10000, **options) -> dict[str, float]:
    """MIG, DCI, SAP, modularity, explicitness, FactorVAE and beta-VAE of ``E_q[z|x]``, in [0, 1].

    On rendered dSprites; the observational scores in disentanglement_lib's form. ``cfg`` is
    the run's :class:`~vaekit.config.RunConfig` (its data set must be dSprites;
    ``cfg.train.seed`` seeds the factor draws), ``shape`` the model's input shape, ``n`` the
    number of factor draws and ``options`` (``n_dci``, ``fast_variants``, ``interventional``)
    go to :func:`vaekit.metrics.evaluate_disentanglement`.
    """
    from vaekit.data import DSprites
    from vaekit.metrics import evaluate_disentanglement, image_representation
    from vaekit.models.build import prepare_input

    if cfg.train.dataset != "dsprites":
        raise ValueError(
            "the disentanglement metrics need the data set's ground-truth factors: "
            f"dataset 'dsprites'; this run used {cfg.train.dataset!r}"
        )
    device = next(model.parameters()).device

    def encode(images: torch.Tensor) -> torch.Tensor:
        x = prepare_input(model, images.reshape(images.shape[0], -1), shape)
        return model.encode(x).mean.cpu()

    dataset = DSprites()
    represent = image_representation(encode, dataset, device=device)
    return evaluate_disentanglement(represent, dataset, n=n, seed=cfg.train.seed, **options)
