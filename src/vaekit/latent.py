"""What people do with a trained VAE: encode, decode, interpolate, traverse, add attributes.

Every function takes a model with ``encode(x) -> q(z|x)`` and ``decode(z) -> p(x|z)`` (a
:class:`vaekit.VAE`) and works on codes ``z`` of shape ``[..., D]``:

* :func:`encode` / :func:`decode`: ``E_q[z | x]`` and ``E_p[x | z]`` (the picture of a code).
* :func:`lerp` / :func:`slerp`: linear and spherical interpolation between two codes.
* :func:`kl_per_unit`, :func:`rank_units`, :func:`traverse`: the active units ranked by their
  KL(q(z_d|x) || p(z_d)), and pictures of one unit swept while the others stay fixed.
* :func:`attribute_vector`, :func:`attribute_vectors`, :func:`add_attribute`: "latent
  arithmetic" (Larsen et al. 2016, White 2016): the mean code of the examples with an
  attribute minus the mean code of those without, added with a strength.
* :func:`data_attributes` and :func:`folder_attributes`: the attributes a data set gives:
  dSprites' factors, MNIST / Fashion-MNIST classes, or the sub-folders of a user's folder.

>>> import vaekit                                                      # doctest: +SKIP
>>> model, cfg, splits = vaekit.load_run("runs/default")               # doctest: +SKIP
>>> x, masks, names = vaekit.latent.data_attributes(splits, model, cfg)  # doctest: +SKIP
>>> codes = vaekit.latent.encode(model, x)                             # doctest: +SKIP
>>> vectors = vaekit.latent.attribute_vectors(codes, masks, names)     # doctest: +SKIP
>>> z = vaekit.latent.add_attribute(codes[0], vectors["digit 1"], 1.5)  # doctest: +SKIP
>>> picture = vaekit.latent.decode(model, z, unit=True)                # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vaekit.evaluate import _to_unit, active_units, posterior_means
from vaekit.objectives import analytic_kl

__all__ = [
    "encode",
    "decode",
    "lerp",
    "slerp",
    "kl_per_unit",
    "UnitRanking",
    "rank_units",
    "traverse",
    "attribute_vector",
    "attribute_vectors",
    "add_attribute",
    "data_attributes",
    "folder_attributes",
    "FASHION_MNIST_CLASSES",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_SPLIT_FOLDERS = ("train", "valid", "test")


def _as_codes(name: str, z) -> torch.Tensor:
    z = torch.as_tensor(z)
    if not z.is_floating_point() or z.dim() < 1 or z.shape[-1] == 0:
        raise ValueError(
            f"{name} must be a floating-point code tensor [..., D] with D >= 1; received "
            f"dtype {z.dtype}, shape {tuple(z.shape)}"
        )
    return z


def _check_conditional(model) -> None:
    if getattr(model, "given", None) is not None:
        raise ValueError(
            f"model must be unconditional (encode(x), decode(z)); received a conditional "
            f"{type(model).__name__}: wrap the calls in `with model.given(y):` and use the "
            "model's own encode/decode"
        )


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Posterior means ``E_q[z | x]``: ``[N, *input_shape] -> [N, D]`` (on the CPU).

    ``x`` is what the encoder takes (a run's data through
    :func:`vaekit.models.build.prepare_input`).
    """
    _check_conditional(model)
    return posterior_means(model, x, batch_size=batch_size)


@torch.no_grad()
def decode(model, z: torch.Tensor, unit: bool = False, batch_size: int = 500) -> torch.Tensor:
    """Likelihood means ``E_p[x | z]``: ``[..., D] -> [..., *x_shape]`` (on the CPU).

    The mean is in the likelihood's ``data_range`` (Bernoulli: pixel probabilities in [0, 1];
    a Gaussian's location); ``unit=True`` maps it to [0, 1] and clamps, ready to show as an
    image: ``(E[x|z] - lo) / (hi - lo)``.
    """
    _check_conditional(model)
    z = _as_codes("z", z)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; received {batch_size}")
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else flat.dtype
    out = []
    for i in range(0, flat.shape[0], batch_size):
        m = model.decode(flat[i : i + batch_size].to(device, dtype)).mean
        out.append((_to_unit(model, m) if unit else m).cpu())
    x = torch.cat(out)
    return x.reshape(*lead, *x.shape[1:])


