"""Figures for a run folder, written as PNG files.

Every ``save_*`` function takes tensors or arrays (never a model), writes one file and
returns its ``Path``. :func:`draw_run_figures` and :func:`draw_loss_curves` draw the set of
figures a run folder holds from its model and its ``metrics.jsonl``. Figures are drawn on a ``matplotlib.figure.Figure`` with an explicit Agg canvas,
not through ``pyplot``: importing or calling vaekit never switches the user's matplotlib
backend, opens a window, or leaves figures in pyplot's global registry (a memory leak in
long training loops).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vaekit._checks import check_choice, check_range
from vaekit._files import atomic_path

if TYPE_CHECKING:
    from vaekit.config import RunConfig

__all__ = [
    "make_grid",
    "save_image_grid",
    "save_reconstructions",
    "save_traversal",
    "save_latent_scatter",
    "save_loss_curves",
    "save_histogram",
    "save_bar",
    "draw_run_figures",
    "draw_loss_curves",
]

_DPI = 100
_SPLIT_COLORS = {"train": "tab:blue", "valid": "tab:orange", "test": "tab:green"}


def _to_numpy(name: str, values, ndim: Sequence[int] | None = None) -> np.ndarray:
    t = torch.as_tensor(values).detach().cpu().to(torch.float32)
    if ndim is not None and t.dim() not in ndim:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, ndim))} dimensions; "
            f"received shape {tuple(t.shape)}"
        )
    return t.numpy()


def _images(name: str, images, ndim: int) -> np.ndarray:
    """Images with or without a channel axis -> float array [..., H, W, C] with C in {1, 3}."""
    t = torch.as_tensor(images).detach().cpu().to(torch.float32)
    if t.dim() == ndim - 1:  # no channel axis: grayscale
        t = t.unsqueeze(-3)
    if t.dim() != ndim or t.shape[-3] not in (1, 3):
        raise ValueError(
            f"{name} must have shape [..., C, H, W] with C 1 or 3 (or [..., H, W]) and "
            f"{ndim} dimensions with C; received shape {tuple(t.shape)}"
        )
    check_range(name, t, 0.0, 1.0, "pass probabilities / means (e.g. sigmoid(logits)), not logits")
    return t.movedim(-3, -1).numpy()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches itself to fig: render with Agg whatever pyplot's backend
    tmp = atomic_path(path)  # written then renamed: no half-drawn PNG, no temporary left behind
    try:
        fig.savefig(tmp, dpi=_DPI, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_grid(
    images, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images into one RGB array ``[H', W', 3]`` with ``padding`` pixels between tiles.

    Args:
        images: ``[N, C, H, W]`` (C 1 or 3) or ``[N, H, W]``, values in [0, 1].
        nrow: images per row (as in ``torchvision.utils.make_grid``); default ``ceil(sqrt(N))``.
        padding: pixels between tiles and around the border.
        pad_value: gray level of the padding (1 = white, so black-background digits stay apart).

    Image ``i`` has its top-left pixel at row ``padding + (i // nrow) * (H + padding)``,
    column ``padding + (i % nrow) * (W + padding)``.
    """
    imgs = _images("images", images, 4)
    n, h, w, _ = imgs.shape
    if n == 0:
        raise ValueError("images must hold at least one image; received shape (0, ...)")
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, axis=-1)
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1; received {nrow}")
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    grid = np.full(
        (padding + rows * (h + padding), padding + ncol * (w + padding), 3),
        pad_value,
        dtype=np.float32,
    )
    for i in range(n):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = imgs[i]
    return grid


def _auto_scale(grid: np.ndarray, target: int = 800) -> int:
    # Integer nearest-neighbour upscaling keeps pixels crisp: a 28x28 digit becomes visible
    # without the blur of interpolation.
    return max(1, min(8, round(target / max(grid.shape[:2]))))


