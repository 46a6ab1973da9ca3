"""The vaekit loss in ``keras.ops``, a Keras 3 ``VAE`` model and a ``BetaSchedule`` callback.

The formulas mirror :mod:`vaekit.functional` term by term (same signatures, per-example
nats ``[B]`` summed over every axis but the first) and run on any Keras 3 backend;
``tests/interop/test_keras.py`` proves them equal to the PyTorch reference on the torch and
jax backends (float64 to 1e-10, values and input gradients). Select the backend before
Keras is first imported, e.g. ``KERAS_BACKEND=torch`` (PyTorch is installed with vaekit;
Keras' own default, TensorFlow, is not).

No averaging over pixels: Keras' ``binary_crossentropy`` is a *mean* over the last axis,
which is why the Keras 2 VAE example multiplied it by ``original_dim`` (flat images) and the
current keras-io example sums it over axes (1, 2) (images ``[B, 28, 28, 1]``);
``bernoulli_log_prob`` is the sum. :class:`VAE` trains ``rec + beta * kl`` per example, averaged over the batch::

    vae = VAE(encoder, decoder)          # encoder: x -> [B, 2Z] = [mean | log-variance]
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(x, epochs=10, callbacks=[BetaSchedule(LinearWarmup(1.0, steps=5))])
    # logs: loss, rec, kl (nats per example) and beta
"""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
from keras import ops

from vaekit._checks import check_positive
from vaekit.interop import _formulas as _f
from vaekit.interop._formulas import LossOutput
from vaekit.schedules import Cyclical

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
    "VAE",
    "BetaSchedule",
    "Cyclical",
]


