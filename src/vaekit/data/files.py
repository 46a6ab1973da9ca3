"""Data from files: IDX (the MNIST format), NumPy ``.npy``/``.npz`` and image folders."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from vaekit.data.dataset import DataSplits, from_tensor

# IDX type codes -> big-endian NumPy dtypes (http://yann.lecun.com/exdb/mnist/, bottom).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NPZ_KEYS = ("train", "valid", "test", "train_labels", "valid_labels", "test_labels")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file, gzipped or not (detected from its bytes, not its name).

    Args:
        path: file path, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        An array with the file's shape and native-endian dtype (uint8 for MNIST).

    Raises:
        ValueError: bad magic number, unknown type code, or a size that does not match the header.
    """
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"path must be an IDX file (magic 0x0000 + type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} + ndim); received header {data[:4].hex()} "
            f"in {str(path)!r}"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"path must hold {expected} bytes for an IDX array of shape {shape}; "
            f"received {len(data)} bytes in {str(path)!r}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(root: str | os.PathLike) -> dict[str, Path] | None:
    """The four MNIST-format IDX files in ``root`` (``.gz`` or not); None if any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [Path(root) / (stem + ".gz"), Path(root) / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def idx_splits(
    files: dict[str, Path], *, binarize: str | None, seed: int, name: str, valid_size: int = 10_000
) -> DataSplits:
    """Load MNIST-format IDX files, holding out the last ``valid_size`` training images.

    Args:
        files: the mapping returned by :func:`find_idx`.
        binarize, seed: as in :func:`~vaekit.data.from_tensor`.
        name: data set name.
        valid_size: training images held out as validation (60k -> 50k/10k).

    Returns:
        DataSplits with ``x`` = pixels / 255 as ``[N, H*W]`` and ``image_shape`` ``(1, H, W)``.
    """
    arrays = {key: read_idx(path) for key, path in files.items()}
    train_x, train_y = arrays["train_images"], arrays["train_labels"]
    if len(train_x) != len(train_y) or len(arrays["test_images"]) != len(arrays["test_labels"]):
        raise ValueError(
            f"IDX images and labels must have the same length; received train "
            f"{len(train_x)}/{len(train_y)}, test {len(arrays['test_images'])}/"
            f"{len(arrays['test_labels'])} in {str(files['train_images'].parent)!r}"
        )
    if not 0 < valid_size < len(train_x):
        raise ValueError(
            f"valid_size must be in (0, {len(train_x)}) for {len(train_x)} training images; "
            f"received {valid_size}"
        )
    cut = len(train_x) - valid_size
    return from_tensor(
        train_x[:cut],
        train_x[cut:],
        arrays["test_images"],
        train_labels=train_y[:cut],
        valid_labels=train_y[cut:],
        test_labels=arrays["test_labels"],
        binarize=binarize,
        seed=seed,
        image_shape=(1, *train_x.shape[1:]),
        name=name,
    )


def from_file(
    path: str | os.PathLike,
    *,
    binarize: str | None = None,
    seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    name: str | None = None,
) -> DataSplits:
    """Load arrays saved with NumPy.

    Args:
        path: a ``.npy`` file holding the training images ``[N, ...]``, or a ``.npz`` archive
            with keys ``train`` and optionally ``valid``, ``test``, ``train_labels``,
            ``valid_labels``, ``test_labels``. Values in [0, 1] (uint8 is divided by 255).
            Pickled object arrays are refused.
        binarize, seed, image_shape: as in :func:`~vaekit.data.from_tensor`.
        name: data set name; default the file's stem.

    Returns:
        DataSplits.
    """
    path = Path(path)
    name = name or path.stem
    kwargs = dict(binarize=binarize, seed=seed, image_shape=image_shape, name=name)
    if path.suffix == ".npy":
        return from_tensor(np.load(path, allow_pickle=False), **kwargs)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npy or .npz; received {str(path)!r}")
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        if "train" not in keys or keys - set(_NPZ_KEYS):
            raise ValueError(
                f"path must be an .npz with key 'train' and optional keys {list(_NPZ_KEYS[1:])}; "
                f"received keys {sorted(keys)} in {str(path)!r}"
            )
        arrays = {key: archive[key] for key in keys}
    return from_tensor(
        arrays.pop("train"),
        arrays.pop("valid", None),
        arrays.pop("test", None),
        **arrays,
        **kwargs,
    )


def _read_gray(path: Path) -> np.ndarray:
    import matplotlib.image  # PNG natively, JPEG through Pillow (a matplotlib dependency)

    img = matplotlib.image.imread(path)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] >= 3:
        # ITU-R 601 luma, the weights Pillow's "L" mode uses; any alpha channel is dropped.
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    elif img.ndim == 3:  # gray + alpha
        img = img[..., 0]
    return np.clip(img, 0.0, 1.0)


def _read_folder(folder: Path) -> np.ndarray | None:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not paths:
        return None
    images = [_read_gray(p) for p in paths]
    for p, img in zip(paths, images, strict=True):
        if img.shape != images[0].shape:
            raise ValueError(
                f"images in {str(folder)!r} must share one size; received {images[0].shape} "
                f"for {paths[0].name!r} and {img.shape} for {p.name!r}"
            )
    return np.stack(images)


def from_folder(
    path: str | os.PathLike,
    *,
    binarize: str | None = None,
    seed: int = 0,
    name: str | None = None,
) -> DataSplits:
    """Load a folder of PNG/JPEG images as grayscale.

    Args:
        path: a folder. If it has ``train/`` (and optionally ``valid/``, ``test/``)
            subfolders, each is one split; otherwise its images form the training split.
            Files are read in name order; all images must have the same height and width.
            Colour images are converted to luma (0.299 R + 0.587 G + 0.114 B).
        binarize, seed: as in :func:`~vaekit.data.from_tensor`.
        name: data set name; default the folder's name.

    Returns:
        DataSplits with ``x`` ``[N, H*W]`` in [0, 1] and ``image_shape`` ``(1, H, W)``.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path must be a folder of images; received {str(path)!r}")
    if (path / "train").is_dir():
        splits = {
            s: _read_folder(path / s) if (path / s).is_dir() else None
            for s in ("train", "valid", "test")
        }
    else:
        splits = {"train": _read_folder(path), "valid": None, "test": None}
    if splits["train"] is None:
        raise ValueError(
            f"path must contain {'/'.join(_IMAGE_SUFFIXES)} images (or a train/ subfolder "
            f"with them); received a folder with none: {str(path)!r}"
        )
    return from_tensor(
        splits["train"],
        splits["valid"],
        splits["test"],
        binarize=binarize,
        seed=seed,
        name=name or path.name,
    )
