"""Fashion-MNIST from the four IDX files (Debian's ``dataset-fashion-mnist`` ships them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from vaekit.data.dataset import DataSplits
from vaekit.data.files import find_idx, idx_splits
from vaekit.data.paths import DataNotFoundError, data_dir, fetch_hint

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_COMMAND = "apt-get install -y dataset-fashion-mnist"


def _candidates(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    return [data_dir() / "fashion_mnist", DEBIAN_DIR]


def fashion_mnist(
    binarize: str | None = None, seed: int = 0, root: str | os.PathLike | None = None
) -> DataSplits:
    """Fashion-MNIST clothing images, 28x28, as 50000 train / 10000 validation / 10000 test.

    The validation split is the last 10000 of the 60000 training images.

    Args:
        binarize: None (grayscale, the default: thresholding loses most of the texture),
            ``"dynamic"`` or ``"static"`` as in :func:`~vaekit.data.mnist`.
        seed: non-negative seed of the static and evaluation draws.
        root: folder with the four IDX files (``train-images-idx3-ubyte[.gz]`` ...). Default:
            ``data_dir() / "fashion_mnist"``, then ``/usr/share/datasets/fashion-mnist``.

    Returns:
        DataSplits named ``"fashion_mnist"``: ``x`` ``[N, 784]`` float32 (pixels / 255),
        ``y`` ``[N]`` int64 class ids 0-9, ``image_shape`` ``(1, 28, 28)``.

    Raises:
        DataNotFoundError: no folder holds the files; the message gives the fetch command.
    """
    searched = _candidates(root)
    for folder in searched:
        files = find_idx(folder)
        if files is not None:
            return idx_splits(files, binarize=binarize, seed=seed, name="fashion_mnist")
    raise DataNotFoundError(
        f"Fashion-MNIST not found (looked for the four IDX files train-images-idx3-ubyte[.gz] "
        f"... in {', '.join(repr(str(p)) for p in searched)}). "
        + fetch_hint("fashion_mnist")
        + f", or on Debian/Ubuntu: sudo {APT_COMMAND}"
    )


def fetch_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """Make Fashion-MNIST available, through the Debian package ``dataset-fashion-mnist``.

    There is no PyPI source, so when the files are not yet installed and this process runs as
    root on a system with ``apt-get``, it runs ``apt-get install -y dataset-fashion-mnist``
    (and ``apt-get update`` first if that fails); otherwise it raises with the command to run.

    Args:
        root: if given, the four files are copied into this folder.

    Returns:
        The folder holding the IDX files: ``root``, or ``/usr/share/datasets/fashion-mnist``.

    Raises:
        DataNotFoundError: the files are absent and cannot be installed from here.
    """
    if find_idx(DEBIAN_DIR) is None:
        can_apt = sys.platform == "linux" and os.geteuid() == 0 and shutil.which("apt-get")
        if not can_apt:
            raise DataNotFoundError(
                f"Fashion-MNIST is not installed. Run: sudo {APT_COMMAND} "
                f"(or copy the four IDX files into {str(data_dir() / 'fashion_mnist')!r})"
            )
        install = APT_COMMAND.split()
        if subprocess.run(install).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False)
            subprocess.run(install, check=False)
        if find_idx(DEBIAN_DIR) is None:
            raise DataNotFoundError(f"{APT_COMMAND} did not install the files in {DEBIAN_DIR}")
    if root is None:
        return DEBIAN_DIR
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for path in find_idx(DEBIAN_DIR).values():
        shutil.copyfile(path, root / path.name)
    return root
