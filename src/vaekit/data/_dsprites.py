"""dSprites (Matthey et al. 2017), generated procedurally and rendered lazily.

737,280 binary 64x64 images: every combination of five ground-truth factors,

=============  ====  ======================================================================
factor         size  value (:meth:`DSprites.factor_values`)
=============  ====  ======================================================================
shape          3     1 square, 2 ellipse, 3 heart (as the original's ``latents_values``)
scale          6     ``linspace(0.5, 1, 6)``
orientation    40    ``linspace(0, 2 pi, 40)`` radians, counter-clockwise as displayed
posX           32    ``linspace(0, 1, 32)``, left to right
posY           32    ``linspace(0, 1, 32)``, top to bottom (image rows)
=============  ====  ======================================================================

Image ``i`` has the factors of ``np.unravel_index(i, (3, 6, 40, 32, 32))``: the original's
row-major order, so indices, factor classes and metrics code carry over.

**Why lazy.** All 737,280 images as float32 would take 12 GB; even packed bits (``np.packbits``)
take 377 MB and must be unpacked per batch. Here nothing of that size exists: :class:`DSprites`
holds a bank of 2,880 small masks (every shape, scale and orientation at both sub-pixel phases
of the position grid, 17x17 pixels each: 3.3 MB as float32, built once per process in ~0.2 s)
and renders a batch of indices by scattering masks to integer offsets, vectorised with torch,
on the CPU (~600,000 images/s on one core) or on the device the bank was moved to. A split
(:class:`DSpritesSplit`) stores only its indices and labels (16 bytes per image); its ``x`` is
a :class:`LazyImages` that renders the rows it is indexed with. Rendering is exact and
deterministic: the bank is computed once in float64 NumPy, placement is integer arithmetic.

**Geometry** (pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``). Position value ``p`` puts the
shape's centroid at ``8.75 + 46.5 p`` pixels (centres 1.5 px apart, 8.75 px from each border);
every shape at scale 1 lies within 8.5 px of its centroid at every orientation, so every image
is inside the frame (checked over the whole bank when it is built). A pixel is on when at
least half of its 4x4 sub-samples fall inside the shape. Shapes at scale 1: a square of side
12.0, an ellipse with semi-axes 8.5 and 4.25 (long axis horizontal at orientation 0), a heart
(a diamond with a half-disc on each upper side, point down at orientation 0) of width 15.6.
The outlines are not pixel-identical to the original's vector art. As in the original, the
orientation values include both 0 and 2 pi, so orientation 39 renders exactly as orientation 0,
and the square (90 degree) and ellipse (180 degree) symmetries make other orientations
near-duplicates: an orientation code is only identifiable for the heart.

>>> from vaekit.data import DSprites, dsprites
>>> splits = dsprites()                                  # lazy: 12 MB of indices, labels
>>> x, y = next(splits.train.batches(256))              # x [256, 4096] float32 in {0, 1}
>>> ds = DSprites()
>>> f = ds.sample_fixed_factor(64, "scale")              # [64, 5], one shared scale
>>> imgs = ds.render(f)                                  # [64, 1, 64, 64]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from vaekit._checks import check_choice
from vaekit.data.dataset import Dataset, DataSplits

__all__ = [
    "DSprites",
    "DSpritesSplit",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "LazyImages",
    "MAX_DENSE_BYTES",
    "N_IMAGES",
    "dsprites",
]

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
N_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZE = 64
IMAGE_SHAPE = (1, IMAGE_SIZE, IMAGE_SIZE)
FACTOR_VALUES = (
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2.0 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
# Refuse to render more than this into one dense tensor (LazyImages.dense / reshape): 65,536
# images. The whole data set would be 12 GB.
MAX_DENSE_BYTES = 1 << 30

_STRIDES = tuple(math.prod(FACTOR_SIZES[k + 1 :]) for k in range(5))  # (245760, 40960, 1024, 32, 1)
_D = IMAGE_SIZE * IMAGE_SIZE

# Geometry in pixels. Centre of position class k: (35 + 6 k) / 4 = 8.75 + 1.5 k, so its
# fractional part alternates 0.75 (k even, phase 0) and 0.25 (k odd, phase 1).
_RADIUS = 8.5  # every shape at scale 1 lies within this distance of its centroid
_PHASES = (0.75, 0.25)
_HALF = 9  # a mask patch spans pixels floor(centre) - 9 .. floor(centre) + 9
_PATCH = 2 * _HALF + 1
_SUB = 4  # sub-samples per pixel and axis
_ELLIPSE_MINOR = 0.5  # minor / major semi-axis
# Heart: the diamond |u| + |q| <= d with a half-disc of radius d / sqrt 2 on each upper side;
# its centroid is at q = _KAPPA * d and its farthest point (the tip) at distance (1 + _KAPPA) d.
_KAPPA = (math.pi / 4 + 1 / 3) / (2 + math.pi / 2)
_HEART_D = _RADIUS / (1 + _KAPPA)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u right, v up; pixels, centroid at 0, scale 1) lie in the shape."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= _RADIUS / math.sqrt(2)
    if shape == 1:
        return (u / _RADIUS) ** 2 + (v / (_RADIUS * _ELLIPSE_MINOR)) ** 2 <= 1
    d = _HEART_D
    q = v + _KAPPA * d
    a = np.abs(u)
    return (a + np.abs(q) <= d) | ((a - d / 2) ** 2 + (q - d / 2) ** 2 <= d * d / 2)


def _rasterise() -> np.ndarray:
    """``[3, 6, 40, 2, 2, 19, 19]`` bool: shape, scale, orientation, y phase, x phase, patch.

    Patch pixel ``(i, j)`` is image pixel ``(floor(cy) - 9 + i, floor(cx) - 9 + j)`` for a
    centre ``(cx, cy)`` of those phases.
    """
    sub = (np.arange(_SUB) + 0.5) / _SUB
    base = (np.arange(_PATCH)[:, None] + sub[None, :]).reshape(-1) - _HALF
    offsets = np.stack([base - phase for phase in _PHASES])  # sample - centre, per phase
    dy = offsets[:, None, :, None]  # image rows (down): [y phase, 1, rows, 1]
    dx = offsets[None, :, None, :]  # [1, x phase, 1, cols]
    theta = np.mod(FACTOR_VALUES[2], 2 * np.pi)[:, None, None, None, None]  # 2 pi -> 0 exactly
    cos, sin = np.cos(theta), np.sin(theta)
    bank = np.zeros((3, 6, 40, 2, 2, _PATCH, _PATCH), dtype=bool)
    for s in range(3):
        for c, scale in enumerate(FACTOR_VALUES[1]):
            # rotate the sample points by -theta (y up), then undo the scale
            x, y = dx, -dy
            u = (cos * x + sin * y) / scale
            v = (-sin * x + cos * y) / scale
            hits = _inside(s, u, v)  # [40, 2, 2, 19*SUB, 19*SUB]
            hits = hits.reshape(40, 2, 2, _PATCH, _SUB, _PATCH, _SUB).sum(axis=(4, 6))
            bank[s, c] = 2 * hits >= _SUB * _SUB
    return bank


@functools.lru_cache(maxsize=1)
def _mask_bank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rendering tables, built once per process (~0.2 s) and checked.

    Returns:
        ``masks`` ``[3, 6, 40, 2, 2, H, W]`` bool, the rasterised patches trimmed to the rows
        and columns any mask uses (per phase); ``row0`` and ``col0`` ``[32]`` int64, the image
        pixel of patch row / column 0 for each posY / posX class.

    Raises:
        AssertionError: a patch would reach outside the 64 x 64 frame at some position, or a
            mask is empty (cannot happen with the constants above; guards edits to them).
    """
    full = _rasterise()
    if not full.any(axis=(5, 6)).all():
        raise AssertionError("an empty dSprites mask")
    rows_used = full.any(axis=(0, 1, 2, 4, 6))  # [y phase, patch row]
    cols_used = full.any(axis=(0, 1, 2, 3, 5))  # [x phase, patch col]
    spans = []
    for used in (rows_used, cols_used):
        lo = [int(np.flatnonzero(u)[0]) for u in used]
        hi = [int(np.flatnonzero(u)[-1]) for u in used]
        spans.append((lo, max(h - l + 1 for l, h in zip(lo, hi, strict=True))))
    (row_lo, h), (col_lo, w) = spans
    masks = np.zeros((3, 6, 40, 2, 2, h, w), dtype=bool)
    for py in range(2):
        for px in range(2):
            part = full[:, :, :, py, px, row_lo[py] : row_lo[py] + h, col_lo[px] : col_lo[px] + w]
            masks[:, :, :, py, px, : part.shape[3], : part.shape[4]] = part
    k = np.arange(32)
    floor_centre = (35 + 6 * k) // 4  # centre 8.75 + 1.5 k = (35 + 6 k) / 4
    row0 = floor_centre - _HALF + np.array(row_lo)[k % 2]
    col0 = floor_centre - _HALF + np.array(col_lo)[k % 2]
    for start, size in ((row0, h), (col0, w)):
        if start.min() < 0 or (start + size).max() > IMAGE_SIZE:
            raise AssertionError("a dSprites mask patch leaves the 64 x 64 frame")
    for a in (masks, row0, col0):
        a.setflags(write=False)
    return masks, row0, col0


