"""In-memory data sets, binarisation protocols and the fast batch iterator.

Every loader in :mod:`vaekit.data` ends in :func:`from_tensor`, so validation and
binarisation happen in exactly one place. Examples are held flat, ``x`` is ``[N, D]``
float32 in [0, 1]; ``image_shape`` says how to view one row as an image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from vaekit._checks import check_choice, check_range, validation

BINARIZE = ("dynamic", "static")
_SPLITS = ("train", "valid", "test")


def _split_generator(seed: int, split: str) -> torch.Generator:
    # One independent stream per (seed, split): the test draw does not depend on
    # whether a validation split exists or how large the training set is.
    state = np.random.SeedSequence([seed, _SPLITS.index(split)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def binarize_fixed(x: torch.Tensor, seed: int, split: str) -> torch.Tensor:
    """One seeded Bernoulli draw of ``x``: the static set and every evaluation view.

    Args:
        x: probabilities in [0, 1], any shape.
        seed: non-negative integer seed.
        split: ``"train"``, ``"valid"`` or ``"test"``; each split has its own stream.

    Returns:
        A float32 tensor of 0s and 1s shaped like ``x``.
    """
    return torch.bernoulli(x, generator=_split_generator(seed, split))


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per entry, ``x = 1[u < p]`` with ``u ~ U[0, 1)``: P(x = 1) = p.

    The same law as ``torch.bernoulli(p)`` in about a third of its time on the CPU (one
    uniform fill and one in-place comparison); used for the per-batch dynamic binarisation.
    """
    return torch.empty_like(p).uniform_(generator=generator).lt_(p)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One split held in memory.

    Attributes:
        x: ``[N, D]`` float32 in [0, 1]. Grayscale for ``binarize`` None or ``"dynamic"``
            (the Bernoulli means), already 0/1 for ``"static"``.
        y: ``[N]`` int64 labels, or None.
        binarize: ``"dynamic"``, ``"static"`` or None.
        seed: seed of the fixed draws (static set, :meth:`eval_view`).
        split: ``"train"``, ``"valid"`` or ``"test"``.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    binarize: str | None = None
    seed: int = 0
    split: str = "train"

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        labels = "with labels" if self.y is not None else "no labels"
        return (
            f"Dataset({self.split}, x {tuple(self.x.shape)}, {labels}, "
            f"binarize={self.binarize!r}, seed={self.seed})"
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Iterate once over the split in mini-batches.

        Args:
            batch_size: examples per batch (the last one may be smaller unless ``drop_last``).
            shuffle: visit examples in a fresh random order.
            generator: source of randomness for the order and for dynamic binarisation;
                None uses torch's global generator.
            drop_last: skip a final incomplete batch.

        Yields:
            ``(x, y)``: ``x`` is ``[B, D]`` float32; for ``"dynamic"`` data a fresh Bernoulli
            draw every time it is produced (the IWAE protocol). ``y`` is ``[B]`` int64 or None.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; received {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator, device=self.x.device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                idx = slice(start, start + batch_size)
            else:
                idx = order[start : start + batch_size]
            x = self.x[idx]
            if self.binarize == "dynamic":
                x = bernoulli_draw(x, generator)
            yield x, (None if self.y is None else self.y[idx])

    def eval_view(self, seed: int | None = None) -> Dataset:
        """A fixed, seeded copy to evaluate on, so reported numbers are reproducible.

        Args:
            seed: seed of the draw; None uses the data set's own seed, in which case the view of
                dynamic data equals the static set loaded with that seed.

        Returns:
            For ``"dynamic"`` data, a ``"static"`` Dataset holding one seeded Bernoulli draw.
            Static and grayscale data are already fixed and are returned unchanged; asking a
            static set for a seed other than its own raises ValueError (it cannot be redrawn).
        """
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer; received {seed!r}")
        if self.binarize != "dynamic":
            if seed is not None and seed != self.seed and self.binarize == "static":
                raise ValueError(
                    f"seed must be None or {self.seed} for statically binarised data "
                    f"(its draw is fixed at load); received {seed!r}"
                )
            return self
        seed = self.seed if seed is None else seed
        return replace(
            self, x=binarize_fixed(self.x, seed, self.split), binarize="static", seed=seed
        )

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with ``x`` and ``y`` moved to ``device`` (e.g. to keep data on the GPU)."""
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y)


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train, validation and test splits of one data set.

    Attributes:
        train, valid, test: :class:`Dataset` (``valid`` and ``test`` may be None for
            :func:`from_tensor` data).
        binarize: ``"dynamic"``, ``"static"`` or None (grayscale).
        name: short name, e.g. ``"mnist"``.
        image_shape: ``(C, H, W)`` view of one example, e.g. ``(1, 28, 28)``; ``(D,)`` if the
            data are not images.
        event_shape: shape of one example as stored, ``(D,)``.
        seed: seed of the static and evaluation draws.
    """

    train: Dataset
    valid: Dataset | None
    test: Dataset | None
    binarize: str | None
    name: str
    image_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    seed: int = 0


def _as_real_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` as a tensor of real numbers; other dtypes are refused by name, not by torch."""
    if isinstance(x, np.ndarray):
        kind = x.dtype.kind
        if kind not in "biuf" or x.dtype.fields is not None:
            what = "complex" if kind == "c" else "not a plain real number type"
            raise ValueError(
                f"{name} must hold real numbers (float, integer or bool); received dtype "
                f"{x.dtype.descr if x.dtype.fields is not None else x.dtype} ({what})"
            )
        if not x.dtype.isnative:  # big-endian data (or little-endian on a big-endian host)
            x = x.astype(x.dtype.newbyteorder("="))
    elif isinstance(x, torch.Tensor) and x.is_complex():
        raise ValueError(
            f"{name} must hold real numbers (float, integer or bool); received dtype "
            f"{x.dtype} (complex)"
        )
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be an array of real numbers; received {type(x).__name__} ({err})"
        ) from None
    if t.is_complex():
        raise ValueError(
            f"{name} must hold real numbers (float, integer or bool); received dtype "
            f"{t.dtype} (complex)"
        )
    return t


def _as_images(name: str, x: object) -> torch.Tensor:
    x = _as_real_tensor(name, x)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0  # 8-bit pixels: the one integer format with an obvious scale
    elif x.dtype == torch.bool or not x.is_floating_point():
        x = x.float()
    x = x.to(torch.float32)
    if x.ndim < 2 or x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(
            f"{name} must have shape [N, ...] with N >= 1 non-empty examples; "
            f"received shape {tuple(x.shape)}"
        )
    low, high = torch.aminmax(x)  # one pass; NaN propagates and fails both comparisons
    if not (low >= 0 and high <= 1):
        with validation(True):  # for its message, whatever the global switch for hot loops
            check_range(name, x, 0.0, 1.0, hint="scale images to [0, 1], e.g. uint8 pixels / 255")
    return x.reshape(x.shape[0], -1)


def _as_labels(name: str, y: object, n: int) -> torch.Tensor | None:
    if y is None:
        return None
    y = _as_real_tensor(name, y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}]; received shape {tuple(y.shape)}")
    if y.is_floating_point() and not bool((torch.isfinite(y) & (y == y.round())).all()):
        raise ValueError(f"{name} must hold integer class labels; received non-integer values")
    if n and (y.is_floating_point() or y.dtype == torch.uint64):
        top = float(y.to(torch.float64).max())  # range-check before the cast to int64
        if top >= 2.0**63:
            raise ValueError(
                f"{name} must be class indices that fit in int64; received maximum {top:.6g}"
            )
    y = y.to(torch.int64)
    if n and int(y.min()) < 0:
        raise ValueError(
            f"{name} must be class indices in 0..C-1 (non-negative integers); received "
            f"{int((y < 0).sum())} negative labels, minimum {int(y.min())}"
        )
    return y


def _infer_image_shape(x: torch.Tensor) -> tuple[int, ...]:
    shape = tuple(x.shape[1:])
    if len(shape) == 2:  # [N, H, W] grayscale
        return (1, *shape)
    return shape


def from_tensor(
    train: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray | None = None,
    test: torch.Tensor | np.ndarray | None = None,
    *,
    train_labels: torch.Tensor | np.ndarray | None = None,
    valid_labels: torch.Tensor | np.ndarray | None = None,
    test_labels: torch.Tensor | np.ndarray | None = None,
    binarize: str | None = None,
    seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    name: str = "tensor",
) -> DataSplits:
    """Wrap in-memory arrays as :class:`DataSplits`, validating them once.

    Args:
        train, valid, test: ``[N, ...]`` arrays of intensities in [0, 1] (uint8 is divided by
            255). Each is stored flat as ``[N, D]`` float32; ``valid``/``test`` may be None.
        train_labels, valid_labels, test_labels: optional ``[N]`` integer labels.
        binarize: ``"dynamic"`` (fresh draw per batch), ``"static"`` (one seeded draw now) or
            None (keep grayscale).
        seed: non-negative seed of the static and evaluation draws.
        image_shape: how to view one example, e.g. ``(1, 28, 28)``; default: ``train``'s
            per-example shape, with a channel axis added to ``[N, H, W]`` input.
        name: short name of the data set.

    Returns:
        DataSplits.

    Raises:
        ValueError: empty data, NaN/Inf, values outside [0, 1], mismatched shapes or labels.
    """
    if binarize is not None:
        check_choice("binarize", binarize, BINARIZE)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; received {seed!r}")
    shaped = _as_real_tensor("train", train)
    image_shape = tuple(image_shape) if image_shape else _infer_image_shape(shaped)
    arrays = {
        "train": (train, train_labels),
        "valid": (valid, valid_labels),
        "test": (test, test_labels),
    }
    parts: dict[str, Dataset | None] = {}
    for split, (x, y) in arrays.items():
        if x is None:
            if y is not None:
                raise ValueError(f"{split}_labels given without {split} data")
            parts[split] = None
            continue
        x = _as_images(split, x)
        if x.shape[1] != math.prod(image_shape):
            raise ValueError(
                f"{split} must have {math.prod(image_shape)} values per example to match "
                f"image_shape {image_shape}; received {x.shape[1]}"
            )
        y = _as_labels(f"{split}_labels", y, x.shape[0])
        if binarize == "static":
            x = binarize_fixed(x, seed, split)
        parts[split] = Dataset(x, y, binarize=binarize, seed=seed, split=split)
    return DataSplits(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        binarize=binarize,
        name=name,
        image_shape=image_shape,
        event_shape=(math.prod(image_shape),),
        seed=seed,
    )


def check_labels_seen_in_train(splits: DataSplits) -> None:
    """Refuse validation/test labels that the training labels never use.

    A conditional model's number of classes is ``max(train_labels) + 1``, so an unseen label
    would fail only when that split is first evaluated (after a whole epoch); a data file is
    checked at load instead. Raises ValueError naming the split's labels.
    """
    train_y = splits.train.y
    if train_y is None or not len(train_y):
        return
    classes = int(train_y.max()) + 1
    for split in (splits.valid, splits.test):
        y = None if split is None else split.y
        if y is not None and len(y) and int(y.max()) >= classes:
            unseen = sorted(set(y[y >= classes].tolist()))
            raise ValueError(
                f"{split.split}_labels must be classes seen in train_labels, 0..{classes - 1} "
                f"(a model's number of classes comes from the training labels); received "
                f"{len(unseen)} unseen label value(s), e.g. {unseen[:5]}"
            )
