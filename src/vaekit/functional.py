"""Pure tensor formulas of the VAE objective.

Units: every function returns a per-example quantity in **nats**, shape ``[B]``, summed
over all non-batch (event) dimensions: pixels for a log-density, latent dimensions for
a KL. Arguments broadcast against each other; the first axis of the broadcast shape is
the batch axis. Nothing here averages over pixels: that would rescale the likelihood
against the KL (the ``original_dim`` factor seen in Keras examples undoes exactly that).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaekit._checks import broadcast, check_choice, check_finite, check_range
from vaekit._fused import bernoulli_logits_log_prob, kl_logvar_standard

__all__ = [
    "kl_normal_std",
    "kl_normal",
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "laplace_log_prob",
    "continuous_bernoulli_log_prob",
    "continuous_bernoulli_log_norm",
    "discretized_logistic_log_prob",
    "discretized_logistic_log_mass",
    "log_mean_exp",
    "iwae_bound",
    "sum_event",
    "mmd",
    "aggregate_log_q",
    "kl_categorical_uniform",
]

_LOG_2PI = math.log(2.0 * math.pi)


def sum_event(t: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the first: ``[B, ...] -> [B]`` (a 1-D input is returned as is)."""
    return t.reshape(t.shape[0], -1).sum(1) if t.dim() > 1 else t


def kl_normal_std(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) in nats, summed over non-batch dims -> ``[B]``.

    ``0.5 * sum(e^logvar + mu^2 - 1 - logvar)`` (Kingma & Welling 2014, appendix B).
    ``e^v - 1 - v`` is computed as ``expm1(v) - v``: with ``exp(v) - 1`` it rounds to a
    small negative KL for |v| below the float epsilon.
    """
    mu, logvar = broadcast(mu=mu, logvar=logvar)
    return sum_event(kl_logvar_standard(mu, logvar))


def kl_normal(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) for diagonal Gaussians, nats ``[B]``.

    ``0.5 * sum(logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)``.
    """
    mu_q, logvar_q, mu_p, logvar_p = broadcast(
        mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p
    )
    d = logvar_q - logvar_p  # expm1(d) - d >= 0 in floating point too (see kl_normal_std)
    return 0.5 * sum_event(torch.expm1(d) - d + (mu_q - mu_p).square() * torch.exp(-logvar_p))


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x | sigmoid(logits)) in nats, summed over dims -> ``[B]``; x in [0, 1].

    ``sum(x * logits - softplus(logits))`` = minus the summed binary cross-entropy with logits.
    For non-binary x in (0, 1) this is *not* a normalised density: use the continuous Bernoulli.
    """
    check_range("x", x, 0.0, 1.0, "Bernoulli data must be in [0, 1] (scale 0-255 images by 1/255)")
    logits, x = broadcast(logits=logits, x=x)
    if logits.dim() < 2:  # [B]: one term per example, nothing to sum (as sum_event)
        return logits * x - F.softplus(logits)
    return bernoulli_logits_log_prob(logits, x, logits.dim() - 1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density with the full normaliser, nats ``[B]``.

    ``-0.5 * sum(log(2 pi) + logvar + (x - mean)^2 / e^logvar)``.
    """
    check_finite("x", x)
    x, mean, logvar = broadcast(x=x, mean=mean, logvar=logvar)
    return -0.5 * sum_event(_LOG_2PI + logvar + (x - mean).square() * torch.exp(-logvar))


def laplace_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Laplace log-density, nats ``[B]``: ``sum(-log 2 - log_scale - |x - loc| / e^log_scale)``."""
    check_finite("x", x)
    x, loc, log_scale = broadcast(x=x, loc=loc, log_scale=log_scale)
    return sum_event(-math.log(2.0) - log_scale - (x - loc).abs() * torch.exp(-log_scale))


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """Elementwise log C(eta) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019).

    With lambda = sigmoid(eta), ``C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta/2)``,
    computed as ``log|eta| - log(1 - e^-|eta|) + log(1 + e^-|eta|)``; near eta = 0 the Taylor
    series ``log 2 + eta^2/12 - 7 eta^4/1440`` (error below 1e-13 for |eta| < 1e-2).
    """
    a = logits.abs()
    small = a < 1e-2
    safe = torch.where(small, torch.ones_like(a), a)
    exact = torch.log(safe) - torch.log(-torch.expm1(-safe)) + torch.log1p(torch.exp(-safe))
    a2 = logits.square()
    taylor = math.log(2.0) + a2 / 12.0 - 7.0 * a2.square() / 1440.0
    return torch.where(small, taylor, exact)


def continuous_bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Continuous-Bernoulli log-density with its normaliser, nats ``[B]``; x in [0, 1].

    ``sum(x * logits - softplus(logits) + log C(logits))``, see
    :func:`continuous_bernoulli_log_norm`.
    """
    check_range("x", x, 0.0, 1.0, "continuous Bernoulli data must be in [0, 1]")
    logits, x = broadcast(logits=logits, x=x)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return sum_event(continuous_bernoulli_log_norm(logits) - bce)


