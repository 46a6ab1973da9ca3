"""PSNR and SSIM of reconstructions (torchmetrics) against scikit-image's implementations."""

from __future__ import annotations

import pytest
import torch

from vaekit.metrics.image import psnr_ssim, reconstruction_quality

skm = pytest.importorskip("skimage.metrics")


def _pair(c: int = 3, size: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, c, size, size, generator=g)
    return (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1), x


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_scikit_image(channels):
    recon, x = _pair(channels)
    psnr, ssim = psnr_ssim(recon, x)
    for i in range(x.shape[0]):
        a = x[i].permute(1, 2, 0).double().numpy()
        b = recon[i].permute(1, 2, 0).double().numpy()
        assert psnr[i].item() == pytest.approx(
            skm.peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-4
        )
        ref = skm.structural_similarity(
            a, b, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )  # fmt: skip
        # the two libraries treat the 5-pixel border differently: agreement to a few 1e-3
        assert ssim[i].item() == pytest.approx(ref, abs=5e-3)


def test_ssim_is_one_for_identical_images_and_none_when_too_small():
    _, x = _pair()
    assert torch.allclose(psnr_ssim(x, x)[1], torch.ones(3))
    assert psnr_ssim(x[..., :8, :8], x[..., :8, :8].flip(-1))[1] is None


def test_reconstruction_quality_averages_per_image_scores():
    recon, x = _pair()

    class Stub(torch.nn.Module):
        likelihood = type("L", (), {"data_range": (0.0, 1.0)})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def reconstruct(self, xb):
            return recon[: xb.shape[0]] if xb.shape[0] == 3 else recon[3 - xb.shape[0] :]

    out = reconstruction_quality(Stub(), x, batch_size=3)
    p, s = psnr_ssim(recon, x)
    assert out["psnr"] == pytest.approx(p.mean().item())
    assert out["ssim"] == pytest.approx(s.mean().item())
    assert out["image_data_range"] == 1.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        psnr_ssim(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))
