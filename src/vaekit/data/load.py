"""The data set a run's :class:`~vaekit.config.TrainConfig` names, loaded as :class:`DataSplits`."""

from __future__ import annotations

from pathlib import Path

from vaekit._checks import check_choice

__all__ = ["DATASETS", "load_data"]

DATASETS = ("mnist", "fashion_mnist", "dsprites", "file", "folder", "skimage_rgb")


def load_data(tc):
    """The :class:`vaekit.data.DataSplits` named by a :class:`~vaekit.config.TrainConfig`.

    Reads ``tc.dataset`` (one of :data:`DATASETS`), ``tc.binarize`` (``"dynamic"``,
    ``"static"`` or ``"none"``), ``tc.seed`` and ``tc.data_root``. A relative ``data_root``
    is read from the data directory (``$VAEKIT_DATA``) and may not climb out of it; an
    absolute one is taken as given. ``"file"`` and ``"folder"`` need a ``data_root``.
    """
    from vaekit import data  # at call time: the loaders as vaekit.data holds them now

    check_choice("dataset", tc.dataset, DATASETS)
    check_choice("binarize", tc.binarize, ("dynamic", "static", "none"))
    binarize = None if tc.binarize == "none" else tc.binarize
    root = None
    if tc.data_root is not None:
        # A config file may come from someone else: a relative data_root is read from the
        # data directory and may not climb out of it; an absolute one is the user's choice.
        root = data.resolve_data_path(data.data_dir(), tc.data_root, what="data_root")
    if tc.dataset == "mnist":
        return data.mnist(binarize=binarize, seed=tc.seed, root=root)
    if tc.dataset == "fashion_mnist":
        return data.fashion_mnist(binarize=binarize, seed=tc.seed, root=root)
    if tc.dataset == "dsprites":
        return data.dsprites(seed=tc.seed)  # generated, already binary: no root, no binarize
    if tc.dataset == "skimage_rgb":  # RGB crops of scikit-image's photos: never binarised
        from vaekit.data._skimage_rgb import skimage_rgb

        return skimage_rgb(seed=tc.seed)
    if root is None:
        raise ValueError(f"dataset={tc.dataset!r} needs data_root (--data-root PATH)")
    if not root.exists():
        what = ".npy/.npz file" if tc.dataset == "file" else "folder of images"
        where = (
            ""
            if Path(tc.data_root).is_absolute()
            else f", read as {str(root)!r} (relative paths are read from the data directory, "
            "$VAEKIT_DATA)"
        )
        raise data.DataNotFoundError(
            f"data_root must name an existing {what}; received {tc.data_root!r}{where}"
        )
    loader = data.from_file if tc.dataset == "file" else data.from_folder
    return loader(root, binarize=binarize, seed=tc.seed)