def _log_sigmoid_diff(a: torch.Tensor, b: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)) for a > b, given ``gap = a - b > 0`` computed exactly.

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^-(a - b)): three log-terms, all
    <= 0, so nothing cancels in either tail. Subtracting two log-sigmoids instead loses every
    digit when a ~ b (a wide logistic: float32 gave -69.8 instead of -18.2 at log-scale 12).
    """
    return F.logsigmoid(a) + F.logsigmoid(-b) + _log1mexp((-gap).clamp(max=-1e-30))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^d) for d < 0: expm1 near 0, log1p far from it (Maechler 2012).

    Each branch sees only inputs where it is finite, so `where` passes no NaN gradient.
    """
    near = d > -math.log(2.0)
    d_near = torch.where(near, d, torch.full_like(d, -1.0))
    d_far = torch.where(near, torch.full_like(d, -1.0), d)
    return torch.where(near, torch.log(-torch.expm1(d_near)), torch.log1p(-torch.exp(d_far)))


def discretized_logistic_log_prob(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """Discretized-logistic log-probability (PixelCNN++, Salimans et al. 2017), nats ``[B]``.

    x is scaled to [-1, 1] with ``bins`` equally spaced values (bin half-width
    ``h = 1/(bins - 1)``). Each bin has mass ``F((x + h - loc)/s) - F((x - h - loc)/s)``
    with F the logistic CDF and ``s = e^log_scale``; the edge bins at -1 and 1 take the
    whole tails, so the masses of all ``bins`` values sum to exactly 1.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2; received {bins}")
    check_range("x", x, -1.0, 1.0, "discretized-logistic data must be scaled to [-1, 1]")
    x, loc, log_scale = broadcast(x=x, loc=loc, log_scale=log_scale)
    return sum_event(discretized_logistic_log_mass(x, loc, log_scale, bins))


def discretized_logistic_log_mass(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """Elementwise log-mass of :func:`discretized_logistic_log_prob` (no sum, no checks)."""
    h = 1.0 / (bins - 1)
    inv_s = torch.exp(-log_scale)
    upper = (x - loc + h) * inv_s
    lower = (x - loc - h) * inv_s
    log_cdf_upper = F.logsigmoid(upper)  # left edge bin: F(upper)
    log_sf_lower = F.logsigmoid(-lower)  # right edge bin: 1 - F(lower)
    mid = _log_sigmoid_diff(upper, lower, 2.0 * h * inv_s)
    return torch.where(x < -1.0 + h, log_cdf_upper, torch.where(x > 1.0 - h, log_sf_lower, mid))


def log_mean_exp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Stable ``log(mean(exp(t), dim))`` = ``logsumexp(t, dim) - log(n)``."""
    return torch.logsumexp(t, dim=dim) - math.log(t.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """IWAE bound ``log (1/K) sum_k w_k`` (Burda et al. 2015), nats ``[B]``; log_w is ``[K, B]``.

    ``log_w[k, b] = log p(x_b, z_k) - log q(z_k | x_b)`` with z_k ~ q(z | x_b).
    """
    if log_w.dim() != 2:
        raise ValueError(f"log_w must have shape [K, B]; received shape {tuple(log_w.shape)}")
    return log_mean_exp(log_w, dim=0)


def _kernel(sq_dist: torch.Tensor, kernel: str, sigma2: float, dim: int) -> torch.Tensor:
    if kernel == "rbf":
        return torch.exp(-sq_dist / (2.0 * sigma2))
    c = 2.0 * dim * sigma2
    return c / (c + sq_dist)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str = "rbf",
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Squared maximum mean discrepancy between samples x ``[N, D]`` and y ``[M, D]``: a scalar.

    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)`` (Gretton et al. 2012); ``unbiased``
    leaves the diagonal out of the first two means (``1/(N(N-1)) sum_{i != j}``), the
    biased (V-statistic) form keeps it (``1/N^2 sum_{i,j}``, never negative). Kernels,
    sigma = ``bandwidth``:

    - ``"rbf"``: ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``; default ``sigma^2 = D / 2``,
      i.e. ``exp(-||a - b||^2 / D)`` (the InfoVAE choice, Zhao et al. 2017).
    - ``"imq"``: ``k(a, b) = C / (C + ||a - b||^2)`` with ``C = 2 D sigma^2``; default
      ``sigma = 1``, the WAE choice for a unit-variance prior (Tolstikhin et al. 2018).

    A two-sample statistic in squared kernel units (not nats, not per example): objectives
    weight it by lambda. Leading axes of x and y beyond the last are flattened into samples.
    """
    check_choice("kernel", kernel, ("rbf", "imq"))
    if x.dim() < 2 or y.dim() < 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            "x and y must be [N, D] and [M, D] samples with the same D; received shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    n, m, d = x.shape[0], y.shape[0], x.shape[-1]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"the unbiased MMD needs >= 2 samples on each side; received N={n}, M={m}")
    if bandwidth is None:
        sigma2 = d / 2.0 if kernel == "rbf" else 1.0
    elif isinstance(bandwidth, bool) or not (
        isinstance(bandwidth, int | float) and math.isfinite(bandwidth) and bandwidth > 0
    ):
        raise ValueError(f"bandwidth must be a positive number or None; received {bandwidth!r}")
    else:
        sigma2 = float(bandwidth) ** 2

    def gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # the broadcast difference, not |a|^2 + |b|^2 - 2ab: exact (no cancellation) at a ~ b
        return _kernel((a.unsqueeze(1) - b.unsqueeze(0)).square().sum(-1), kernel, sigma2, d)

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    if unbiased:
        exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return exx + eyy - 2.0 * kxy.mean()


def _mss_log_weights(batch: int, dataset_size: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` log weights of minibatch stratified sampling (Chen et al. 2018, appendix C.2).

    Row i weighs its own posterior ``1/N``, one other ((i + 1) mod B) ``(N - M) / (N M)`` and
    the remaining ``M - 1`` others ``1/M`` (M = B - 1); each row sums to 1. Every row has its
    stratum member, unlike the published code whose last row misses it (rtqichen/beta-tcvae#1).
    """
    n, m = dataset_size, batch - 1
    w = torch.full((batch, batch), 1.0 / m, dtype=torch.float64)
    idx = torch.arange(batch)
    w[idx, (idx + 1) % batch] = (n - m) / (n * m)
    w[idx, idx] = 1.0 / n
    return w.log().to(dtype=like.dtype, device=like.device)


def aggregate_log_q(
    log_q: torch.Tensor, dataset_size: int, estimator: str = "mws"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates of log q(z_i) and sum_d log q(z_id), nats ``[B]`` each.

    ``log_q[i, j, d] = log q(z_id | x_j)`` for the B samples z_i ~ q(z | x_i) of one
    minibatch of a data set of N = ``dataset_size`` examples (Chen et al. 2018, appendix C):

    - ``"mws"`` (minibatch weighted sampling): ``log q(z_i) ~ logsumexp_j sum_d log_q[i, j, d]
      - log(N B)``, each marginal likewise. As published: it weighs the B posteriors by
      ``1/(N B)``, so it is biased (with all posteriors equal it gives log q(z|x) - log N).
    - ``"mss"`` (minibatch stratified sampling): the same log-sums with the weights of
      :func:`_mss_log_weights` instead of ``1/(N B)``; ``exp`` of it is unbiased for q(z).

    Returns ``(log q(z_i), sum_d log q(z_id))``.
    """
    check_choice("estimator", estimator, ("mws", "mss"))
    if log_q.dim() != 3 or log_q.shape[0] != log_q.shape[1]:
        raise ValueError(f"log_q must have shape [B, B, D]; received {tuple(log_q.shape)}")
    b = log_q.shape[0]
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < b:
        raise ValueError(
            f"dataset_size must be an integer >= the batch size {b}; received {dataset_size!r}"
        )
    if estimator == "mws":
        log_w = torch.full(
            (b, b), -math.log(dataset_size * b), dtype=log_q.dtype, device=log_q.device
        )
    else:
        if b < 2:
            raise ValueError(f"estimator='mss' needs a batch of >= 2 examples; received {b}")
        log_w = _mss_log_weights(b, dataset_size, log_q)
    log_qz = torch.logsumexp(log_w + log_q.sum(-1), dim=1)
    log_prod_marginals = torch.logsumexp(log_w.unsqueeze(-1) + log_q, dim=1).sum(-1)
    return log_qz, log_prod_marginals


def kl_categorical_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(Cat(q) || Uniform(C)) summed over independent categorical variables, nats ``[B]``.

    ``KL = sum_m [sum_c q_mc log q_mc + log C]`` with ``q_m = softmax(logits[..., m, :])``;
    ``logits``: ``[B, M, C]`` (or ``[B, C]`` for one variable). 0 for a uniform q, at most
    ``M log C`` for one-hot q. A relaxed (Gumbel-softmax) latent uses this KL of its
    categorical probabilities (Jang et al. 2017; Dupont 2018, JointVAE).
    """
    if logits.dim() < 2 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must be [B, C] or [B, M, C] with C >= 2 categories; received shape "
            f"{tuple(logits.shape)}"
        )
    log_q = torch.log_softmax(logits, dim=-1)
    per_variable = (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])
    return sum_event(per_variable)
