"""The skimage_rgb data set: crops of the photos inside scikit-image's wheel, no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")

from vaekit.data._skimage_rgb import SKIMAGE_PHOTOS, skimage_rgb  # noqa: E402


def test_crops_are_pieces_of_the_resized_photos_and_seeded():
    import skimage.data
    from skimage.io import imread
    from skimage.transform import resize

    s = skimage_rgb(seed=3, n_train=4, n_valid=2, n_test=3, size=16)
    assert s.image_shape == (3, 16, 16) and s.train.x.shape == (4, 768)
    again = skimage_rgb(seed=3, n_train=4, n_valid=2, n_test=3, size=16)
    assert torch.equal(s.test.x, again.test.x)
    other = skimage_rgb(seed=4, n_train=4, n_valid=2, n_test=3, size=16)
    assert not torch.equal(s.test.x, other.test.x)
    # every test crop is a window of the resized 'coffee' photo (brute-force search)
    img = imread(Path(skimage.data.__file__).parent / SKIMAGE_PHOTOS["test"][0])
    img = img[..., :3].astype(np.float32) / 255.0
    h, w = img.shape[:2]
    scale = 256 / min(h, w)
    ref = np.clip(resize(img, (round(h * scale), round(w * scale)), anti_aliasing=True), 0, 1)
    windows = np.lib.stride_tricks.sliding_window_view(ref, (16, 16, 3))[..., 0, :, :, :]
    for crop in s.test.x.reshape(-1, 3, 16, 16).numpy():
        d = np.abs(windows - crop.transpose(1, 2, 0)).max(axis=(-3, -2, -1))
        assert d.min() < 1e-6


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        skimage_rgb(size=4)
    with pytest.raises(ValueError, match="n_train"):
        skimage_rgb(n_train=0)
