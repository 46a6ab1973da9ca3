"""A small natural-image RGB data set with no download: crops of scikit-image's bundled photos.

Named ``skimage_rgb`` after where its pixels come from: the colour photographs that ship
inside the scikit-image wheel (no pooch download; the ``rgb`` extra installs scikit-image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["skimage_rgb", "SKIMAGE_PHOTOS"]

#: the colour photographs in scikit-image's wheel, per split: whole photos are held out, so
#: no test crop overlaps a training one
SKIMAGE_PHOTOS = {
    "train": (
        "astronaut.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "hubble_deep_field.jpg",
        "retina.jpg",
        "ihc.png",
    ),
    "valid": ("chelsea.png",),
    "test": ("coffee.png",),
}
SHORT_SIDE = 256  # each photo is resized (anti-aliased) to this shorter side before cropping


def _photo(name: str) -> np.ndarray:
    """One bundled photo as float32 ``[H, W, 3]`` in [0, 1], shorter side ``SHORT_SIDE``."""
    try:
        import skimage.data
        from skimage.io import imread
        from skimage.transform import resize
    except ImportError:
        raise ValueError(
            "dataset 'skimage_rgb' needs scikit-image (pip install 'vaekit[rgb]'); received an "
            "environment without it"
        ) from None
    # read from the wheel's own folder: never through the pooch fetcher (no network)
    path = Path(skimage.data.__file__).parent / name
    if not path.exists():
        raise ValueError(
            f"dataset 'skimage_rgb' reads {name!r} from scikit-image's wheel; received an "
            f"installation without it ({path})"
        )
    img = imread(path)[..., :3].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    scale = SHORT_SIDE / min(h, w)
    size = (round(h * scale), round(w * scale))
    return np.clip(resize(img, size, anti_aliasing=True), 0.0, 1.0).astype(np.float32)


def _crops(names, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``size x size`` crops, photos drawn uniformly: uint8-free float ``[n, 3, s, s]``."""
    photos = [_photo(p) for p in names]
    out = np.empty((n, 3, size, size), np.float32)
    which = rng.integers(0, len(photos), n)
    for i, k in enumerate(which):
        img = photos[k]
        top = rng.integers(0, img.shape[0] - size + 1)
        left = rng.integers(0, img.shape[1] - size + 1)
        out[i] = img[top : top + size, left : left + size].transpose(2, 0, 1)
    return out


def skimage_rgb(
    seed: int = 0, n_train: int = 2000, n_valid: int = 250, n_test: int = 500, size: int = 64
):
    """RGB crops ``(3, size, size)`` of scikit-image's photos: :class:`~vaekit.data.DataSplits`.

    Train crops come from six photos (astronaut, rocket, motorcycle_left, hubble_deep_field,
    retina, ihc), validation crops from ``chelsea`` and test crops from ``coffee``; each photo is first resized to a shorter side of 256 pixels. Crop positions
    are uniform, drawn from ``numpy.random.default_rng(seed)`` (one stream per split), so a
    seed fixes the data set. Values in [0, 1], stored flat channels-first; no labels.
    """
    from vaekit.data.dataset import from_tensor

    if not isinstance(size, int) or not 8 <= size <= SHORT_SIDE:
        raise ValueError(f"size must be an integer in [8, {SHORT_SIDE}]; received {size!r}")
    for name, n in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1; received {n!r}")
    streams = np.random.SeedSequence(seed).spawn(3)
    parts = {
        split: _crops(SKIMAGE_PHOTOS[split], n, size, np.random.default_rng(stream))
        for (split, n), stream in zip(
            (("train", n_train), ("valid", n_valid), ("test", n_test)), streams, strict=True
        )
    }
    return from_tensor(
        parts["train"], parts["valid"], parts["test"], binarize=None, seed=seed,
        image_shape=(3, size, size), name="skimage_rgb",
    )  # fmt: skip
