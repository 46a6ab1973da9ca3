"""Reconstruction quality of image models: PSNR and SSIM (torchmetrics), images in [0, 1]."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = ["reconstruction_quality", "psnr_ssim", "SSIM_MIN_SIZE"]

#: SSIM's Gaussian window is 11 x 11: smaller images get no SSIM
SSIM_MIN_SIZE = 11


def psnr_ssim(recon: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-image PSNR (dB) and SSIM of ``recon`` vs ``x``, both ``[B, C, H, W]`` in [0, 1]: ``[B]`` each.

    ``PSNR = 10 log10(1 / MSE)`` with data range 1 and the MSE over one image's values;
    SSIM (Wang et al. 2004) with an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, data range 1, averaged over the image (and its channels). SSIM is None for
    images smaller than 11 pixels on a side.
    """
    if recon.shape != x.shape or x.dim() != 4:
        raise ValueError(
            f"recon and x must be images [B, C, H, W] of one shape; received "
            f"{tuple(recon.shape)} and {tuple(x.shape)}"
        )
    recon, x = recon.float(), x.float()
    psnr = peak_signal_noise_ratio(recon, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    if min(x.shape[-2:]) < SSIM_MIN_SIZE:
        return psnr, None
    ssim = structural_similarity_index_measure(recon, x, data_range=1.0, reduction="none")
    return psnr, ssim


@torch.inference_mode()
def reconstruction_quality(model, x: torch.Tensor, batch_size: int = 100) -> dict:
    """``psnr`` (dB) and ``ssim`` of ``model.reconstruct(x)`` vs ``x``, means over the images.

    ``x``: ``[N, C, H, W]`` in the likelihood's data range; both are mapped to [0, 1] (the
    reconstruction clamped) before scoring, so ``data_range`` is 1. A VAE reconstructs from
    the posterior mean, a VQ model from its codes. ``ssim`` is None below 11 x 11 pixels.
    """
    from vaekit.evaluate import _to_unit

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, ssims = [], []
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device)
            recon = _to_unit(model, model.reconstruct(xb).float())
            p, s = psnr_ssim(recon, _to_unit(model, xb.float()))
            psnrs.append(p.cpu())
            if s is not None:
                ssims.append(s.cpu())
    finally:
        model.train(was_training)
    return {
        "psnr": torch.cat(psnrs).mean().item(),
        "ssim": torch.cat(ssims).mean().item() if ssims else None,
        "image_data_range": 1.0,
    }
