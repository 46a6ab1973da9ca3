"""Sample quality in the feature space of vaekit's own small classifier (not the Inception FID).

No pretrained network can be downloaded here, so the features are the hidden layer of the
2-layer MLP classifier of :func:`vaekit.models.perceptual.classifier`, trained on the data
set's own training images and labels. The Fréchet distance of two Gaussians fitted to the
features (Heusel et al. 2017's formula) and the classifier's label entropies are comparable
between samplers of one data set, under one classifier, never with published FIDs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["feature_statistics", "frechet_distance", "label_entropies", "sample_quality"]


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` (float64) of features ``[N, F]``, N >= 2."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[0] < 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"features must be a tensor [N, F] with N >= 2; received {shape}")
    f = features.detach().double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the squared 2-Wasserstein distance
    between N(mu1, S1) and N(mu2, S2), in squared feature units (Dowson & Landau 1982).

    The matrix square root is ``scipy.linalg.sqrtm``; a tiny imaginary part from round-off is
    dropped, and a singular product is regularised by ``1e-6 I`` (as the reference FID code).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, float)), np.atleast_1d(np.asarray(mu2, float))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, float)), np.atleast_2d(np.asarray(sigma2, float))
    d = mu1.shape[0]
    for name, value, shape in (("mu2", mu2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; received {value.shape}")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(d)
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def label_entropies(logits: torch.Tensor) -> dict[str, float]:
    """Of class probabilities ``p(y|x) = softmax(logits)`` ``[N, C]``, in nats:

    ``mean_entropy = mean_n H(p(y|x_n))`` (low: each sample looks like one class) and
    ``marginal_entropy = H(mean_n p(y|x_n))`` (at most ``log C``: all classes are drawn).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty tensor [N, C]; received {logits!r:.80}")
    logp = torch.log_softmax(logits.double(), dim=1)
    per = -(logp.exp() * logp).sum(1)
    marginal = logp.exp().mean(0)
    h = -(marginal * marginal.clamp_min(1e-300).log()).sum()
    return {"mean_entropy": float(per.mean()), "marginal_entropy": float(h)}


@torch.no_grad()
def sample_quality(
    classifier: torch.nn.Module, samples: torch.Tensor, reference: torch.Tensor, batch: int = 1000
) -> dict[str, float]:
    """Fréchet distance between ``samples`` and ``reference`` images in ``classifier[0]``'s
    features, and the label entropies of the samples (nats; :func:`label_entropies`).

    ``classifier``: ``Sequential(features, head)`` (:func:`vaekit.models.perceptual.classifier`).
    Returns ``{"frechet_distance", "mean_entropy", "marginal_entropy", "max_entropy"}``
    (``max_entropy = log C``).
    """
    features, head = classifier[0], classifier[1]

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([features(x[i : i + batch]) for i in range(0, len(x), batch)])

    fs, fr = run(samples), run(reference)
    fd = frechet_distance(*feature_statistics(fs), *feature_statistics(fr))
    logits = head(fs)
    return {
        "frechet_distance": fd,
        **label_entropies(logits),
        "max_entropy": math.log(logits.shape[1]),
    }
