"""Real-world VAE losses, ``fn(recon_x, x, mu, logvar)``, for the doctor's gallery (tests/test_doctor.py).

Each is transcribed from its source (named in its docstring); what each computes is known by
construction and asserted in the tests. They are module-level so that ``vaekit doctor
tests.helpers.doctor_gallery:NAME`` can import them.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def pytorch_example(recon_x, x, mu, logvar):
    """pytorch/examples vae/main.py (commit 77f55b9): BCE summed + KLD: -ELBO summed over the batch."""
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def keras_example(data, reconstruction, z_mean, z_log_var):
    """keras-io examples/generative/vae.py (commit cca4efb) train_step, in NumPy with Keras'
    ``binary_crossentropy`` (probabilities clipped to [1e-7, 1 - 1e-7], mean over the last
    axis, size 1), summed over axes (1, 2): -ELBO averaged over the batch."""
    data, reconstruction = reconstruction, data  # fn(recon_x, x, ...) order
    r = np.clip(reconstruction, 1e-7, 1 - 1e-7)
    bce = -np.mean(data * np.log(r) + (1 - data) * np.log(1 - r), axis=-1)
    reconstruction_loss = np.mean(np.sum(bce, axis=(1, 2)))
    kl_loss = -0.5 * (1 + z_log_var - np.square(z_mean) - np.exp(z_log_var))
    kl_loss = np.mean(np.sum(kl_loss, axis=1))
    return reconstruction_loss + kl_loss


def mean_over_pixels(recon_x, x, mu, logvar):
    """The common mistake: BCE averaged over pixels (no original_dim factor), KL per example."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784))  # mean over batch and pixels
    kld = torch.mean(-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
    return bce + kld


KLD_WEIGHT = 0.00025


def pytorch_vae_kld_weight(recons, input, mu, log_var):
    """PyTorch-VAE (AntixK) VanillaVAE.loss_function: F.mse_loss (mean) + kld_weight * KLD."""
    recons_loss = F.mse_loss(recons, input)
    kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    loss = recons_loss + KLD_WEIGHT * kld_loss
    return {"loss": loss, "Reconstruction_Loss": recons_loss.detach(), "KLD": -kld_loss.detach()}


def _log_normal_pdf(sample, mean, logvar):
    logvar = torch.as_tensor(logvar, dtype=sample.dtype)
    log2pi = math.log(2.0 * math.pi)
    return torch.sum(-0.5 * ((sample - mean) ** 2.0 * torch.exp(-logvar) + logvar + log2pi), 1)


def tf_tutorial_mc(x_logit, x, mean, logvar):
    """TensorFlow's CVAE tutorial compute_loss (in PyTorch): one z, log p(x|z) + log p(z) - log q(z|x)."""
    z = mean + torch.randn_like(mean) * torch.exp(logvar * 0.5)
    cross_ent = F.binary_cross_entropy_with_logits(x_logit, x, reduction="none")
    logpx_z = -torch.sum(cross_ent, dim=1)
    logpz = _log_normal_pdf(z, 0.0, 0.0)
    logqz_x = _log_normal_pdf(z, mean, logvar)
    return -torch.mean(logpx_z + logpz - logqz_x)


def flipped_kl(recon_x, x, mu, logvar):
    """The sign mistake: + 0.5 * sum(1 + logvar - mu^2 - e^logvar), i.e. rec - KL."""
    BCE = F.binary_cross_entropy(recon_x, x, reduction="sum")
    return BCE + 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


NOT_A_FUNCTION = 3
