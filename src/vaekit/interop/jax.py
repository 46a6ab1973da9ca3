"""The vaekit loss for ``jax.numpy`` arrays: same formulas, signatures and units as PyTorch.

Every function mirrors its namesake in :mod:`vaekit.functional` (see there for the
derivations and references) and returns per-example nats ``[B]``, summed over every
axis but the first. All are pure, so they work under ``jax.jit`` and ``jax.grad``;
``tests/interop/test_jax.py`` proves them equal to the PyTorch reference
(float64 to 1e-10, values and input gradients). Enable float64 with
``jax.config.update("jax_enable_x64", True)``.

Value checks (x outside the likelihood's support, NaN) raise ``ValueError`` like PyTorch's
on concrete arrays; under ``jit`` the data are traced and cannot be read, so only shapes
are checked there. :func:`vaekit.validation` switches value checks off, as for PyTorch.

Losses from encoder and decoder outputs::

    mu, logvar = jnp.split(encoder(x), 2, axis=-1)        # [B, Z] each: [mean | log-variance]
    z = reparameterize(key, mu, logvar)                   # [B, Z]; samples=K gives [K, B, Z]
    out = elbo_loss(x, mu, logvar, decoder(z))            # decoder output: Bernoulli logits
    out.loss, out.per_example["rec"], out.per_example["kl"]

Existing code with a ``loss_function(recon_x, x, mu, logvar)`` (Flax's ``examples/vae``):
``classic_loss(recon_x, x, mu, logvar, probs=False)``; a decoder ending in a sigmoid:
``probs=True`` (here and in ``elbo_loss``). ``reparameterize(mu=, logvar=, seed=)`` reads the
same as in :mod:`vaekit.interop.keras`.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from vaekit.interop import _formulas as _f
from vaekit.interop._formulas import LossOutput

__all__ = [
    "LossOutput",
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
    "reparameterize",
    "elbo_loss",
    "iwae_loss",
    "classic_loss",
]

_XP = SimpleNamespace(
    asarray=jnp.asarray,
    abs=jnp.abs,
    exp=jnp.exp,
    expm1=jnp.expm1,
    log=jnp.log,
    log1p=jnp.log1p,
    square=jnp.square,
    where=jnp.where,
    clip=jnp.clip,
    sum=jnp.sum,
    reshape=jnp.reshape,
    broadcast_to=jnp.broadcast_to,
    full_like=jnp.full_like,
    ones_like=jnp.ones_like,
    logsumexp=jax.scipy.special.logsumexp,
    log_sigmoid=jax.nn.log_sigmoid,
    is_concrete=lambda a: not isinstance(a, jax.core.Tracer),
    to_numpy=np.asarray,
)


def sum_event(t: jax.Array) -> jax.Array:
    """Sum over every axis but the first: ``[B, ...] -> [B]`` (a 1-D input is returned as is)."""
    return _f.sum_event(_XP, jnp.asarray(t))


def kl_normal_std(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mu, e^logvar) || N(0, I)), nats ``[B]``: ``0.5 * sum(e^logvar - 1 - logvar + mu^2)``."""
    return _f.kl_normal_std(_XP, mu, logvar)


def kl_normal(
    mu_q: jax.Array, logvar_q: jax.Array, mu_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)), diagonal Gaussians, nats ``[B]``."""
    return _f.kl_normal(_XP, mu_q, logvar_q, mu_p, logvar_p)


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log Bernoulli(x | sigmoid(logits)) = ``sum(x * logits - softplus(logits))``, nats ``[B]``; x in [0, 1]."""
    return _f.bernoulli_log_prob(_XP, logits, x)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Diagonal Gaussian log-density with the full normaliser, nats ``[B]``."""
    return _f.gaussian_log_prob(_XP, x, mean, logvar)


def laplace_log_prob(x: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Laplace log-density ``sum(-log 2 - log_scale - |x - loc| / e^log_scale)``, nats ``[B]``."""
    return _f.laplace_log_prob(_XP, x, loc, log_scale)


def continuous_bernoulli_log_norm(logits: jax.Array) -> jax.Array:
    """Elementwise log C(logits) of the continuous Bernoulli, stable at 0 and in both tails."""
    return _f.continuous_bernoulli_log_norm(_XP, logits)