def _save_pixels(grid: np.ndarray, path, title: str | None, scale: int | None) -> Path:
    """Write ``grid`` pixel for pixel (optionally scaled by an integer), title in a band above."""
    scale = _auto_scale(grid) if scale is None else int(scale)
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1; received {scale}")
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    h, w = grid.shape[:2]
    band = 30 if title else 0
    # Widen the canvas (white margins) when the title is wider than the grid: ~7 px a character
    # at 10 pt and 100 dpi.
    width = max(w, 7 * len(title) + 20) if title else w
    fig = Figure(figsize=(width / _DPI, (h + band) / _DPI), dpi=_DPI)
    fig.patch.set_facecolor("white")
    # figimage draws the array unresampled, one array pixel per output pixel.
    fig.figimage(grid, xo=(width - w) // 2, yo=0, origin="upper")
    if title:
        fig.text(0.5, 1 - (band / 2) / (h + band), title, ha="center", va="center", fontsize=10)
    return _save(fig, path)


def save_image_grid(
    images,
    path: str | Path,
    nrow: int | None = None,
    title: str | None = None,
    *,
    padding: int = 2,
    scale: int | None = None,
) -> Path:
    """Save images ``[N, C, H, W]`` or ``[N, H, W]`` (values in [0, 1]) as one tiled PNG.

    Args:
        images: the images; C is 1 (grayscale) or 3 (RGB).
        path: output file.
        nrow: images per row; default ``ceil(sqrt(N))``.
        title: optional text in a band above the grid.
        padding: white pixels between tiles (see :func:`make_grid` for the exact layout).
        scale: integer upscaling factor (nearest neighbour); default: the factor that brings
            the grid's longer side nearest to 800 pixels, between 1 and 8.

    Without a title, the PNG is exactly the :func:`make_grid` array scaled by ``scale``.
    """
    return _save_pixels(make_grid(images, nrow, padding), path, title, scale)


def save_reconstructions(
    x,
    x_rec,
    path: str | Path,
    *,
    ncol: int | None = None,
    title: str | None = "upper row: input · lower row: reconstruction",
    scale: int | None = None,
) -> Path:
    """Save inputs and reconstructions in pairs of rows: inputs above, reconstructions below.

    Args:
        x, x_rec: ``[N, C, H, W]`` or ``[N, H, W]`` with the same shape, values in [0, 1].
        path: output file.
        ncol: images per row; default ``min(N, 16)``.
        title, scale: as for :func:`save_image_grid`.
    """
    a, b = _images("x", x, 4), _images("x_rec", x_rec, 4)
    if a.shape != b.shape:
        raise ValueError(
            f"x and x_rec must have the same shape; received x {tuple(torch.as_tensor(x).shape)}"
            f" and x_rec {tuple(torch.as_tensor(x_rec).shape)}"
        )
    n = a.shape[0]
    ncol = min(ncol, n) if ncol is not None else min(n, 16)
    blocks = []
    for start in range(0, n, ncol):
        chunk = slice(start, start + ncol)
        blank = np.ones((ncol - len(a[chunk]), *a.shape[1:]), dtype=a.dtype)  # pad a short row
        pair = np.concatenate([a[chunk], blank, b[chunk], blank])
        blocks.append(make_grid(torch.from_numpy(pair).movedim(-1, 1), ncol))
    # Stacked pair blocks share their border padding; a thin gray rule marks each new pair.
    rule = np.full((2, blocks[0].shape[1], 3), 0.6, dtype=np.float32)
    grid = np.concatenate([blocks[0], *[x for blk in blocks[1:] for x in (rule, blk)]])
    return _save_pixels(grid, path, title, scale)


def save_traversal(
    images,
    path: str | Path,
    values: Sequence[float] | None = None,
    *,
    dims: Sequence[int] | None = None,
    title: str | None = "latent traversal",
) -> Path:
    """Save a latent traversal: one row per latent dimension, one column per value.

    Args:
        images: ``[D_shown, steps, C, H, W]`` or ``[D_shown, steps, H, W]``, values in [0, 1];
            ``images[i, j]`` decodes z with dimension ``dims[i]`` set to ``values[j]``.
        path: output file.
        values: the traversed values (column labels); default ``0 .. steps - 1``.
        dims: the latent index of each row (row labels ``z{d}``); default ``0 .. D_shown - 1``.
        title: figure title.
    """
    imgs = _images("images", images, 5)
    n_dims, steps, h, w, _ = imgs.shape
    values = list(values) if values is not None else list(range(steps))
    dims = list(dims) if dims is not None else list(range(n_dims))
    if len(values) != steps or len(dims) != n_dims:
        raise ValueError(
            f"images has {n_dims} rows and {steps} columns; received {len(dims)} dims and "
            f"{len(values)} values"
        )
    flat = torch.from_numpy(imgs.reshape(-1, h, w, imgs.shape[-1])).movedim(-1, 1)
    pad = 2
    grid = make_grid(flat, steps, pad)
    cell = 0.6  # inches per tile: readable for 28..64 pixel images
    fig = Figure(figsize=(1.0 + cell * steps, 0.8 + cell * n_dims), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([pad + j * (w + pad) + w / 2 - 0.5 for j in range(steps)])
    ax.set_xticklabels([f"{v:.3g}" if isinstance(v, float) else str(v) for v in values])
    ax.set_yticks([pad + i * (h + pad) + h / 2 - 0.5 for i in range(n_dims)])
    ax.set_yticklabels([f"z{d}" for d in dims])
    ax.tick_params(length=0, labelsize=8)
    ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _pca2(z: np.ndarray) -> tuple[np.ndarray, tuple[str, str]]:
    """Project onto the first two principal components (exact SVD, so deterministic)."""
    zc = z - z.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(zc.astype(np.float64), full_matrices=False)
    var = s**2 / max((s**2).sum(), np.finfo(np.float64).tiny)
    return zc @ vt[:2].T, (f"PC1 ({var[0]:.0%} of variance)", f"PC2 ({var[1]:.0%} of variance)")


def save_latent_scatter(
    z,
    labels,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Scatter the latent codes in 2-D, coloured by label.

    Args:
        z: ``[N, D]`` codes (e.g. posterior means). D = 2 is plotted as is (axes ``z1``,
            ``z2``); D > 2 is projected on its first two principal components (``PC1``, ``PC2``,
            with their share of variance); D = 1 is plotted against zero.
        labels: ``[N]`` or ``None``. Up to 20 distinct integer labels get a legend; other
            labels (many classes, continuous factors) a colour bar.
        path: output file.
        title: figure title.
    """
    zs = _to_numpy("z", z, (2,))
    n, d = zs.shape
    if d > 2:
        xy, (xl, yl) = _pca2(zs)
    elif d == 2:
        xy, (xl, yl) = zs, ("z1", "z2")
    else:
        xy, (xl, yl) = np.concatenate([zs, np.zeros_like(zs)], 1), ("z1", "(1-D latent)")
    fig = Figure(figsize=(6, 5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    size = 4 if n > 2000 else 10
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        lab = _to_numpy("labels", labels, (1,))
        if lab.shape[0] != n:
            raise ValueError(f"labels must have shape [{n}] to match z; received {lab.shape}")
        classes = np.unique(lab)
        if np.all(classes == np.round(classes)) and len(classes) <= 20:
            cmap = "tab10" if len(classes) <= 10 else "tab20"
            for k, c in enumerate(classes):
                m = lab == c
                ax.scatter(
                    xy[m, 0],
                    xy[m, 1],
                    s=size,
                    alpha=0.7,
                    linewidths=0,
                    color=_cmap_color(cmap, k),
                    label=str(int(c)),
                )
            ax.legend(
                title="label",
                markerscale=3 if size < 10 else 2,
                fontsize=8,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
            )
        else:
            sc = ax.scatter(
                xy[:, 0], xy[:, 1], c=lab, s=size, alpha=0.7, cmap="viridis", linewidths=0
            )
            fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title or f"latent codes (N={n}, D={d})", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _cmap_color(name: str, k: int):
    return colormaps[name](k % colormaps[name].N)


def save_loss_curves(
    records: Iterable[Mapping],
    path: str | Path,
    keys: Sequence[str] = ("loss", "rec", "kl", "elbo"),
    *,
    x: str = "auto",
    title: str | None = None,
) -> Path:
    """Plot metrics per split (train, valid, ...) against epoch or step, one panel per key.

    Args:
        records: rows of ``metrics.jsonl``: ``{"step": .., "epoch": .., "split": "train" |
            "valid", "loss": .., ...}``. Rows without a ``split`` count as ``"train"``.
        path: output file.
        keys: metrics to draw; keys found in no row are skipped (at least one must exist).
        x: ``"epoch"``, ``"step"`` or ``"auto"`` (step when every row has one, else epoch).
            Rows that share a split and an x value are averaged (per-batch rows -> one point
            per epoch).
        title: figure title.
    """
    rows = list(records)
    check_choice("x", x, ("auto", "epoch", "step"))
    if x == "auto":
        x = "step" if rows and all("step" in r for r in rows) else "epoch"
    present = [k for k in keys if any(_is_number(r.get(k)) for r in rows)]
    if not present:
        numeric = sorted({k for r in rows for k, v in r.items() if _is_number(v)} - {x})
        raise ValueError(
            f"none of keys {list(keys)} holds a number in records; numeric keys present: {numeric}"
        )
    # series[key][split][x] -> list of values
    series: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if not _is_number(r.get(x)):
            continue
        for k in present:
            if _is_number(r.get(k)):
                series[k][str(r.get("split", "train"))][r[x]].append(float(r[k]))

    ncols = min(len(present), 2)
    nrows = math.ceil(len(present) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 3.5 * nrows), dpi=_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, k in zip(axes, present, strict=False):
        for split, points in series[k].items():
            xs = sorted(points)
            ys = [float(np.mean(points[v])) for v in xs]
            style = "-" if len(xs) > 30 else "-o"
            ax.plot(xs, ys, style, ms=3, lw=1.5, label=split, color=_SPLIT_COLORS.get(split))
        ax.set_title(k, fontsize=10)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{k} (nats)" if k in ("loss", "rec", "kl", "elbo", "nll") else k)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def save_histogram(
    values,
    path: str | Path,
    title: str | None = None,
    xlabel: str | None = None,
    *,
    bins: int | str = "auto",
) -> Path:
    """Histogram of ``values`` (any shape, flattened), e.g. per-example NLL or code usage."""
    v = _to_numpy("values", values).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("values must hold at least one finite number; received none")
    fig = Figure(figsize=(6, 4), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.hist(v, bins=bins, color="tab:blue", alpha=0.85, edgecolor="white", linewidth=0.5)
    ax.set_xlabel(xlabel or "value")
    ax.set_ylabel("count")
    ax.set_title(title or f"histogram (N={v.size})", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def save_bar(
    values,
    path: str | Path,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    *,
    tick_labels: Sequence[str] | None = None,
) -> Path:
    """Bar chart of a 1-D ``values`` ``[K]``, bar ``i`` at x = i (e.g. KL per latent dim, nats)."""
    v = _to_numpy("values", values, (1,))
    fig = Figure(
        figsize=(max(4.0, min(12.0, 0.25 * v.size + 2)), 4), dpi=_DPI, layout="constrained"
    )
    ax = fig.add_subplot()
    idx = np.arange(v.size)
    ax.bar(idx, v, color="tab:blue", width=0.8)
    if tick_labels is not None:
        if len(tick_labels) != v.size:
            raise ValueError(
                f"tick_labels must have {v.size} entries to match values; received "
                f"{len(tick_labels)}"
            )
        ax.set_xticks(idx, list(tick_labels), rotation=90 if v.size > 20 else 0, fontsize=8)
    elif v.size <= 40:
        ax.set_xticks(idx)
    ax.set_xlabel(xlabel or "index")
    ax.set_ylabel(ylabel or "value")
    ax.set_title(title or "", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


# ---------------------------------------------------------------------- a run folder's figures


@torch.no_grad()
def draw_run_figures(
    run_dir: Path,
    model,
    cfg: RunConfig,
    splits,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    result: Mapping | None = None,
) -> None:
    """Draw a run's evaluation figures into ``run_dir`` from its model and evaluation data.

    ``x`` is the evaluation split as the model takes it, ``labels`` its labels (or None),
    ``result`` the eval dict. A VAE gets latent.png (posterior means, or their first two
    principal components), loss_curves.png, kl_per_dim.png (KL per latent dimension, nats,
    when ``result`` has it) and, for images, samples.png (E[x | z], z ~ p(z), seeded by
    ``cfg.train.seed``), reconstructions.png and traversal.png (8 latent dimensions of
    largest posterior-mean variance, from -3 to 3); with a categorical latent also
    categories.png (one row of samples per category). A VQ-VAE gets loss_curves.png,
    reconstructions.png, code_usage_hist.png and samples.png (with a code prior); a
    conditional model loss_curves.png, latent.png, reconstructions.png and one row of
    samples per label.
    """
    from vaekit.discrete import category_rows, has_categorical_latent
    from vaekit.evaluate import _to_unit, posterior_means
    from vaekit.models.build import model_kind

    image_shape = tuple(splits.image_shape)
    device = next(model.parameters()).device

    def images(t: torch.Tensor) -> torch.Tensor:
        return _to_unit(model, t.float().cpu()).reshape(t.shape[0], *image_shape)

    if model_kind(cfg.model).quantized:
        return _draw_vq_figures(run_dir, model, cfg, x, images, result)
    if getattr(model, "given", None) is not None:
        return _draw_conditional_figures(run_dir, model, cfg, splits, x, labels, images)
    if cfg.model.model == "m2":
        return _draw_m2_figures(run_dir, model, cfg, splits, x, images, result)

    means = posterior_means(model, x)
    save_latent_scatter(
        means[:5000], None if labels is None else labels[:5000], run_dir / "latent.png"
    )
    draw_loss_curves(run_dir)
    if result and "kl_per_dim" in result:
        save_bar(
            result["kl_per_dim"],
            run_dir / "kl_per_dim.png",
            "KL per latent dimension",
            "latent dimension",
            "KL (nats)",
        )
    if len(image_shape) != 3:
        return  # not images: no sample grids
    torch.manual_seed(cfg.train.seed)
    save_image_grid(
        images(model.sample(64)), run_dir / "samples.png", title="samples: E[x | z], z ~ p(z)"
    )
    xs = x[:16].to(device)
    save_reconstructions(images(xs), images(model.reconstruct(xs)), run_dir / "reconstructions.png")
    # traverse the 8 dimensions that carry the most information, from -3 to 3 around the mean code
    order = means.var(0).argsort(descending=True)[:8]
    values = torch.linspace(-3, 3, 9)
    z = means[:1].repeat(len(order), len(values), 1)
    for i, d in enumerate(order):
        z[i, :, d] = values
    decoded = model.decode(z.to(device)).mean
    trav = _to_unit(model, decoded.cpu()).reshape(len(order), len(values), *image_shape)
    save_traversal(trav, run_dir / "traversal.png", values.tolist(), dims=order.tolist())
    if has_categorical_latent(model):
        torch.manual_seed(cfg.train.seed)
        rows = category_rows(model, 8)  # [C, n, ...]; n = 1: the code is c alone
        alone = rows.shape[1] == 1
        save_image_grid(
            images(rows.flatten(0, 1)),
            run_dir / "categories.png",
            nrow=rows.shape[0] if alone else rows.shape[1],
            title="E[x | c], one image per category"
            if alone
            else "one row per category of c (variable 0); columns share the rest of the code",
        )


def _draw_vq_figures(run_dir: Path, model, cfg: RunConfig, x, images, result) -> None:
    device = next(model.parameters()).device
    draw_loss_curves(run_dir)
    xs = x[:16].to(device)
    save_reconstructions(images(xs), images(model.reconstruct(xs)), run_dir / "reconstructions.png")
    if result and "code_counts" in result:
        save_bar(
            result["code_counts"],
            run_dir / "code_usage_hist.png",
            f"code usage on the test images (perplexity {result['perplexity']:.1f})",
            "code index",
            "count",
        )
    if model.prior is not None:
        torch.manual_seed(cfg.train.seed)
        save_image_grid(
            images(model.sample(64)), run_dir / "samples.png", title="samples: codes ~ prior"
        )


def _draw_conditional_figures(run_dir: Path, model, cfg: RunConfig, splits, x, labels, images):
    from vaekit.evaluate import posterior_means

    device = next(model.parameters()).device
    draw_loss_curves(run_dir)
    if labels is None:
        return
    means = posterior_means(model, x, labels=labels)
    save_latent_scatter(means[:5000], labels[:5000], run_dir / "latent.png")
    if len(tuple(splits.image_shape)) != 3:
        return
    xs, ys = x[:16].to(device), labels[:16].to(device)
    save_reconstructions(
        images(xs), images(model.reconstruct(xs, ys)), run_dir / "reconstructions.png"
    )
    torch.manual_seed(cfg.train.seed)
    classes = model.labels.num_classes
    rows = torch.cat([model.sample(8, label=c) for c in range(classes)])
    save_image_grid(
        images(rows), run_dir / "samples.png", nrow=8, title="samples: one row per label"
    )


def save_analogies(images, path: str | Path, title: str | None = None) -> Path:
    """Save an M2 "analogies" grid: ``images [rows, C, (ch,) H, W]`` in [0, 1], row i one
    test example's z, column c the class y = c (Kingma et al. 2014, figure 1)."""
    imgs = _images("images", images, 5)
    rows, classes, h, w, _ = imgs.shape
    flat = torch.from_numpy(imgs.reshape(-1, h, w, imgs.shape[-1])).movedim(-1, 1)
    pad = 2
    width = max(4.5, 1.0 + 0.6 * classes)  # room for the title
    fig = Figure(figsize=(width, 1.0 + 0.6 * rows), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(make_grid(flat, classes, pad), interpolation="nearest")
    ax.set_xticks([pad + j * (w + pad) + w / 2 - 0.5 for j in range(classes)])
    ax.set_xticklabels([f"y={c}" for c in range(classes)])
    ax.set_yticks([])
    ax.tick_params(length=0, labelsize=8)
    ax.xaxis.tick_top()
    ax.set_ylabel("z of one test example per row", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def save_confusion(matrix, path: str | Path, title: str | None = None) -> Path:
    """Save a confusion matrix ``[C, C]`` of counts (rows: true class, columns: predicted),
    each cell annotated with its count, the colour its share of the row."""
    m = _to_numpy("matrix", matrix, (2,)).astype(np.float64)
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square [C, C]; received shape {m.shape}")
    c = m.shape[0]
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = max(4.5, 1.5 + 0.45 * c)  # room for the title
    fig = Figure(figsize=(side, side - 0.3), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "", fontsize=10)
    return _save(fig, path)


def _draw_m2_figures(run_dir: Path, model, cfg: RunConfig, splits, x, images, result) -> None:
    """M2: loss curves, the confusion matrix (eval ``confusion``), and for images the
    analogies grid (10 test examples' z, every class), samples per class, reconstructions."""
    device = next(model.parameters()).device
    draw_loss_curves(run_dir)
    if result and "confusion" in result:
        acc = result.get("accuracy", float("nan"))
        save_confusion(
            result["confusion"],
            run_dir / "confusion.png",
            f"test confusion matrix of argmax q(y|x)\n(accuracy {acc:.4f})",
        )
    if len(tuple(splits.image_shape)) != 3:
        return
    xs = x[:10].to(device)
    grid = model.analogies(xs)  # [10, C, D]
    rows, classes = grid.shape[:2]
    save_analogies(
        images(grid.reshape(rows * classes, -1)).reshape(rows, classes, *splits.image_shape),
        run_dir / "analogies.png",
        "fix z (one test example per row),\nvary y: E[x | y, z]",
    )
    save_reconstructions(images(xs), images(model.reconstruct(xs)), run_dir / "reconstructions.png")
    torch.manual_seed(cfg.train.seed)
    samples = torch.cat([model.sample(8, label=c) for c in range(model.num_classes)])
    save_image_grid(
        images(samples), run_dir / "samples.png", nrow=8, title="samples: one row per class y"
    )


_COMMON_KEYS = {"loss", "rec", "kl", "elbo", "beta", "seconds", "epoch", "step"}


def draw_loss_curves(run_dir: Path) -> None:
    """Draw ``run_dir/metrics.jsonl``'s train and valid rows against the epoch.

    loss_curves.png holds loss, rec, kl and elbo (nats); terms_curves.png (when there are any)
    up to 12 of the objective's own numeric terms (tc, lambda, perplexity, ...), those that
    change over the run first. Nothing is
    drawn when there are no such rows.
    """
    epoch_rows = [r for r in _read_metrics(run_dir) if r.get("split") in ("train", "valid")]
    if epoch_rows:
        save_loss_curves(epoch_rows, run_dir / "loss_curves.png", x="epoch")
        extra = sorted(
            {
                k
                for r in epoch_rows
                for k, v in r.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            - _COMMON_KEYS
        )
        # terms that change before constant ones (weights), up to 12 panels
        extra.sort(key=lambda k: len({r[k] for r in epoch_rows if k in r}) < 2)
        if extra:
            save_loss_curves(
                epoch_rows,
                run_dir / "terms_curves.png",
                keys=extra[:12],
                x="epoch",
                title="the objective's own terms, per epoch",
            )


def _read_metrics(run_dir: Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` (none if it is missing; cut lines skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return rows
