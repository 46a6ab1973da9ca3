"""Tests for vaekit.plots: valid PNGs, exact grid pixel layout, no change to the user's backend."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from vaekit import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read_png(path):
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    return img[..., :3]  # drop alpha if present


def _constant_images(values, c=1, h=5, w=7):
    return torch.stack([torch.full((c, h, w), float(v)) for v in values])


def test_image_grid_pixel_layout(tmp_path):
    """Six constant 5x7 tiles, 3 per row, padding 2: every tile centre and the padding read back."""
    values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    path = plots.save_image_grid(_constant_images(values), tmp_path / "g.png", nrow=3, scale=1)
    assert path == tmp_path / "g.png"
    img = _read_png(path)
    pad, h, w = 2, 5, 7
    assert img.shape[:2] == (pad + 2 * (h + pad), pad + 3 * (w + pad))
    for i, v in enumerate(values):
        top, left = pad + (i // 3) * (h + pad), pad + (i % 3) * (w + pad)
        tile = img[top : top + h, left : left + w]
        np.testing.assert_allclose(tile, v, atol=1 / 255 + 1e-6, err_msg=f"tile {i}")
    np.testing.assert_allclose(img[:pad], 1.0)  # white padding between and around tiles
    np.testing.assert_allclose(img[:, pad + w : pad + w + pad], 1.0)


def test_image_grid_rgb_scale_and_title(tmp_path):
    """RGB tiles at scale 3, under a 30-pixel title band: colours land where make_grid says."""
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    images = colours[:, :, None, None].expand(4, 3, 4, 4)
    grid = plots.make_grid(images, nrow=2)
    path = plots.save_image_grid(images, tmp_path / "rgb.png", nrow=2, title="t", scale=3)
    img = _read_png(path)
    band, scale = 30, 3
    assert img.shape[:2] == (band + grid.shape[0] * scale, grid.shape[1] * scale)
    for i, c in enumerate(colours):
        top, left = 2 + (i // 2) * 6, 2 + (i % 2) * 6
        centre = img[band + (top + 2) * scale, (left + 2) * scale]
        np.testing.assert_allclose(centre, c.numpy(), atol=1 / 255 + 1e-6)


def test_grid_without_channel_axis_and_default_nrow(tmp_path):
    grid = plots.make_grid(torch.zeros(10, 6, 6))  # ceil(sqrt(10)) = 4 per row, 3 rows
    assert grid.shape == (2 + 3 * 8, 2 + 4 * 8, 3)
    img = _read_png(plots.save_image_grid(torch.zeros(10, 6, 6), tmp_path / "a.png"))
    scale = img.shape[1] // grid.shape[1]
    assert scale >= 2 and img.shape[:2] == (grid.shape[0] * scale, grid.shape[1] * scale)


def test_reconstructions_rows(tmp_path):
    """Inputs (black) above reconstructions (white) in each pair of rows."""
    x, x_rec = torch.zeros(5, 1, 4, 4), torch.full((5, 1, 4, 4), 0.5)
    img = _read_png(plots.save_reconstructions(x, x_rec, tmp_path / "r.png", title=None, scale=1))
    assert img.shape[:2] == (2 + 2 * 6, 2 + 5 * 6)
    np.testing.assert_allclose(img[2:6, 2:6], 0.0)
    np.testing.assert_allclose(img[8:12, 2:6], 0.5, atol=1 / 255)


def test_reconstructions_wrap_into_pairs_of_rows(tmp_path):
    x = torch.zeros(5, 1, 4, 4)
    img = _read_png(
        plots.save_reconstructions(x, x, tmp_path / "r.png", ncol=3, title=None, scale=1)
    )
    # two pair blocks of 2 rows each, joined by a 2-pixel rule
    assert img.shape[:2] == (2 * (2 + 2 * 6) + 2, 2 + 3 * 6)


def test_traversal_latent_scatter_loss_curves_histogram_bar(tmp_path):
    torch.manual_seed(0)
    out = [
        plots.save_traversal(
            torch.rand(3, 7, 1, 28, 28),
            tmp_path / "t.png",
            values=np.linspace(-2, 2, 7),
            dims=[0, 4, 9],
        ),
        plots.save_latent_scatter(
            torch.randn(300, 8), torch.randint(0, 10, (300,)), tmp_path / "s.png"
        ),
        plots.save_latent_scatter(torch.randn(300, 2), None, tmp_path / "s2.png"),
        plots.save_latent_scatter(np.random.randn(50, 1), np.random.rand(50), tmp_path / "s1.png"),
        plots.save_loss_curves(_records(), tmp_path / "l.png"),
        plots.save_histogram(torch.randn(500), tmp_path / "h.png", "NLL", "nats"),
        plots.save_bar(torch.rand(20), tmp_path / "b.png", "KL per dim", "dim", "KL (nats)"),
    ]
    for path in out:
        img = _read_png(path)
        assert 150 <= img.shape[0] <= 3000 and 150 <= img.shape[1] <= 3000, path.name
        assert img.std() > 0.01, f"{path.name} looks blank"


def _records():
    rows = []
    for e in range(1, 6):
        for s in range(3):
            rows.append(
                {
                    "step": 3 * (e - 1) + s,
                    "epoch": e,
                    "split": "train",
                    "loss": 100 / e,
                    "rec": 90 / e,
                    "kl": 10.0,
                }
            )
        rows.append({"step": 3 * e, "epoch": e, "split": "valid", "loss": 110 / e, "kl": 11.0})
    return rows


@pytest.mark.parametrize("x_axis", ["epoch", "step", "auto"])
def test_loss_curves_axes_and_missing_keys(tmp_path, x_axis):
    path = plots.save_loss_curves(_records(), tmp_path / "l.png", keys=("loss", "elbo"), x=x_axis)
    assert _read_png(path).shape[1] > 300
    with pytest.raises(ValueError, match="numeric keys present"):
        plots.save_loss_curves(_records(), tmp_path / "x.png", keys=("nll",))


def test_pca_projection_keeps_a_planar_cloud():
    """Points on a 2-D plane inside 6-D: PCA keeps 100% of the variance and all distances."""
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(6, 2)))
    z = plane @ basis.T + 5.0
    xy, (xl, yl) = plots._pca2(z)
    shares = [float(label.split("(")[1].split("%")[0]) for label in (xl, yl)]
    assert (
        xl.startswith("PC1") and yl.startswith("PC2") and sum(shares) == pytest.approx(100, abs=1)
    )
    d_before = np.linalg.norm(z[:, None] - z[None], axis=-1)
    d_after = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.testing.assert_allclose(d_after, d_before, atol=1e-8)
    assert xy[:, 0].var() >= xy[:, 1].var()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: plots.save_image_grid(torch.randn(4, 1, 5, 5) * 5, p), "logits"),
        (lambda p: plots.save_image_grid(torch.rand(4, 2, 5, 5), p), "C 1 or 3"),
        (
            lambda p: plots.save_reconstructions(torch.rand(2, 4, 4), torch.rand(3, 4, 4), p),
            "same shape",
        ),
        (lambda p: plots.save_traversal(torch.rand(2, 3, 4, 4), p, values=[1, 2]), "3 columns"),
        (lambda p: plots.save_latent_scatter(torch.rand(5, 2), torch.rand(4), p), "match z"),
        (lambda p: plots.save_bar(torch.rand(3), p, tick_labels=["a"]), "3 entries"),
    ],
    ids=["out_of_range", "channels", "rec_shape", "traversal_values", "labels", "ticks"],
)
def test_bad_input_raises(tmp_path, call, match):
    with pytest.raises(ValueError, match=match):
        call(tmp_path / "bad.png")


def test_does_not_touch_the_pyplot_backend_or_registry(tmp_path):
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        plots.save_image_grid(torch.rand(4, 1, 5, 5), tmp_path / "g.png")
        plots.save_loss_curves(_records(), tmp_path / "l.png")
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
        assert _read_png(tmp_path / "l.png").shape[0] > 100  # still a PNG, drawn by Agg
    finally:
        plt.switch_backend(before)


def test_grid_accepts_numpy_and_many_images(tmp_path):
    n = 37
    grid = plots.make_grid(np.random.rand(n, 3, 8, 8).astype(np.float32))
    per_row = math.ceil(math.sqrt(n))
    assert grid.shape == (2 + math.ceil(n / per_row) * 10, 2 + per_row * 10, 3)