def continuous_bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Continuous-Bernoulli log-density with its normaliser, nats ``[B]``; x in [0, 1]."""
    return _f.continuous_bernoulli_log_prob(_XP, logits, x)


def discretized_logistic_log_mass(
    x: jax.Array, loc: jax.Array, log_scale: jax.Array, bins: int = 256
) -> jax.Array:
    """Elementwise log-mass of :func:`discretized_logistic_log_prob` (no sum, no checks)."""
    return _f.discretized_logistic_log_mass(_XP, x, loc, log_scale, bins)


def discretized_logistic_log_prob(
    x: jax.Array, loc: jax.Array, log_scale: jax.Array, bins: int = 256
) -> jax.Array:
    """Discretized-logistic log-probability (PixelCNN++), nats ``[B]``; x scaled to [-1, 1]."""
    return _f.discretized_logistic_log_prob(_XP, x, loc, log_scale, bins)


def log_mean_exp(t: jax.Array, dim: int = 0) -> jax.Array:
    """Stable ``log(mean(exp(t), dim))`` = ``logsumexp(t, dim) - log(n)``."""
    return _f.log_mean_exp(_XP, t, dim)


def iwae_bound(log_w: jax.Array) -> jax.Array:
    """IWAE bound ``log (1/K) sum_k w_k`` (Burda et al. 2015), nats ``[B]``; log_w is ``[K, B]``."""
    return _f.iwae_bound(_XP, log_w)


def reparameterize(
    key: jax.Array | None = None,
    mu: jax.Array | None = None,
    logvar: jax.Array | None = None,
    samples: int | None = None,
    *,
    seed: jax.Array | int | None = None,
) -> jax.Array:
    """Draw z = mu + e^(logvar/2) * eps, eps ~ N(0, I): ``[B, Z]``, or ``[samples, B, Z]``.

    Two call forms: JAX's positional ``reparameterize(key, mu, logvar)``, and the keyword
    form shared with :func:`vaekit.interop.keras.reparameterize`,
    ``reparameterize(mu=mu, logvar=logvar, seed=key_or_int)``. A key that is not a PRNG key
    (e.g. the Keras order ``(mu, logvar, seed)``) is a ``ValueError``. logvar is clamped to
    [-30, 30] as in :class:`vaekit.posteriors.DiagonalGaussian`.
    """
    if seed is not None:
        if key is not None:
            raise ValueError(f"give key or seed, not both; received key={key!r}, seed={seed!r}")
        key = jax.random.key(seed) if isinstance(seed, int) else seed
    if not _is_key(key):
        raise ValueError(
            "key must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)); received "
            f"{_describe(key)}. The JAX order is reparameterize(key, mu, logvar); the keyword "
            "form reparameterize(mu=mu, logvar=logvar, seed=key) is the same in JAX and Keras"
        )
    if mu is None or logvar is None:
        raise ValueError(f"mu and logvar are required; received mu={mu!r}, logvar={logvar!r}")
    mu, logvar = jnp.asarray(mu), jnp.asarray(logvar)
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have the same shape [B, Z]; received mu {mu.shape}, "
            f"logvar {logvar.shape}"
        )
    shape = mu.shape if samples is None else (samples, *mu.shape)
    eps = jax.random.normal(key, shape, dtype=mu.dtype)
    return mu + jnp.exp(0.5 * jnp.clip(logvar, _f.LOGVAR_MIN, _f.LOGVAR_MAX)) * eps


def _is_key(key) -> bool:
    """A typed key (``jax.random.key``) or a raw ``uint32[2]`` key (``jax.random.PRNGKey``)."""
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return True
    return key.dtype == jnp.uint32 and tuple(key.shape) == (2,)


def _describe(a) -> str:
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        return f"an array of dtype {a.dtype} and shape {tuple(a.shape)}"
    return repr(a)


def classic_loss(
    recon_x: jax.Array, x: jax.Array, mu: jax.Array, logvar: jax.Array, **options
) -> LossOutput:
    """``loss_function(recon_x, x, mu, logvar)`` of the classic VAE scripts, exact; nats.

    Per example ``rec = -log p(x | recon_x)`` summed over pixels, ``kl = KL(N(mu,
    e^logvar) || N(0, I))`` analytic, ``loss = rec + beta kl``, reduced over the batch by
    ``reduction``. Same arguments in PyTorch (:func:`vaekit.classic_loss`) and Keras.

    Args:
        recon_x: decoder output ``[B, ...]`` (x's shape, or flat ``[B, D]``: x is then
            reshaped to it, as the scripts' ``x.view(-1, 784)``); x, mu, logvar as there.
        options: keywords, with :func:`vaekit.classic_loss`'s defaults: ``probs``,
            ``likelihood="bernoulli"``, ``reduction="mean"``, ``beta=1.0``, ``scale=1.0``,
            ``param="logvar"``; an unknown one is a ``ValueError``.
        probs: for ``likelihood="bernoulli"``, required: ``True`` for probabilities (a
            sigmoid at the end; log-probabilities clamped at -100 as torch's BCE), ``False``
            for logits.
        likelihood: ``"bernoulli" | "continuous_bernoulli"`` (logits) ``| "gaussian"``
            (recon_x the mean, sigma = ``scale``).
        param: ``"logvar"`` (the 4th argument is log sigma^2) or ``"scale"`` (it is sigma).

    Returns:
        ``LossOutput(loss, per_example={"rec", "kl", "bound", "loss"})``.
    """
    return _f.classic_loss(_XP, recon_x, x, mu, logvar, options)


def elbo_loss(
    x: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    params: jax.Array,
    *,
    beta: float | jax.Array = 1.0,
    likelihood="bernoulli",
    reduction: str = "mean",
    probs: bool = False,
) -> LossOutput:
    """Negative ELBO with an analytic KL to N(0, I), as ``vaekit.objectives.ELBO``; nats.

    Per example ``loss = rec + beta * kl``, ``rec = -mean_s log p(x | z_s)``,
    ``kl = KL(N(mu, e^logvar) || N(0, I))``, ``bound = -rec - kl`` (the beta-free ELBO).

    Args:
        x: data ``[B, ...]`` (in [0, 1] for the Bernoulli likelihoods).
        mu, logvar: the encoder output split in two halves, ``[B, Z]`` each; logvar is
            clamped to [-30, 30] as in :class:`vaekit.posteriors.DiagonalGaussian`.
        params: decoder output for z drawn by :func:`reparameterize` (x's shape), or for S
            draws ``[S, *x.shape]`` (rec is averaged over them).
        beta: KL weight (may be a traced value, e.g. from a schedule inside ``jit``).
        likelihood: ``"bernoulli"`` or ``"continuous_bernoulli"`` (params are logits), or a
            callable ``(params, x) -> [B]`` log-density such as
            ``lambda p, x: gaussian_log_prob(x, *jnp.split(p, 2, axis=1))``.
        reduction: ``"mean" | "sum" | "none"`` over the batch axis.
        probs: ``True`` if params are Bernoulli probabilities (a decoder ending in a
            sigmoid), read as ``max(log p, -100)`` like torch's BCE; ``False``: logits.

    Returns:
        ``LossOutput(loss, per_example={"bound", "rec", "kl", "loss"})`` (a pytree).
    """
    kw = {"beta": beta, "likelihood": likelihood, "reduction": reduction, "probs": probs}
    return _f.elbo_loss(_XP, x, mu, logvar, params, **kw)


def iwae_loss(
    x: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    z: jax.Array,
    params: jax.Array,
    *,
    likelihood="bernoulli",
    reduction: str = "mean",
    probs: bool = False,
) -> LossOutput:
    """Negative IWAE_K bound (Burda et al. 2015), as ``vaekit.objectives.IWAE``; nats.

    ``log w_k = log p(x | z_k) + log N(z_k | 0, I) - log N(z_k | mu, e^logvar)``,
    ``bound = log (1/K) sum_k w_k``, ``loss = -bound``; ``rec``, ``kl`` and ``elbo`` are the
    Monte Carlo terms averaged over the K draws. The gradient is the standard
    reparameterised one.

    Args:
        x: data ``[B, ...]``.
        mu, logvar: encoder output halves, ``[B, Z]`` each (logvar clamped to [-30, 30]).
        z: ``[K, B, Z]`` draws, e.g. ``reparameterize(key, mu, logvar, samples=K)``.
        params: decoder output for each draw, ``[K, *x.shape]``.
        likelihood, reduction, probs: as in :func:`elbo_loss`.

    Returns:
        ``LossOutput(loss, per_example={"bound", "rec", "kl", "elbo", "loss"})``.
    """
    return _f.iwae_loss(
        _XP, x, mu, logvar, z, params, likelihood=likelihood, reduction=reduction, probs=probs
    )
