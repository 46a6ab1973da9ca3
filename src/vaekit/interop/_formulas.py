"""The formulas of :mod:`vaekit.functional`, written once for any array namespace ``xp``.

:mod:`vaekit.interop.jax` passes ``jax.numpy`` (plus ``jax.nn``), :mod:`vaekit.interop.keras`
passes ``keras.ops``; the PyTorch reference stays :mod:`vaekit.functional`, and
``tests/interop`` holds all three together (float64 to 1e-10, values and input gradients).
Each function mirrors its namesake term by term, including the stable branches, so the
three agree to rounding. Units as there: per-example nats ``[B]``, summed over every axis
but the first.

``xp`` needs: ``asarray abs exp expm1 log log1p square where clip sum reshape
broadcast_to full_like ones_like logsumexp log_sigmoid`` with the array-API / NumPy
meaning, plus ``is_concrete(a)`` (False for a traced value, whose data cannot be read) and
``to_numpy(a)``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, NamedTuple

import numpy as np
import torch

from vaekit._checks import check_choice, check_positive, check_range, validation_enabled

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
# vaekit.posteriors.DiagonalGaussian clamps the log-variance to this range
LOGVAR_MIN, LOGVAR_MAX = -30.0, 30.0
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")
REDUCTIONS = ("mean", "sum", "none")
# the classic-signature loss also takes a Gaussian on the decoder output (a mean)
CLASSIC_LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
PARAMS = ("logvar", "scale")
# torch's binary_cross_entropy clamps log-probabilities at -100 (vaekit.likelihoods does too)
LOG_PROB_MIN = -100.0


class LossOutput(NamedTuple):
    """``loss`` (reduced over the batch as asked) and the per-example terms, each ``[B]`` nats.

    A NamedTuple, so a JAX pytree: it can leave ``jit`` and be the aux output of ``grad``.
    """

    loss: Any
    per_example: dict[str, Any]


# ---------------------------------------------------------------- helpers


def _values(xp, name: str, a, low: float, high: float, hint: str) -> None:
    """vaekit's own range/finite check (same message) on data that can be read.

    Traced values (inside ``jax.jit``, or a Keras step compiled by JAX) are skipped: their
    data do not exist yet. The switch is :func:`vaekit.validation`, as for PyTorch.
    """
    if validation_enabled() and xp.is_concrete(a):
        as_torch = torch.from_numpy(np.array(xp.to_numpy(a), dtype=np.float64))  # a writable copy
        check_range(name, as_torch, low, high, hint)


def broadcast(xp, **arrays) -> tuple:
    """Broadcast named arrays together; a mismatch names the arguments and shapes."""
    arrays = {k: xp.asarray(v) for k, v in arrays.items()}
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    try:
        shape = np.broadcast_shapes(*shapes.values())
    except ValueError:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None
    return tuple(
        v if tuple(v.shape) == shape else xp.broadcast_to(v, shape) for v in arrays.values()
    )


def _mean(xp, t, axis=None):
    """``sum / n``: keras.ops.mean computes float64 in float32 on the jax and torch backends."""
    n = int(np.prod(t.shape)) if axis is None else t.shape[axis]
    return xp.sum(t, axis=axis) / n


def sum_event(xp, t):
    """Sum over every axis but the first: ``[B, ...] -> [B]`` (a 1-D input is returned as is)."""
    return xp.sum(xp.reshape(t, (t.shape[0], -1)), axis=1) if len(t.shape) > 1 else t


# ---------------------------------------------------------------- KL terms


def kl_normal_std(xp, mu, logvar):
    mu, logvar = broadcast(xp, mu=mu, logvar=logvar)
    return 0.5 * sum_event(xp, xp.expm1(logvar) - logvar + xp.square(mu))


def kl_normal(xp, mu_q, logvar_q, mu_p, logvar_p):
    mu_q, logvar_q, mu_p, logvar_p = broadcast(
        xp, mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p
    )
    d = logvar_q - logvar_p
    return 0.5 * sum_event(xp, xp.expm1(d) - d + xp.square(mu_q - mu_p) * xp.exp(-logvar_p))


# ---------------------------------------------------------------- log-densities


def _bce(xp, logits, x):
    # the form torch's binary_cross_entropy_with_logits evaluates
    return (1.0 - x) * logits - xp.log_sigmoid(logits)


def bernoulli_log_prob(xp, logits, x):
    _values(xp, "x", x, 0.0, 1.0, "Bernoulli data must be in [0, 1] (scale 0-255 images by 1/255)")
    logits, x = broadcast(xp, logits=logits, x=x)
    return -sum_event(xp, _bce(xp, logits, x))


def bernoulli_probs_log_prob(xp, probs, x):
    _values(
        xp, "recon_x", probs, 0.0, 1.0, "probs=True takes probabilities; use probs=False for logits"
    )
    _values(xp, "x", x, 0.0, 1.0, "Bernoulli data must be in [0, 1] (scale 0-255 images by 1/255)")
    probs, x = broadcast(xp, probs=probs, x=x)
    log_p = xp.clip(xp.log(probs), LOG_PROB_MIN, math.inf)
    log_1mp = xp.clip(xp.log1p(-probs), LOG_PROB_MIN, math.inf)
    return sum_event(xp, x * log_p + (1.0 - x) * log_1mp)


def gaussian_log_prob(xp, x, mean, logvar):
    _values(xp, "x", x, -math.inf, math.inf, "")
    x, mean, logvar = broadcast(xp, x=x, mean=mean, logvar=logvar)
    return -0.5 * sum_event(xp, _LOG_2PI + logvar + xp.square(x - mean) * xp.exp(-logvar))


def laplace_log_prob(xp, x, loc, log_scale):
    _values(xp, "x", x, -math.inf, math.inf, "")
    x, loc, log_scale = broadcast(xp, x=x, loc=loc, log_scale=log_scale)
    return sum_event(xp, -_LOG_2 - log_scale - xp.abs(x - loc) * xp.exp(-log_scale))


def continuous_bernoulli_log_norm(xp, logits):
    logits = xp.asarray(logits)
    a = xp.abs(logits)
    small = a < 1e-2
    safe = xp.where(small, xp.ones_like(a), a)
    exact = xp.log(safe) - xp.log(-xp.expm1(-safe)) + xp.log1p(xp.exp(-safe))
    a2 = xp.square(logits)
    taylor = _LOG_2 + a2 / 12.0 - 7.0 * xp.square(a2) / 1440.0
    return xp.where(small, taylor, exact)


def continuous_bernoulli_log_prob(xp, logits, x):
    _values(xp, "x", x, 0.0, 1.0, "continuous Bernoulli data must be in [0, 1]")
    logits, x = broadcast(xp, logits=logits, x=x)
    return sum_event(xp, continuous_bernoulli_log_norm(xp, logits) - _bce(xp, logits, x))


def _log1mexp(xp, d):
    near = d > -_LOG_2
    d_near = xp.where(near, d, xp.full_like(d, -1.0))
    d_far = xp.where(near, xp.full_like(d, -1.0), d)
    return xp.where(near, xp.log(-xp.expm1(d_near)), xp.log1p(-xp.exp(d_far)))


def _log_sigmoid_diff(xp, a, b, gap):
    # clip, not minimum: keras.ops.minimum returns float32 for float64 input on torch
    d = xp.clip(-gap, -math.inf, -1e-30)
    return xp.log_sigmoid(a) + xp.log_sigmoid(-b) + _log1mexp(xp, d)


def discretized_logistic_log_mass(xp, x, loc, log_scale, bins=256):
    x, loc, log_scale = (xp.asarray(a) for a in (x, loc, log_scale))
    h = 1.0 / (bins - 1)
    inv_s = xp.exp(-log_scale)
    upper = (x - loc + h) * inv_s
    lower = (x - loc - h) * inv_s
    log_cdf_upper = xp.log_sigmoid(upper)
    log_sf_lower = xp.log_sigmoid(-lower)
    mid = _log_sigmoid_diff(xp, upper, lower, 2.0 * h * inv_s)
    return xp.where(x < -1.0 + h, log_cdf_upper, xp.where(x > 1.0 - h, log_sf_lower, mid))


def discretized_logistic_log_prob(xp, x, loc, log_scale, bins=256):
    if bins < 2:
        raise ValueError(f"bins must be >= 2; received {bins}")
    _values(xp, "x", x, -1.0, 1.0, "discretized-logistic data must be scaled to [-1, 1]")
    x, loc, log_scale = broadcast(xp, x=x, loc=loc, log_scale=log_scale)
    return sum_event(xp, discretized_logistic_log_mass(xp, x, loc, log_scale, bins))


# ---------------------------------------------------------------- bounds


def log_mean_exp(xp, t, dim=0):
    t = xp.asarray(t)
    return xp.logsumexp(t, axis=dim) - math.log(t.shape[dim])


def iwae_bound(xp, log_w):
    log_w = xp.asarray(log_w)
    if len(log_w.shape) != 2:
        raise ValueError(f"log_w must have shape [K, B]; received shape {tuple(log_w.shape)}")
    return log_mean_exp(xp, log_w, dim=0)


def _normal_log_pdf(xp, z, mu=None, logvar=None):
    """log N(z | mu, e^logvar) summed over the last (latent) axis, ``[..., Z] -> [...]``; N(0, I) if no mu."""
    if mu is None:
        return -0.5 * xp.sum(_LOG_2PI + xp.square(z), axis=-1)
    return -0.5 * xp.sum(_LOG_2PI + logvar + xp.square(z - mu) * xp.exp(-logvar), axis=-1)


def _log_px(xp, likelihood, params, x, lead: int, probs: bool = False):
    """log p(x | params) per example for params ``[*lead, B, ...]`` -> ``[*lead, B]``."""
    if lead:
        shape = tuple(params.shape)
        if tuple(shape[lead : lead + 1]) != tuple(x.shape[:1]):
            raise ValueError(
                f"decoder output of shape {shape} must be [S, B, ...] with B = {x.shape[0]} "
                f"(the batch of x, shape {tuple(x.shape)})"
            )
        n = int(np.prod(shape[: lead + 1]))
        flat = xp.reshape(params, (n, *shape[lead + 1 :]))
        xs = xp.reshape(xp.broadcast_to(x, (*shape[:lead], *x.shape)), (n, *x.shape[1:]))
        return xp.reshape(_log_px(xp, likelihood, flat, xs, 0, probs), shape[: lead + 1])
    if callable(likelihood):
        return likelihood(params, x)
    if likelihood == "bernoulli":
        if probs:
            return bernoulli_probs_log_prob(xp, params, x)
        return bernoulli_log_prob(xp, params, x)
    return continuous_bernoulli_log_prob(xp, params, x)


def _check_loss_args(likelihood, reduction: str, beta=None, probs: bool = False) -> None:
    if not callable(likelihood):
        check_choice("likelihood", likelihood, LIKELIHOODS)
    check_choice("reduction", reduction, REDUCTIONS)
    if isinstance(beta, Real):
        check_positive("beta", beta, allow_zero=True)
    if not isinstance(probs, bool):
        raise ValueError(f"probs must be True or False; received {probs!r}")
    if probs and likelihood != "bernoulli":
        raise ValueError(
            f"probs=True needs likelihood='bernoulli' (probabilities of a decoder ending in a "
            f"sigmoid); received likelihood={likelihood!r}: give it logits (probs=False)"
        )


def _reduce(xp, per_example, reduction: str):
    if reduction == "mean":
        return _mean(xp, per_example)
    if reduction == "sum":
        return xp.sum(per_example)
    return per_example


def _check_latents(mu, logvar) -> None:
    if len(mu.shape) != 2 or tuple(mu.shape) != tuple(logvar.shape):
        raise ValueError(
            "mu and logvar must both have shape [B, Z] (the encoder output split in two halves); "
            f"received mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)}"
        )


def elbo_loss(
    xp, x, mu, logvar, params, *, beta=1.0, likelihood="bernoulli", reduction="mean", probs=False
):
    _check_loss_args(likelihood, reduction, beta, probs)
    x, mu, logvar, params = (xp.asarray(a) for a in (x, mu, logvar, params))
    _check_latents(mu, logvar)
    logvar = xp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)
    lead = len(params.shape) - len(x.shape)
    if lead not in (0, 1):
        raise ValueError(
            f"decoder output must have x's shape {tuple(x.shape)} or [S, *x.shape] for S samples; "
            f"received shape {tuple(params.shape)}"
        )
    log_px = _log_px(xp, likelihood, params, x, lead, probs)
    rec = -(_mean(xp, log_px, axis=0) if lead else log_px)
    kl = kl_normal_std(xp, mu, logvar)
    per_example_loss = rec + beta * kl
    per_example = {"bound": -rec - kl, "rec": rec, "kl": kl, "loss": per_example_loss}
    return LossOutput(_reduce(xp, per_example_loss, reduction), per_example)


def iwae_loss(
    xp, x, mu, logvar, z, params, *, likelihood="bernoulli", reduction="mean", probs=False
):
    _check_loss_args(likelihood, reduction, probs=probs)
    x, mu, logvar, z, params = (xp.asarray(a) for a in (x, mu, logvar, z, params))
    _check_latents(mu, logvar)
    if len(z.shape) != 3 or tuple(z.shape[1:]) != tuple(mu.shape):
        raise ValueError(
            f"z must have shape [K, B, Z] = [K, *mu.shape] = [K, {', '.join(map(str, mu.shape))}]; "
            f"received shape {tuple(z.shape)}"
        )
    if len(params.shape) != len(x.shape) + 1 or params.shape[0] != z.shape[0]:
        raise ValueError(
            f"decoder output must have shape [K, *x.shape] with K = {z.shape[0]} (one decoding "
            f"per sample in z) and x of shape {tuple(x.shape)}; received shape {tuple(params.shape)}"
        )
    logvar = xp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)
    log_px = _log_px(xp, likelihood, params, x, 1, probs)
    log_pz = _normal_log_pdf(xp, z)
    log_qz = _normal_log_pdf(xp, z, mu, logvar)
    bound = iwae_bound(xp, log_px + log_pz - log_qz)
    rec = -_mean(xp, log_px, axis=0)
    kl = _mean(xp, log_qz - log_pz, axis=0)
    per_example = {"bound": bound, "rec": rec, "kl": kl, "elbo": -rec - kl, "loss": -bound}
    return LossOutput(_reduce(xp, -bound, reduction), per_example)


# ---------------------------------------------------------------- the classic signature


def check_classic(
    xp, recon_x, x, mu, logvar, *, probs, likelihood, reduction, beta, scale, param
) -> tuple:
    """Argument checks of ``classic_loss`` (every framework): returns ``(recon_x, x, mu, p)``.

    x is reshaped to recon_x's shape when recon_x is flat ``[B, D]`` and x is ``[B, ...]``
    with D values per example (the examples' ``x.view(-1, 784)``); anything else must match.
    """
    check_choice("likelihood", likelihood, CLASSIC_LIKELIHOODS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("param", param, PARAMS)
    if isinstance(beta, Real):
        check_positive("beta", beta, allow_zero=True)
    if likelihood == "bernoulli" and not isinstance(probs, bool):
        raise ValueError(
            "probs must be stated for likelihood='bernoulli': True if recon_x holds "
            "probabilities (a decoder ending in a sigmoid), False if it holds logits; "
            f"received {probs!r}"
        )
    if likelihood != "bernoulli" and probs not in (None, False):
        raise ValueError(
            f"probs must be None or False for likelihood={likelihood!r} (recon_x is "
            f"{'logits' if likelihood == 'continuous_bernoulli' else 'the mean'}); received {probs!r}"
        )
    if isinstance(scale, bool) or not (isinstance(scale, Real) and 0 < scale < math.inf):
        raise ValueError(f"scale must be a positive finite number (sigma); received {scale!r}")
    recon_x, x, mu, logvar = (xp.asarray(a) for a in (recon_x, x, mu, logvar))
    rs, xs = tuple(recon_x.shape), tuple(x.shape)
    if len(rs) < 2:
        raise ValueError(f"recon_x must be a batch [B, ...]; received shape {rs}")
    if xs != rs:
        flat = len(rs) == 2 and len(xs) >= 2 and xs[0] == rs[0] and int(np.prod(xs[1:])) == rs[1]
        if not flat:
            raise ValueError(
                f"x must have recon_x's shape {rs} (or [B, ...] with {rs[-1]} values per example "
                f"for a flat recon_x); received x of shape {xs}"
            )
        x = xp.reshape(x, rs)
    _check_latents(mu, logvar)
    if mu.shape[0] != rs[0]:
        raise ValueError(
            f"mu must have recon_x's batch size {rs[0]}; received mu of shape {tuple(mu.shape)}"
        )
    if param == "scale":
        _values(xp, "logvar", logvar, 1e-300, math.inf, "param='scale' takes a positive sigma")
    return recon_x, x, mu, logvar


def classic_terms(xp, rec, kl, beta, reduction: str) -> LossOutput:
    """``LossOutput(loss = reduce(rec + beta kl), {"rec", "kl", "bound", "loss"})``, nats ``[B]``."""
    per_example_loss = rec + beta * kl
    per_example = {"rec": rec, "kl": kl, "bound": -rec - kl, "loss": per_example_loss}
    return LossOutput(_reduce(xp, per_example_loss, reduction), per_example)


def classic_options(
    *, probs=None, likelihood="bernoulli", reduction="mean", beta=1.0, scale=1.0, param="logvar"
) -> dict:
    """The keyword options of ``classic_loss`` with their defaults (as ``vaekit.classic_loss``)."""
    return {"probs": probs, "likelihood": likelihood, "reduction": reduction, "beta": beta,
            "scale": scale, "param": param}  # fmt: skip


def classic_loss(xp, recon_x, x, mu, logvar, options: dict):
    try:
        o = classic_options(**options)
    except TypeError:
        unknown = sorted(set(options) - set(classic_options()))
        raise ValueError(
            f"classic_loss takes the options {sorted(classic_options())}; received {unknown}"
        ) from None
    likelihood, probs, scale, param = o["likelihood"], o["probs"], o["scale"], o["param"]
    recon_x, x, mu, p = check_classic(xp, recon_x, x, mu, logvar, **o)
    if likelihood == "gaussian":
        log_var = xp.full_like(recon_x, 2.0 * math.log(scale))
        log_px = gaussian_log_prob(xp, x, recon_x, log_var)
    elif likelihood == "continuous_bernoulli":
        log_px = continuous_bernoulli_log_prob(xp, recon_x, x)
    elif probs:
        log_px = bernoulli_probs_log_prob(xp, recon_x, x)
    else:
        log_px = bernoulli_log_prob(xp, recon_x, x)
    logvar = 2.0 * xp.log(p) if param == "scale" else xp.clip(p, LOGVAR_MIN, LOGVAR_MAX)
    return classic_terms(xp, -log_px, kl_normal_std(xp, mu, logvar), o["beta"], o["reduction"])
