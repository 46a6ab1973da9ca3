"""Data from files: IDX (the MNIST format), NumPy ``.npy``/``.npz`` and image folders."""

from __future__ import annotations

import gzip
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from vaekit.data.dataset import DataSplits, check_labels_seen_in_train, from_tensor
from vaekit.data.paths import DataNotFoundError

_T = TypeVar("_T")

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


class _FileError(ValueError):
    """A ValueError that already names the file (passed through :func:`_reading` unchanged)."""


def _reading(path: Path, what: str, read: Callable[[], _T]) -> _T:
    """``read()``, with any failure of the parser turned into one clear error naming ``path``.

    Our own ValueErrors (which already name the file) pass through; a missing file is a
    :class:`DataNotFoundError`; anything else a parser raises on a bad file (``EOFError``,
    ``zipfile.BadZipFile``, ``zlib.error``, PIL's ``SyntaxError``, ``OSError``...) becomes a
    ValueError saying what was expected and what was found.
    """
    try:
        return read()
    except _FileError:
        raise
    except FileNotFoundError:
        raise DataNotFoundError(
            f"path must name an existing file ({what}); received {str(path)!r}"
        ) from None
    except Exception as err:  # noqa: BLE001 - every parser failure becomes one clear error
        try:
            size = f"{path.stat().st_size} bytes"
        except OSError:
            size = "unreadable"
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise _FileError(
            f"path must be {what}; received {str(path)!r} ({size}), which could not be read: "
            f"{reason[:300]}"
        ) from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file, gzipped or not (detected from its bytes, not its name).

    Args:
        path: file path, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        An array with the file's shape and native-endian dtype (uint8 for MNIST).

    Raises:
        ValueError: bad magic number, unknown type code, or a size that does not match the header;
            or any other unreadable file (named in the message).
    """
    path = Path(path)
    return _reading(path, "an IDX file (optionally gzipped)", lambda: _read_idx(path))


def _read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise _FileError(
            f"path must be an IDX file (magic 0x0000 + type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} + ndim); received header {data[:4].hex()} "
            f"in {str(path)!r}"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _FileError(
            f"path must hold a {header}-byte IDX header for {ndim} dimensions; "
            f"received {len(data)} bytes in {str(path)!r}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise _FileError(
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
        arrays = {
            "train": _reading(path, "a .npy file written by numpy.save", lambda: _load_npy(path))
        }
    elif path.suffix == ".npz":
        arrays = _reading(path, "a .npz archive written by numpy.savez", lambda: _load_npz(path))
    else:
        raise ValueError(f"path must end in .npy or .npz; received {str(path)!r}")
    try:
        splits = from_tensor(
            arrays.pop("train"),
            arrays.pop("valid", None),
            arrays.pop("test", None),
            **arrays,
            **kwargs,
        )
        check_labels_seen_in_train(splits)
        return splits
    except ValueError as err:  # name the file: the message says which array, not where
        raise ValueError(f"{err} (in {str(path)!r})") from None


def _npy_header(fp, key: str, path: Path, available: int) -> None:
    """Check a ``.npy`` header before any data is read: a real dtype and a matching size.

    ``fp`` is positioned at the start of the ``.npy`` stream; ``available`` is its length in
    bytes. The size check refuses truncated files and headers that claim more data than the
    file holds (no allocation is made for them).
    """
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    read_header = getattr(fmt, "_read_array_header", None)
    if read_header is not None:
        shape, _, dtype = read_header(fp, version)
    elif version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(fp)
    else:
        shape, _, dtype = fmt.read_array_header_2_0(fp)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        what = {
            "c": "complex",
            "O": "Python objects, refused: files are read with allow_pickle=False",
        }.get(dtype.kind, "not a plain real number type")
        shown = dtype.descr if dtype.fields is not None else dtype
        raise _FileError(
            f"{key} must hold real numbers (float, integer or bool); received dtype {shown} "
            f"({what}) in {str(path)!r}"
        )
    expected = math.prod(shape) * dtype.itemsize
    have = available - fp.tell()
    if have != expected:
        raise _FileError(
            f"{key} must hold {expected} bytes of data for shape {shape} and dtype {dtype} "
            f"after its header; received {have} bytes in {str(path)!r}"
            + (" (the file is truncated)" if have < expected else "")
        )


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fp:
        _npy_header(fp, "train", path, os.fstat(fp.fileno()).st_size)
    return np.load(path, allow_pickle=False)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        members = {
            (info.filename[:-4] if info.filename.endswith(".npy") else info.filename): info
            for info in archive.infolist()
        }
        keys = set(members)
        if "train" not in keys or keys - set(_NPZ_KEYS):
            raise _FileError(
                f"path must be an .npz with key 'train' and optional keys {list(_NPZ_KEYS[1:])}; "
                f"received keys {sorted(keys)} in {str(path)!r}"
            )
        arrays = {}
        for key, info in members.items():
            with archive.open(info) as fp:
                _npy_header(fp, key, path, info.file_size)
            with archive.open(info) as fp:
                arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
    return arrays


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
    images = [_reading(p, "a PNG or JPEG image", lambda p=p: _read_gray(p)) for p in paths]
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
