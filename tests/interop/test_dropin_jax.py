"""Drop-in, JAX: Flax's examples/vae loss through vaekit.interop.jax, exact (float64).

Transcribed from google/flax ``examples/vae/models.py`` and ``train.py`` at commit
18f8f311c275d57f46d95e41b15aa97b454754c0: the encoder returns ``(mean, logvar)``, the
decoder logits (784-500-20-500-784); ``kl_divergence`` and ``binary_cross_entropy_with_logits``
are vmapped per-example sums, averaged over the batch. Flax itself is not a vaekit test
dependency, so its ``nn.Dense`` layers are written as ``x @ W + b`` (its parameters'
layout), which is all the example's modules do.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax import random  # noqa: E402

from vaekit.interop import jax as VJ  # noqa: E402


def _dense(key, n_in, n_out):
    w = random.normal(key, (n_in, n_out), dtype=jnp.float64) / np.sqrt(n_in)
    return {"kernel": w, "bias": jnp.zeros(n_out, dtype=jnp.float64)}


def _init(key, latents=20):
    k = random.split(key, 5)
    return {
        "encoder": {"fc1": _dense(k[0], 784, 500), "fc2_mean": _dense(k[1], 500, latents),
                    "fc2_logvar": _dense(k[2], 500, latents)},
        "decoder": {"fc1": _dense(k[3], latents, 500), "fc2": _dense(k[4], 500, 784)},
    }  # fmt: skip


def _apply(p, x):
    return x @ p["kernel"] + p["bias"]


def encoder(params, x):  # models.Encoder.__call__
    x = jax.nn.relu(_apply(params["fc1"], x))
    return _apply(params["fc2_mean"], x), _apply(params["fc2_logvar"], x)


def decoder(params, z):  # models.Decoder.__call__ (logits)
    return _apply(params["fc2"], jax.nn.relu(_apply(params["fc1"], z)))


def reparameterize(rng, mean, logvar):  # models.reparameterize
    std = jnp.exp(0.5 * logvar)
    eps = random.normal(rng, logvar.shape)
    return mean + eps * std


@jax.vmap
def kl_divergence(mean, logvar):  # train.kl_divergence
    return -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar))


@jax.vmap
def binary_cross_entropy_with_logits(logits, labels):  # train.binary_cross_entropy_with_logits
    logits = jax.nn.log_sigmoid(logits)
    return -jnp.sum(labels * logits + (1.0 - labels) * jnp.log(-jnp.expm1(logits)))


def flax_loss(params, batch, z_rng):  # train.train_step's loss_fn
    mean, logvar = encoder(params["encoder"], batch)
    recon_x = decoder(params["decoder"], reparameterize(z_rng, mean, logvar))
    bce_loss = binary_cross_entropy_with_logits(recon_x, batch).mean()
    kld_loss = kl_divergence(mean, logvar).mean()
    return bce_loss + kld_loss


def classic(params, batch, z_rng):
    mean, logvar = encoder(params["encoder"], batch)
    recon_x = decoder(params["decoder"], reparameterize(z_rng, mean, logvar))
    return VJ.classic_loss(recon_x, batch, mean, logvar, probs=False).loss


def keyword(params, batch, z_rng):
    mean, logvar = encoder(params["encoder"], batch)
    z = VJ.reparameterize(mu=mean, logvar=logvar, seed=z_rng)  # the keyword form
    return VJ.elbo_loss(batch, mean, logvar, decoder(params["decoder"], z)).loss


@pytest.mark.parametrize("ours", [classic, keyword], ids=["classic_loss", "elbo_loss"])
def test_flax_example(ours):
    params = _init(random.key(0))
    batch = (random.uniform(random.key(1), (32, 784)) > 0.5).astype(jnp.float64)
    z_rng = random.key(2)
    ref, ref_grads = jax.jit(jax.value_and_grad(flax_loss))(params, batch, z_rng)
    value, grads = jax.jit(jax.value_and_grad(ours))(params, batch, z_rng)
    assert abs(float(value) - float(ref)) <= 1e-11 * abs(float(ref))
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-8, atol=1e-11)


def test_misuse_outside_jit():
    mu = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="key must be a JAX PRNG key.*received an array"):
        VJ.reparameterize(mu, mu, random.key(0))  # the Keras order
    with pytest.raises(ValueError, match="give key or seed, not both"):
        VJ.reparameterize(random.key(0), mu, mu, seed=1)
    with pytest.raises(ValueError, match="probs must be stated"):
        VJ.classic_loss(jnp.full((3, 4), 0.5), jnp.ones((3, 4)), mu, mu)
    with pytest.raises(ValueError, match=r"recon_x must lie in \[0.0, 1.0\]"):
        VJ.classic_loss(jnp.full((3, 4), 2.0), jnp.ones((3, 4)), mu, mu, probs=True)
    with pytest.raises(ValueError, match="probs=True needs likelihood='bernoulli'"):
        VJ.elbo_loss(jnp.ones((3, 4)), mu, mu, jnp.full((3, 4), 0.5), probs=True,
                     likelihood="continuous_bernoulli")  # fmt: skip


def test_probs_equals_logits():
    logits = random.normal(random.key(3), (4, 10), dtype=jnp.float64)
    x = (random.uniform(random.key(4), (4, 10)) > 0.5).astype(jnp.float64)
    mu, logvar = jnp.ones((4, 2)), jnp.zeros((4, 2))
    a = VJ.classic_loss(jax.nn.sigmoid(logits), x, mu, logvar, probs=True, reduction="none")
    b = VJ.classic_loss(logits, x, mu, logvar, probs=False, reduction="none")
    np.testing.assert_allclose(a.per_example["rec"], b.per_example["rec"], rtol=1e-12)
    np.testing.assert_allclose(a.per_example["kl"], 0.5 * 2 * np.ones(4), rtol=1e-12)