def _as_long(name: str, value: object) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers; received dtype {t.dtype}")
    return t.long()


def _factor_column(factor: int | str) -> int:
    if isinstance(factor, str):
        check_choice("factor", factor, FACTOR_NAMES)
        return FACTOR_NAMES.index(factor)
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer):
        raise ValueError(f"factor must be a name {FACTOR_NAMES} or 0-4; received {factor!r}")
    if not 0 <= factor < 5:
        raise ValueError(f"factor must be in [0, 5) or a name {FACTOR_NAMES}; received {factor}")
    return int(factor)


class DSprites:
    """The dSprites generator: the factor space, and rendering of any set of images.

    Class attributes (no instance needed): ``factors`` (``{"shape": 3, "scale": 6,
    "orientation": 40, "posX": 32, "posY": 32}``, in index order), ``factor_names``,
    ``factor_sizes``, ``shape_names``, ``n_images`` (737,280), ``image_shape`` ``(1, 64, 64)``.

    Factor tensors are ``[..., 5]`` int64 classes in the order of ``factor_names``; sampling
    is on the CPU. Rendering happens on the device of the mask bank (:meth:`to`).

    Args:
        device: where to keep the mask bank (3.3 MB) and render; default CPU.
    """

    factors = dict(zip(FACTOR_NAMES, FACTOR_SIZES, strict=True))
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    shape_names = SHAPE_NAMES
    n_images = N_IMAGES
    image_shape = IMAGE_SHAPE

    def __init__(self, device: torch.device | str | None = None) -> None:
        masks, row0, col0 = _mask_bank()
        h, w = masks.shape[-2:]
        rel = torch.arange(h)[:, None] * IMAGE_SIZE + torch.arange(w)[None, :]
        tables = {
            "_bank": torch.from_numpy(masks.reshape(-1, h * w).astype(np.float32)),
            "_corner0": torch.from_numpy(row0 * IMAGE_SIZE),  # [posY] -> flat offset
            "_col0": torch.from_numpy(col0.copy()),  # [posX] -> column
            "_rel": rel.reshape(-1),  # patch pixel -> flat offset
        }
        for name, t in tables.items():
            setattr(self, name, t.to(device) if device is not None else t)

    @property
    def device(self) -> torch.device:
        return self._bank.device

    def to(self, device: torch.device | str) -> DSprites:
        """This generator with its mask bank on ``device`` (self if already there)."""
        if torch.device(device) == self.device:
            return self
        out = object.__new__(DSprites)
        for name in ("_bank", "_corner0", "_col0", "_rel"):
            setattr(out, name, getattr(self, name).to(device))
        return out

    def __len__(self) -> int:
        return N_IMAGES

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.factors.items())
        return f"DSprites({N_IMAGES} images 1x64x64; {sizes}; device={self.device})"

    # -- factors <-> indices ----------------------------------------------------------------

    @staticmethod
    def index_to_factors(indices: object) -> torch.Tensor:
        """Factor classes of images: ``[...]`` indices -> ``[..., 5]`` int64 (same device).

        Raises:
            ValueError: an index outside [0, 737280) or a non-integer dtype.
        """
        idx = _as_long("indices", indices)
        if idx.numel() and not bool(((idx >= 0) & (idx < N_IMAGES)).all()):
            raise ValueError(f"indices must be in [0, {N_IMAGES}); received out-of-range values")
        strides = torch.tensor(_STRIDES, device=idx.device)
        sizes = torch.tensor(FACTOR_SIZES, device=idx.device)
        return torch.div(idx[..., None], strides, rounding_mode="floor") % sizes

    @staticmethod
    def factors_to_index(factors: object) -> torch.Tensor:
        """Indices of images: ``[..., 5]`` int factor classes -> ``[...]`` int64 (same device).

        Raises:
            ValueError: the last axis is not 5 long, or a class is out of range.
        """
        f = _as_long("factors", factors)
        if f.ndim == 0 or f.shape[-1] != 5:
            raise ValueError(f"factors must have shape [..., 5]; received {tuple(f.shape)}")
        sizes = torch.tensor(FACTOR_SIZES, device=f.device)
        bad = ((f < 0) | (f >= sizes)).reshape(-1, 5).any(0)
        if bool(bad.any()):
            k = int(bad.nonzero()[0])
            col = f[..., k]
            raise ValueError(
                f"factor {FACTOR_NAMES[k]!r} (column {k}) must be in range [0, {FACTOR_SIZES[k]}); "
                f"received values from {int(col.min())} to {int(col.max())}"
            )
        return (f * torch.tensor(_STRIDES, device=f.device)).sum(-1)

    @staticmethod
    def factor_values(factors: object) -> torch.Tensor:
        """The factors' values, ``[..., 5]`` classes -> ``[..., 5]`` float64 (same device).

        Shape 1/2/3 (square/ellipse/heart), scale in [0.5, 1], orientation in radians
        [0, 2 pi], posX and posY in [0, 1]: the original's ``latents_values`` without colour.
        """
        f = _as_long("factors", factors)
        DSprites.factors_to_index(f)  # validates
        cols = [torch.as_tensor(FACTOR_VALUES[k], device=f.device)[f[..., k]] for k in range(5)]
        return torch.stack(cols, -1)

    # -- sampling for the metrics ------------------------------------------------------------

    @staticmethod
    def sample_factors(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, 5]`` int64 factor classes, each factor independently uniform (CPU)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative integer; received {n!r}")
        return DSprites.index_to_factors(torch.randint(N_IMAGES, (int(n),), generator=generator))

    @staticmethod
    def sample_fixed_factor(
        n: int, factor: int | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[n, 5]`` factor classes sharing one uniformly drawn class of ``factor``.

        The other factors are drawn independently per row: the batches of the beta-VAE
        (Higgins et al. 2017) and FactorVAE (Kim & Mnih 2018) scores.

        Args:
            n: rows.
            factor: a name in ``factor_names`` or its column 0-4.
            generator: source of randomness (CPU); None uses torch's global generator.
        """
        k = _factor_column(factor)
        f = DSprites.sample_factors(n, generator)
        f[:, k] = torch.randint(FACTOR_SIZES[k], (1,), generator=generator)
        return f

    # -- rendering --------------------------------------------------------------------------

    def images(self, indices: object) -> torch.Tensor:
        """Render ``[...]`` indices as flat images ``[..., 4096]`` float32 in {0, 1}."""
        idx = _as_long("indices", indices).to(self.device)
        shape = idx.shape
        f = self.index_to_factors(idx.reshape(-1))
        b = f.shape[0]
        # mask id: (((shape * 6 + scale) * 40 + orientation) * 2 + y phase) * 2 + x phase
        mask = (f[:, 0] * 6 + f[:, 1]) * 40 + f[:, 2]
        mask = (mask * 2 + f[:, 4] % 2) * 2 + f[:, 3] % 2
        # Each patch lies inside the frame (checked when the tables are built), so its pixels
        # go to distinct places: a plain scatter, exact on any device.
        where = (self._corner0[f[:, 4]] + self._col0[f[:, 3]])[:, None] + self._rel
        out = torch.zeros(b, _D, device=self.device)
        out.scatter_(1, where, self._bank[mask])
        return out.reshape(*shape, _D)

    def render(self, what: object) -> torch.Tensor:
        """Render images ``[N, 1, 64, 64]`` float32 from factors ``[N, 5]`` or indices ``[N]``.

        A 2-D input is read as factor classes, a 0-D or 1-D one as image indices.
        """
        t = _as_long("what", what)
        if t.ndim == 2:
            t = self.factors_to_index(t)
        elif t.ndim > 1:
            raise ValueError(
                f"render takes factors [N, 5] or indices [N]; received shape {tuple(t.shape)}"
            )
        return self.images(t.reshape(-1)).reshape(-1, *IMAGE_SHAPE)


class LazyImages:
    """A read-only ``[N, 4096]`` float32 tensor of dSprites images, rendered on indexing.

    Indexing (``x[i]``, ``x[a:b]``, ``x[index_tensor]``, ``x[bool_mask]``, ``x[rows, cols]``)
    renders just the rows asked for and returns an ordinary tensor. ``shape``, ``len``,
    ``device``, ``dtype`` and :meth:`to` are cheap. Everything else needs the whole array:
    :meth:`dense`, :meth:`reshape` and ``np.asarray`` render it all, and refuse when that
    would take more than ``max_bytes`` (default :data:`MAX_DENSE_BYTES`, 1 GiB = 65,536
    images); a full training split would be ~11 GB. Iterate with ``Dataset.batches`` instead.

    Args:
        indices: ``[N]`` int64 dSprites indices of the rows.
        renderer: the :class:`DSprites` that draws them (its device is the tensor's device).
    """

    dtype = torch.float32
    ndim = 2

    def __init__(self, indices: torch.Tensor, renderer: DSprites | None = None) -> None:
        renderer = renderer if renderer is not None else DSprites()
        indices = _as_long("indices", indices)
        if indices.ndim != 1:
            raise ValueError(f"indices must have shape [N]; received {tuple(indices.shape)}")
        self.indices = indices.to(renderer.device)
        self.renderer = renderer

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.indices.shape[0], _D))

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return 2

    def numel(self) -> int:
        return self.indices.shape[0] * _D

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __repr__(self) -> str:
        return f"LazyImages(shape={tuple(self.shape)}, device={self.device})"

    def __getitem__(self, key) -> torch.Tensor:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        rows = self.indices[key]
        images = self.renderer.images(rows)
        return images[(slice(None),) * rows.ndim + rest] if rest else images

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the indices and the renderer to ``device`` (still lazy), or with a ``dtype``
        other than float32, render densely (see :meth:`dense`)."""
        if dtype is not None and dtype != torch.float32:
            return self.dense().to(device=device, dtype=dtype)
        if device is None or torch.device(device) == self.device:
            return self
        return LazyImages(self.indices.to(device), self.renderer.to(device))

    def dense(self, max_bytes: int | None = None, chunk: int = 8192) -> torch.Tensor:
        """Render every row into one ``[N, 4096]`` float32 tensor.

        Args:
            max_bytes: refuse beyond this size; default :data:`MAX_DENSE_BYTES` (read at call
                time); pass ``math.inf`` to lift the limit.
            chunk: rows rendered per step (bounds the temporary memory).

        Raises:
            ValueError: the tensor would exceed ``max_bytes``.
        """
        limit = MAX_DENSE_BYTES if max_bytes is None else max_bytes
        need = self.numel() * 4
        if need > limit:
            raise ValueError(
                f"rendering all {len(self)} dSprites images of this split at once would take "
                f"{need / 2**30:.1f} GiB (limit {limit / 2**30:.1f} GiB); iterate with "
                "split.batches(...), take split.subset(n) first, load dsprites(n=...) for a "
                "smaller set, or pass max_bytes=math.inf"
            )
        out = torch.empty(len(self), _D, device=self.device)
        for i in range(0, len(self), chunk):
            out[i : i + chunk] = self.renderer.images(self.indices[i : i + chunk])
        return out

    def reshape(self, *shape) -> torch.Tensor:
        """The dense tensor (:meth:`dense`, size-limited), reshaped."""
        return self.dense().reshape(*shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.dense().cpu().numpy()
        return a if dtype is None else a.astype(dtype)


class DSpritesSplit(Dataset):
    """One dSprites split: a :class:`~vaekit.data.Dataset` whose ``x`` is :class:`LazyImages`.

    ``len``, ``batches`` (each batch rendered as it is drawn; same order and generator use as
    any Dataset), ``eval_view`` (the split itself: the images are already binary and fixed)
    and ``to(device)`` (render on that device) work as for in-memory data. ``y`` is ``[N]``
    int64: the shape class (0 square, 1 ellipse, 2 heart), or the dSprites index with
    ``dsprites(labels="index")``. Rows are in a fixed seeded random order.

    Code that replaces ``x`` by a plain tensor (e.g. the trainer's ``max_train_examples``, which
    takes ``x[:m]``) gets a split without the factor methods below.
    """

    def _lazy(self) -> LazyImages:
        if not isinstance(self.x, LazyImages):
            raise TypeError(
                "this dSprites split holds rendered images, not indices: its factors are unknown"
            )
        return self.x

    @property
    def indices(self) -> torch.Tensor:
        """``[N]`` int64 dSprites indices of the rows."""
        return self._lazy().indices

    @property
    def renderer(self) -> DSprites:
        return self._lazy().renderer

    def factors(self) -> torch.Tensor:
        """``[N, 5]`` int64 factor classes of the rows (see :attr:`DSprites.factors`)."""
        return DSprites.index_to_factors(self.indices)

    def factor_values(self) -> torch.Tensor:
        """``[N, 5]`` float64 factor values of the rows (see :meth:`DSprites.factor_values`)."""
        return DSprites.factor_values(self.factors())

    def subset(self, n: int | slice | torch.Tensor | Sequence[int]) -> DSpritesSplit:
        """A lazy split of the first ``n`` rows, or of the rows a slice / index tensor selects."""
        key = slice(0, n) if isinstance(n, int | np.integer) else n
        if isinstance(n, int | np.integer) and not 0 <= n <= len(self):
            raise ValueError(f"n must be in [0, {len(self)}]; received {n}")
        lazy = self._lazy()
        y = None if self.y is None else self.y[key]
        x = LazyImages(lazy.indices[key], lazy.renderer)
        return DSpritesSplit(x, y, binarize=None, seed=self.seed, split=self.split)

    def dense(self, max_bytes: int | None = None) -> Dataset:
        """An in-memory :class:`~vaekit.data.Dataset` of the rendered rows (size-limited, see
        :meth:`LazyImages.dense`)."""
        x = self.x.dense(max_bytes) if isinstance(self.x, LazyImages) else self.x
        return Dataset(x, self.y, binarize=None, seed=self.seed, split=self.split)

    def __repr__(self) -> str:
        kind = "lazy" if isinstance(self.x, LazyImages) else "rendered"
        where = self.x.device
        return f"DSpritesSplit({self.split}, {len(self)} images 1x64x64, {kind}, device={where})"


def _check_fraction(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and 0 <= value < 1):
        raise ValueError(f"{name} must be a number in [0, 1); received {value!r}")
    return float(value)


def dsprites(
    seed: int = 0,
    valid_fraction: float = 0.01,
    test_fraction: float = 0.01,
    *,
    n: int | None = None,
    split_seed: int = 0,
    labels: str = "shape",
    device: torch.device | str | None = None,
) -> DataSplits:
    """dSprites as lazy train / validation / test splits (98% / 1% / 1% by default).

    Nothing is downloaded or written; see the module docstring for the factors and rendering.
    The partition is a seeded random permutation of all 737,280 images: the first
    ``round(737280 * test_fraction)`` are test, the next ``round(737280 * valid_fraction)``
    validation, the rest train. It depends on ``split_seed`` (and the fractions) only, not on
    ``seed``, so runs with different training seeds share one held-out set. The default keeps
    98% for training (disentanglement studies train on everything) while 7,373 held-out images
    give the validation and test ELBO a standard error far below the differences that matter,
    and render densely for ``vaekit eval`` in 121 MB.

    Args:
        seed: the data set's seed (``DataSplits.seed``, recorded in run folders). The images are
            binary already, so there is nothing to draw: no binarisation option exists.
        valid_fraction, test_fraction: shares of the held-out splits, each in [0, 1) with
            sum < 1; 0 gives None for that split.
        n: use ``n`` images only (quick experiments): the first ``round(n * fraction)`` of each
            full split, so a subset's test images are never in any subset's training images.
        split_seed: seed of the partition.
        labels: ``y`` per image: ``"shape"`` (class 0-2, the default) or ``"index"`` (the dSprites
            index; ``DSprites.index_to_factors(y)`` gives all five factors).
        device: where to render (e.g. ``"cuda"``); the trainer also moves splits itself.

    Returns:
        DataSplits named ``"dsprites"`` of :class:`DSpritesSplit` (``x`` ``[N, 4096]`` lazy,
        float32 in {0, 1}), ``binarize`` None, ``image_shape`` ``(1, 64, 64)``,
        ``event_shape`` ``(4096,)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; received {seed!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"split_seed must be a non-negative integer; received {split_seed!r}")
    vf = _check_fraction("valid_fraction", valid_fraction)
    tf = _check_fraction("test_fraction", test_fraction)
    if vf + tf >= 1:
        raise ValueError(
            f"valid_fraction + test_fraction must be < 1; received {vf} + {tf} = {vf + tf}"
        )
    check_choice("labels", labels, ("shape", "index"))
    if n is not None and (
        isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= N_IMAGES
    ):
        raise ValueError(f"n must be an integer in [1, {N_IMAGES}] or None; received {n!r}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([split_seed, 0x64535052])))
    perm = rng.permutation(N_IMAGES)
    n_test, n_valid = round(N_IMAGES * tf), round(N_IMAGES * vf)
    bounds = {"test": (0, n_test), "valid": (n_test, n_test + n_valid)}
    bounds["train"] = (n_test + n_valid, N_IMAGES)
    if n is not None:
        take = {"test": round(n * tf), "valid": round(n * vf)}
        take["train"] = n - take["test"] - take["valid"]
        bounds = {k: (lo, lo + take[k]) for k, (lo, _) in bounds.items()}
    renderer = DSprites(device)
    parts: dict[str, DSpritesSplit | None] = {}
    for split, (lo, hi) in bounds.items():
        if hi == lo and split != "train":
            parts[split] = None
            continue
        idx = torch.from_numpy(perm[lo:hi].copy()).to(renderer.device)
        y = idx // _STRIDES[0] if labels == "shape" else idx.clone()
        x = LazyImages(idx, renderer)
        parts[split] = DSpritesSplit(x, y, binarize=None, seed=seed, split=split)
    if len(parts["train"]) == 0:
        raise ValueError(f"the training split is empty (n={n}); use a larger n")
    return DataSplits(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        binarize=None,
        name="dsprites",
        image_shape=IMAGE_SHAPE,
        event_shape=(_D,),
        seed=seed,
    )