def _ts(t, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``t`` as a 1-D tensor of the codes' dtype, and whether it was a scalar."""
    t_tensor = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t_tensor.dim() > 1 or not torch.isfinite(t_tensor).all():
        raise ValueError(f"t must be a finite number or a 1-D sequence of them; received {t!r}")
    return t_tensor.reshape(-1), t_tensor.dim() == 0


def _pair(z0, z1) -> tuple[torch.Tensor, torch.Tensor]:
    z0, z1 = _as_codes("z0", z0), _as_codes("z1", z1)
    if z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must have the same shape; received {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    return z0, z1.to(z0.dtype)


def lerp(z0, z1, t) -> torch.Tensor:
    """Linear interpolation ``z(t) = (1 - t) z0 + t z1``.

    ``z0``, ``z1``: ``[..., D]``; ``t``: a number (returns ``[..., D]``) or a 1-D sequence of
    T numbers (returns ``[T, ..., D]``). ``t`` outside [0, 1] extrapolates.
    """
    z0, z1 = _pair(z0, z1)
    ts, scalar = _ts(t, z0)
    w = ts.reshape(-1, *([1] * z0.dim()))
    out = (1 - w) * z0 + w * z1
    return out[0] if scalar else out


def slerp(z0, z1, t, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for VAE codes).

    ``z(t) = sin((1 - t) W) / sin W * z0 + sin(t W) / sin W * z1``, with
    ``W = arccos(<z0, z1> / (|z0| |z1|))`` the angle between the codes (per row of
    ``[..., D]``). Between two codes of equal norm it stays on their sphere and the angle
    to z0 grows linearly, ``t W``. Where ``sin W < eps`` (parallel or anti-parallel codes,
    or a zero code) the formula is 0/0 and :func:`lerp` is used instead.

    Shapes as for :func:`lerp`.
    """
    z0, z1 = _pair(z0, z1)
    ts, scalar = _ts(t, z0)
    n0, n1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    cos = (z0 * z1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(torch.finfo(z0.dtype).tiny)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    degenerate = (sin < eps) | (n0 == 0) | (n1 == 0)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    w = ts.reshape(-1, *([1] * z0.dim()))
    spherical = (torch.sin((1 - w) * omega) * z0 + torch.sin(w * omega) * z1) / safe_sin
    linear = (1 - w) * z0 + w * z1
    out = torch.where(degenerate, linear, spherical)
    return out[0] if scalar else out


@torch.no_grad()
def kl_per_unit(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Mean over examples of ``KL(q(z_d | x) || p(z_d))`` per latent unit d: ``[D]``, nats.

    For a diagonal Gaussian posterior and a standard normal prior this is
    ``0.5 (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)`` averaged over ``x``; any factorised pair
    with a closed form in the ``torch.distributions`` registry works (the terms evaluation
    writes as ``kl_per_dim``). A prior without one (a mixture) raises ``ValueError``.
    """
    _check_conditional(model)
    p = model.prior()
    device = next(model.parameters()).device
    total, n = None, 0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        kl = analytic_kl(model.encode(xb), p, per_dim=True).sum(0).cpu()
        total = kl if total is None else total + kl
        n += xb.shape[0]
    return total / n


class UnitRanking(NamedTuple):
    """Latent units ordered by KL (nats, largest first); ``active`` lists the active ones.

    ``order``: ``[D]`` unit indices, decreasing KL; ``kl``: ``[D]`` mean KL per unit (nats),
    indexed by unit; ``variance``: ``[D]`` ``Var_x(E_q[z_d | x])``; ``active``: the units
    of ``order`` whose variance exceeds the threshold (Burda et al. 2015), still by KL.
    """

    order: list[int]
    kl: torch.Tensor
    variance: torch.Tensor
    active: list[int]


def rank_units(
    model, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 500
) -> UnitRanking:
    """Units ranked by mean ``KL(q(z_d|x) || p(z_d))`` (nats); active: ``Var_x E_q[z_d|x] > threshold``.

    The activity criterion is :func:`vaekit.evaluate.active_units`' (Burda et al. 2015);
    the KL is :func:`kl_per_unit`'s. A prior without a per-unit closed form (a mixture)
    ranks by the variance instead (``kl`` then holds NaN).
    """
    means = encode(model, x, batch_size)
    variance = means.var(0, unbiased=True)
    try:
        kl = kl_per_unit(model, x, batch_size)
        key = kl
    except ValueError:
        kl = torch.full_like(variance, float("nan"))
        key = variance
    order = torch.argsort(key, descending=True, stable=True).tolist()
    n_active = active_units(means, threshold)
    active = [d for d in order if variance[d] > threshold]
    assert len(active) == n_active  # the same criterion as evaluate's count
    return UnitRanking(order, kl, variance, active)


def traverse(
    model,
    z: torch.Tensor,
    units: Sequence[int],
    values: Sequence[float] | torch.Tensor = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
    unit: bool = True,
) -> torch.Tensor:
    """Pictures of one unit swept at a time: ``z_u := v`` for each ``u`` in ``units`` and ``v``.

    ``z``: one code ``[D]`` (the other units stay at its values); ``values`` in prior standard
    deviations for a standard normal prior. Returns ``[len(units), len(values), *x_shape]``
    (in [0, 1] with ``unit=True``, see :func:`decode`). Use ``rank_units(...).active`` as
    ``units`` for the traversal of the active units by KL.
    """
    z = _as_codes("z", z)
    if z.dim() != 1:
        raise ValueError(f"z must be one code [D]; received shape {tuple(z.shape)}")
    d = z.shape[0]
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < d]
    if not units or bad:
        raise ValueError(f"units must be a non-empty list of indices in [0, {d}); received {units}")
    vals = torch.as_tensor(values, dtype=z.dtype).reshape(-1)
    codes = z.repeat(len(units), len(vals), 1)
    for i, u in enumerate(units):
        codes[i, :, u] = vals
    return decode(model, codes, unit=unit)


def attribute_vector(codes, mask) -> torch.Tensor:
    """``mean(z | attribute) - mean(z | no attribute)``: ``codes [N, D]``, ``mask [N]`` bool -> ``[D]``."""
    codes = _as_codes("codes", codes)
    mask = torch.as_tensor(mask)
    if codes.dim() != 2 or mask.shape != codes.shape[:1] or mask.dtype != torch.bool:
        raise ValueError(
            f"codes must be [N, D] and mask a bool tensor [N]; received codes "
            f"{tuple(codes.shape)}, mask {tuple(mask.shape)} of dtype {mask.dtype}"
        )
    n_with = int(mask.sum())
    if n_with == 0 or n_with == mask.shape[0]:
        raise ValueError(
            f"mask must mark some examples with the attribute and some without; received "
            f"{n_with} of {mask.shape[0]} with it"
        )
    return codes[mask].mean(0) - codes[~mask].mean(0)


def attribute_vectors(codes, labels, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """One :func:`attribute_vector` per attribute: ``{name: [D]}``.

    ``labels``: ``[N]`` integer classes (attribute k = "class k", against all other
    classes) or ``[N, K]`` bool (attribute k = column k). ``names``: one per class / column
    (default ``"0"``, ``"1"``, ...). A class present in no example (or in all) is skipped.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        k = int(labels.max()) + 1 if labels.numel() else 0
        masks = labels[:, None] == torch.arange(k, device=labels.device)
    elif labels.dim() == 2 and labels.dtype == torch.bool:
        masks = labels
    else:
        raise ValueError(
            f"labels must be [N] integer classes or an [N, K] bool tensor; received dtype "
            f"{labels.dtype}, shape {tuple(labels.shape)}"
        )
    names = [str(i) for i in range(masks.shape[1])] if names is None else list(names)
    if len(names) < masks.shape[1]:
        raise ValueError(
            f"names must name each of the {masks.shape[1]} attributes; received {len(names)}"
        )
    out = {}
    for j in range(masks.shape[1]):
        n_with = int(masks[:, j].sum())
        if 0 < n_with < masks.shape[0]:
            out[names[j]] = attribute_vector(codes, masks[:, j])
    return out


def add_attribute(z, vector, strength: float = 1.0) -> torch.Tensor:
    """Latent arithmetic: ``z + strength * vector`` (``strength < 0`` removes the attribute)."""
    z, vector = _as_codes("z", z), _as_codes("vector", vector)
    if z.shape[-1] != vector.shape[-1]:
        raise ValueError(
            f"vector must have the codes' size D = {z.shape[-1]}; received {vector.shape[-1]}"
        )
    return z + float(strength) * vector.to(z.dtype)


# ------------------------------------------------------------------ attributes of data sets

_DSPRITES_ORDINAL = {  # factor column -> the attribute "factor in the upper half of its classes"
    1: "large (scale)",
    2: "turned (orientation > pi)",
    3: "right (posX)",
    4: "low (posY)",
}


def _dsprites_masks(factors: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    from vaekit.data._dsprites import FACTOR_SIZES

    names = ["square", "ellipse", "heart"]
    cols = [factors[:, 0] == k for k in range(3)]
    for j, name in _DSPRITES_ORDINAL.items():
        cols.append(factors[:, j] >= FACTOR_SIZES[j] // 2)
        names.append(name)
    return torch.stack(cols, 1), names


def data_attributes(
    splits, model=None, cfg=None, split: str = "test", max_examples: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(x, masks, names)``: examples of a run's data and the attributes its labels give.

    * dSprites: one attribute per shape (square, ellipse, heart), and for scale,
      orientation, posX and posY "the factor in the upper half of its classes" (large,
      turned past pi, right, low).
    * MNIST ("digit 0" ... "digit 9") and Fashion-MNIST (its ten class names): one per class.
    * Any other data set with labels ``y``: one per class ``"class k"``.

    ``x`` is ``[N, *input_shape]`` ready for the encoder (with ``model`` and ``cfg``, through
    ``prepare_input``; else the flat ``[N, D]`` data), the first ``max_examples`` of
    ``split``'s fixed evaluation view; ``masks`` ``[N, K]`` bool. A data set without labels
    (a folder of images) raises ``ValueError``: use :func:`folder_attributes`.
    """
    data = getattr(splits, split, None)
    if data is None:
        raise ValueError(f"split must name a split the data set has; {split!r} is None")
    view = data.eval_view() if hasattr(data, "eval_view") else data
    n = min(len(view), int(max_examples))
    if callable(getattr(view, "factors", None)) and splits.name == "dsprites":
        masks, names = _dsprites_masks(view.subset(n).factors())
    elif view.y is not None:
        y = view.y[:n].long()
        k = int(view.y.max()) + 1
        masks = y[:, None] == torch.arange(k)
        if splits.name == "mnist":
            names = [f"digit {i}" for i in range(k)]
        elif splits.name == "fashion_mnist":
            names = list(FASHION_MNIST_CLASSES[:k])
        else:
            names = [f"class {i}" for i in range(k)]
    else:
        raise ValueError(
            f"the data set {splits.name!r} has no labels to build attributes from; for a "
            "folder of images, give labelled sub-folders (folder_attributes / --labels-from)"
        )
    x = view.x[:n]
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if model is not None and cfg is not None:
        x = _prepare(model, cfg, splits, x)
    return x, masks, names


def _prepare(model, cfg, splits, x: torch.Tensor) -> torch.Tensor:
    from vaekit.models.build import input_shape, prepare_input

    return prepare_input(model, x, input_shape(cfg.model, splits.image_shape, splits.event_shape))


def folder_attributes(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(x, masks, names)`` from a folder of labelled sub-folders: ``path/<name>/*.png``.

    Each sub-folder (except ``train``, ``valid``, ``test``) is one attribute named after it;
    each image carries the label of its sub-folder. Images are read as :func:`vaekit.data.from_folder`
    reads them (grayscale in [0, 1], luma of colour images) and returned flat ``[N, H*W]``;
    ``masks`` is ``[N, K]`` bool. A ``test/`` sub-folder holding labelled sub-folders is used
    in preference, so a run's held-out images give the vectors.
    """
    from vaekit.data.files import _read_folder

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path must be a folder of labelled sub-folders; received {str(root)!r}")
    if (root / "test").is_dir() and any(p.is_dir() for p in (root / "test").iterdir()):
        root = root / "test"
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SPLIT_FOLDERS)
    parts = [(p.name, _read_folder(p)) for p in folders]
    parts = [(name, imgs) for name, imgs in parts if imgs is not None]
    if len(parts) < 2:
        raise ValueError(
            f"path must hold at least two sub-folders of images (one per label); received "
            f"{str(root)!r} with {len(parts)}"
        )
    shapes = {imgs.shape[1:] for _, imgs in parts}
    if len(shapes) != 1:
        raise ValueError(f"images in {str(root)!r} must share one size; received {sorted(shapes)}")
    x = torch.from_numpy(np.concatenate([imgs.reshape(len(imgs), -1) for _, imgs in parts]))
    y = torch.cat([torch.full((len(imgs),), k) for k, (_, imgs) in enumerate(parts)])
    masks = y[:, None] == torch.arange(len(parts))
    return x, masks, [name for name, _ in parts]