def _is_concrete(a) -> bool:
    """Whether ``a`` holds data now (not a tracer of a compiled step or a KerasTensor)."""
    if isinstance(a, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return not isinstance(a, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    return True  # torch and numpy run eagerly


def _to_numpy(a) -> np.ndarray:
    if not ops.is_tensor(a):
        return np.asarray(a)
    if keras.backend.backend() == "torch":  # keras' np.array(tensor) warns on NumPy 2
        return a.detach().cpu().double().numpy()
    return ops.convert_to_numpy(a)


_XP = SimpleNamespace(
    asarray=ops.convert_to_tensor,
    abs=ops.abs,
    exp=ops.exp,
    expm1=ops.expm1,
    log=ops.log,
    log1p=ops.log1p,
    square=ops.square,
    where=ops.where,
    clip=ops.clip,
    sum=ops.sum,
    reshape=ops.reshape,
    broadcast_to=ops.broadcast_to,
    full_like=ops.full_like,
    ones_like=ops.ones_like,
    logsumexp=ops.logsumexp,
    log_sigmoid=ops.log_sigmoid,
    is_concrete=_is_concrete,
    to_numpy=_to_numpy,
)


def sum_event(t):
    """Sum over every axis but the first: ``[B, ...] -> [B]`` (a 1-D input is returned as is)."""
    return _f.sum_event(_XP, ops.convert_to_tensor(t))


def kl_normal_std(mu, logvar):
    """KL(N(mu, e^logvar) || N(0, I)), nats ``[B]``: ``0.5 * sum(e^logvar - 1 - logvar + mu^2)``."""
    return _f.kl_normal_std(_XP, mu, logvar)


def kl_normal(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)), diagonal Gaussians, nats ``[B]``."""
    return _f.kl_normal(_XP, mu_q, logvar_q, mu_p, logvar_p)


def bernoulli_log_prob(logits, x):
    """log Bernoulli(x | sigmoid(logits)) = ``sum(x * logits - softplus(logits))``, nats ``[B]``; x in [0, 1]."""
    return _f.bernoulli_log_prob(_XP, logits, x)


def gaussian_log_prob(x, mean, logvar):
    """Diagonal Gaussian log-density with the full normaliser, nats ``[B]``."""
    return _f.gaussian_log_prob(_XP, x, mean, logvar)


def laplace_log_prob(x, loc, log_scale):
    """Laplace log-density ``sum(-log 2 - log_scale - |x - loc| / e^log_scale)``, nats ``[B]``."""
    return _f.laplace_log_prob(_XP, x, loc, log_scale)


def continuous_bernoulli_log_norm(logits):
    """Elementwise log C(logits) of the continuous Bernoulli, stable at 0 and in both tails."""
    return _f.continuous_bernoulli_log_norm(_XP, logits)


def continuous_bernoulli_log_prob(logits, x):
    """Continuous-Bernoulli log-density with its normaliser, nats ``[B]``; x in [0, 1]."""
    return _f.continuous_bernoulli_log_prob(_XP, logits, x)


def discretized_logistic_log_mass(x, loc, log_scale, bins: int = 256):
    """Elementwise log-mass of :func:`discretized_logistic_log_prob` (no sum, no checks)."""
    return _f.discretized_logistic_log_mass(_XP, x, loc, log_scale, bins)


def discretized_logistic_log_prob(x, loc, log_scale, bins: int = 256):
    """Discretized-logistic log-probability (PixelCNN++), nats ``[B]``; x scaled to [-1, 1]."""
    return _f.discretized_logistic_log_prob(_XP, x, loc, log_scale, bins)


def log_mean_exp(t, dim: int = 0):
    """Stable ``log(mean(exp(t), dim))`` = ``logsumexp(t, dim) - log(n)``."""
    return _f.log_mean_exp(_XP, t, dim)


def iwae_bound(log_w):
    """IWAE bound ``log (1/K) sum_k w_k`` (Burda et al. 2015), nats ``[B]``; log_w is ``[K, B]``."""
    return _f.iwae_bound(_XP, log_w)


def reparameterize(mu, logvar, seed=None, samples: int | None = None):
    """Draw z = mu + e^(logvar/2) * eps, eps ~ N(0, I): ``[B, Z]``, or ``[samples, B, Z]``.

    ``seed``: an int or a ``keras.random.SeedGenerator`` (use one inside a model, so each
    step draws afresh). The keyword form ``reparameterize(mu=mu, logvar=logvar, seed=s)``
    is the same in :func:`vaekit.interop.jax.reparameterize`; an array as ``seed`` (the
    JAX order ``(key, mu, logvar)``) is a ``ValueError``. logvar is clamped to [-30, 30] as
    in :class:`vaekit.posteriors.DiagonalGaussian`.
    """
    if not (seed is None or isinstance(seed, int | keras.random.SeedGenerator)):
        raise ValueError(
            "seed must be None, an int or a keras.random.SeedGenerator; received "
            f"{type(seed).__name__}. The Keras order is reparameterize(mu, logvar, seed) (JAX: "
            "reparameterize(key, mu, logvar)); the keyword form reparameterize(mu=mu, "
            "logvar=logvar, seed=s) is the same in both"
        )
    mu, logvar = ops.convert_to_tensor(mu), ops.convert_to_tensor(logvar)
    if tuple(mu.shape) != tuple(logvar.shape):
        raise ValueError(
            f"mu and logvar must have the same shape [B, Z]; received mu {tuple(mu.shape)}, "
            f"logvar {tuple(logvar.shape)}"
        )
    shape = tuple(mu.shape) if samples is None else (samples, *mu.shape)
    eps = keras.random.normal(shape, dtype=mu.dtype, seed=seed)
    return mu + ops.exp(0.5 * ops.clip(logvar, _f.LOGVAR_MIN, _f.LOGVAR_MAX)) * eps


def elbo_loss(
    x, mu, logvar, params, *, beta=1.0, likelihood="bernoulli", reduction="mean", probs=False
):
    """Negative ELBO with an analytic KL to N(0, I), as ``vaekit.objectives.ELBO``; nats.

    Same arguments and outputs as :func:`vaekit.interop.jax.elbo_loss`: x ``[B, ...]``;
    ``mu, logvar`` ``[B, Z]`` (the encoder output's two halves; logvar clamped to [-30, 30]);
    ``params`` the decoder output for z from :func:`reparameterize`, x's shape or
    ``[S, *x.shape]``; ``likelihood`` ``"bernoulli" | "continuous_bernoulli"`` (logits) or a
    callable ``(params, x) -> [B]``; ``reduction`` over the batch axis; ``probs=True``:
    params are Bernoulli probabilities (a decoder ending in a sigmoid), read as
    ``max(log p, -100)``.

    Returns:
        ``LossOutput(loss, per_example={"bound", "rec", "kl", "loss"})`` with
        ``loss = rec + beta * kl`` per example and ``bound = -rec - kl``.
    """
    kw = {"beta": beta, "likelihood": likelihood, "reduction": reduction, "probs": probs}
    return _f.elbo_loss(_XP, x, mu, logvar, params, **kw)


def iwae_loss(x, mu, logvar, z, params, *, likelihood="bernoulli", reduction="mean", probs=False):
    """Negative IWAE_K bound (Burda et al. 2015), as ``vaekit.objectives.IWAE``; nats.

    Same arguments and outputs as :func:`vaekit.interop.jax.iwae_loss`: z ``[K, B, Z]``
    (``reparameterize(mu, logvar, seed, samples=K)``), params ``[K, *x.shape]``.

    Returns:
        ``LossOutput(loss, per_example={"bound", "rec", "kl", "elbo", "loss"})``, ``loss = -bound``.
    """
    return _f.iwae_loss(
        _XP, x, mu, logvar, z, params, likelihood=likelihood, reduction=reduction, probs=probs
    )


def classic_loss(recon_x, x, mu, logvar, **options):
    """``loss_function(recon_x, x, mu, logvar)`` of the classic VAE scripts, exact; nats.

    Per example ``rec = -log p(x | recon_x)`` summed over pixels (Keras'
    ``binary_crossentropy`` averages over the last axis: no ``original_dim`` factor needed
    here), ``kl = KL(N(mu, e^logvar) || N(0, I))``, ``loss = rec + beta kl`` reduced over the
    batch. Arguments as :func:`vaekit.interop.jax.classic_loss` (``probs`` is required for
    ``likelihood="bernoulli"``: ``True`` for a decoder ending in a sigmoid).

    Returns:
        ``LossOutput(loss, per_example={"rec", "kl", "bound", "loss"})``.
    """
    return _f.classic_loss(_XP, recon_x, x, mu, logvar, options)


ENCODER_OUTPUTS = (
    ("mean", "logvar"),
    ("mean", "scale"),
    ("mean", "logvar", "z"),
    ("mean", "scale", "z"),
)


def _last_activation(decoder) -> str | None:
    """Name of the activation the decoder's last layer applies (``"sigmoid"``...), if visible."""
    layers = getattr(decoder, "layers", None)
    last = layers[-1] if layers else decoder
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", None)


class VAE(keras.Model):
    """A Keras 3 VAE trained on the vaekit ELBO; reports ``loss``, ``rec`` and ``kl`` (nats).

    The loss per example is ``rec + beta * kl`` (:func:`elbo_loss`, one z draw per step),
    averaged over the batch; encoder and decoder regularisation losses are added to it.
    The loss is computed in ``compute_loss``, which every backend's ``train_step`` and
    ``test_step`` call, so ``fit`` and ``evaluate`` work unchanged (tested on the torch and
    jax backends). ``sample_weight`` is rejected.

    Args:
        encoder: ``x -> [B, 2Z]`` = ``[mean | log-variance]`` (as vaekit's DiagonalGaussian),
            or a list of outputs as ``encoder_outputs`` states.
        decoder: ``z [B, Z] -> params`` (logits of x's shape for the default likelihood;
            probabilities with ``probs=True``). A last layer with a sigmoid activation and
            ``probs=False`` is refused, naming the fix.
        beta: initial KL weight; a non-trainable variable ``vae.beta`` that
            :class:`BetaSchedule` updates between epochs.
        likelihood: as in :func:`elbo_loss`.
        probs: ``True`` if the decoder outputs Bernoulli probabilities (ends in a sigmoid).
        encoder_outputs: what a list/tuple from the encoder holds, stated:
            ``("mean", "logvar")`` (default), ``("mean", "scale")``, or either with a third
            ``"z"`` (the Keras example's encoder returns its own draw ``[z_mean, z_log_var,
            z]``; that z is ignored: the VAE draws z with its own seed). A one-tensor
            output is split in halves ``[mean | logvar or scale]``.
        seed: seed of the z draws.

    ``call(x)`` returns ``{"mu", "logvar", "z", "params"}``.
    """

    def __init__(
        self,
        encoder,
        decoder,
        *,
        beta=1.0,
        likelihood="bernoulli",
        probs=False,
        encoder_outputs=("mean", "logvar"),
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _f._check_loss_args(likelihood, "mean", beta, probs)
        encoder_outputs = (
            tuple(encoder_outputs) if isinstance(encoder_outputs, list) else encoder_outputs
        )
        if encoder_outputs not in ENCODER_OUTPUTS:
            raise ValueError(
                f"encoder_outputs must be one of {list(ENCODER_OUTPUTS)}; received {encoder_outputs!r}"
            )
        act = _last_activation(decoder)
        if act in ("sigmoid", "softmax") and not probs and likelihood in _f.LIKELIHOODS:
            fix = "probs=True" if likelihood == "bernoulli" and act == "sigmoid" else None
            fix = f"pass {fix} or remove the {act}" if fix else f"remove the {act}"
            raise ValueError(
                f"decoder must output logits for likelihood={likelihood!r} with probs=False; "
                f"received a decoder whose last layer has activation {act!r}: {fix}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.probs = probs
        self.encoder_outputs = encoder_outputs
        self.beta = keras.Variable(float(beta), trainable=False, name="beta", dtype="float32")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.rec_tracker = keras.metrics.Mean(name="rec")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def _posterior_params(self, h):
        """``(mean, logvar)`` from the encoder output, as ``encoder_outputs`` states."""
        names = self.encoder_outputs
        if isinstance(h, list | tuple):
            if len(h) != len(names):
                raise ValueError(
                    f"encoder output must be a list of {len(names)} tensors {list(names)} "
                    f"(encoder_outputs); received a {type(h).__name__} of {len(h)}"
                )
            mu, p = h[0], h[1]
            if tuple(mu.shape) != tuple(p.shape):
                raise ValueError(
                    f"encoder outputs {names[0]!r} and {names[1]!r} must have the same shape "
                    f"[B, Z]; received {tuple(mu.shape)} and {tuple(p.shape)}"
                )
        elif isinstance(h, dict):
            raise ValueError(
                f"encoder output must be a tensor [B, 2Z] or a list {list(names)}; received a "
                f"dict with keys {sorted(h)}"
            )
        else:
            if h.shape[-1] is not None and h.shape[-1] % 2:
                raise ValueError(
                    f"encoder output must be a tensor [B, 2Z] = [mean | {names[1]}] (an even last "
                    f"axis) or a list {list(names)}; received shape {tuple(h.shape)}"
                )
            mu, p = ops.split(h, 2, axis=-1)
        if names[1] == "scale":
            hint = "encoder_outputs states a scale (sigma); a log-variance is 'logvar'"
            _f._values(_XP, "encoder output 'scale'", p, 1e-300, float("inf"), hint)
            p = 2.0 * ops.log(p)
        return mu, p

    def call(self, x, training=None):
        mu, logvar = self._posterior_params(self.encoder(x, training=training))
        z = reparameterize(mu, logvar, seed=self.seed_generator)
        return {"mu": mu, "logvar": logvar, "z": z, "params": self.decoder(z, training=training)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is not None:
            raise ValueError(
                "sample_weight must be None: the vaekit VAE loss weights every example equally "
                "(use reduction='none' with vaekit.interop.keras.elbo_loss to weight them)"
            )
        out = elbo_loss(
            x,
            y_pred["mu"],
            y_pred["logvar"],
            y_pred["params"],
            beta=ops.cast(self.beta, y_pred["mu"].dtype),
            likelihood=self.likelihood,
            probs=self.probs,
        )
        pe = out.per_example
        reg = ops.sum(ops.stack(self.losses)) if self.losses else 0.0
        self.loss_tracker.update_state(pe["loss"] + reg)
        self.rec_tracker.update_state(pe["rec"])
        self.kl_tracker.update_state(pe["kl"])
        return out.loss + reg

    @property
    def metrics(self):
        return [self.loss_tracker, self.rec_tracker, self.kl_tracker]


class BetaSchedule(keras.callbacks.Callback):
    """Sets ``model.beta = schedule(epoch)`` at the start of every epoch (epochs count from 0).

    ``schedule`` is any ``step -> float`` callable, the step being the epoch index:
    ``vaekit.schedules.LinearWarmup(1.0, steps=10)`` (beta = min(1, epoch / 10)),
    ``vaekit.schedules.Constant(4.0)`` or :class:`Cyclical` ``(1.0, period=10, ratio=0.5)``.
    The value used in each epoch is logged as ``beta``. Per epoch, not per batch: a
    compiled JAX step reads the model's variables only when an epoch starts.
    """

    def __init__(self, schedule):
        super().__init__()
        if not callable(schedule):
            raise ValueError(
                "schedule must be a callable epoch -> beta, e.g. "
                f"vaekit.schedules.LinearWarmup(1.0, steps=10); received {schedule!r}"
            )
        self.schedule = schedule
        self.value: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        beta = getattr(self.model, "beta", None)
        if not isinstance(beta, keras.Variable):
            raise ValueError(
                "BetaSchedule needs a model with a `beta` keras.Variable, such as "
                f"vaekit.interop.keras.VAE; received a {type(self.model).__name__}"
            )
        value = float(self.schedule(epoch))
        check_positive("beta", value, allow_zero=True)
        beta.assign(value)
        self.value = value

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.value is not None:
            logs["beta"] = self.value
