"""Drop-in, Keras 3: the keras-io VAE example through vaekit.interop.keras, exact (float64).

Transcribed from keras-team/keras-io ``examples/generative/vae.py`` at commit
cca4efba8e0b8514ae3817931696294039b3bfc9 (the same model and loss at 09e02e17): an encoder
returning ``[z_mean, z_log_var, z]`` (its own Sampling layer), a decoder ending in
``Conv2DTranspose(1, 3, activation="sigmoid")``, and ``train_step``'s loss: Keras'
``binary_crossentropy`` summed over axes (1, 2), averaged over the batch, plus the KL.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from keras import layers, ops  # noqa: E402

from vaekit.interop import keras as VK  # noqa: E402

LATENT_DIM = 2


class Sampling(layers.Layer):
    """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(
            ops.shape(z_mean), dtype=z_mean.dtype, seed=self.seed_generator
        )
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def build_example():
    """The example's encoder and decoder (float64 layers) and a batch of binary images."""
    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        keras.utils.set_random_seed(0)
        encoder_inputs = keras.Input(shape=(28, 28, 1))
        x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
        x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(16, activation="relu")(x)
        z_mean = layers.Dense(LATENT_DIM, name="z_mean")(x)
        z_log_var = layers.Dense(LATENT_DIM, name="z_log_var")(x)
        z = Sampling()([z_mean, z_log_var])
        encoder = keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")

        latent_inputs = keras.Input(shape=(LATENT_DIM,))
        x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
        x = layers.Reshape((7, 7, 64))(x)
        x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
        x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
        decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
        decoder = keras.Model(latent_inputs, decoder_outputs, name="decoder")
    finally:
        keras.config.set_floatx(old)
    data = (np.random.default_rng(0).uniform(size=(8, 28, 28, 1)) > 0.5).astype("float64")
    return encoder, decoder, data


@pytest.fixture(scope="module")
def example():
    return build_example()


def example_loss(data, reconstruction, z_mean, z_log_var, bce=keras.losses.binary_crossentropy):
    """The example's train_step loss (tf.* as keras.ops)."""
    reconstruction_loss = _mean(ops.sum(bce(data, reconstruction), axis=(1, 2)))
    kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    kl_loss = _mean(ops.sum(kl_loss, axis=1))
    return reconstruction_loss + kl_loss


def _mean(t, axis=0):
    # keras.ops.mean computes float64 in float32 on the torch backend (Keras' own rounding,
    # ~1e-8 relative): the reference takes its means as sum / n to be float64-exact
    return ops.sum(t, axis=axis) / t.shape[axis]


def keras_bce(target, output):
    """keras.losses.binary_crossentropy's formula (probabilities clipped to [epsilon, 1 - epsilon],
    mean over the last axis), with that mean as sum / n."""
    eps = keras.config.epsilon()
    target = ops.convert_to_tensor(target)
    output = ops.clip(output, eps, 1.0 - eps)
    bce = -(target * ops.log(output) + (1.0 - target) * ops.log(1.0 - output))
    return _mean(bce, axis=-1)


def _f(t) -> float:
    return float(np.asarray(t.tolist()))


def test_keras_example_through_classic_loss(example):
    encoder, decoder, data = example
    z_mean, z_log_var, z = encoder(data)
    reconstruction = decoder(z)
    ref = _f(example_loss(data, reconstruction, z_mean, z_log_var, bce=keras_bce))
    out = VK.classic_loss(reconstruction, data, z_mean, z_log_var, probs=True)
    assert abs(_f(out.loss) - ref) <= 1e-11 * abs(ref)
    # Keras' own binary_crossentropy: the same to its float32 rounding
    keras_own = _f(example_loss(data, reconstruction, z_mean, z_log_var))
    assert abs(_f(out.loss) - keras_own) <= 1e-6 * abs(ref)


def test_keras_example_through_vaekit_vae(example):
    encoder, decoder, data = example
    vae = VK.VAE(encoder, decoder, probs=True, encoder_outputs=("mean", "logvar", "z"), seed=0)
    y_pred = vae(data)
    loss = vae.compute_loss(x=data, y_pred=y_pred)
    # the example's formula on the same draw (vaekit draws z itself; the encoder's is ignored)
    ref = _f(example_loss(data, y_pred["params"], y_pred["mu"], y_pred["logvar"], bce=keras_bce))
    assert abs(_f(loss) - ref) <= 1e-11 * abs(ref)
    z_mean, z_log_var, _ = encoder(data)
    np.testing.assert_allclose(np.asarray(y_pred["mu"].tolist()), np.asarray(z_mean.tolist()))


def test_keras_vae_misuse(example):
    encoder, decoder, data = example
    with pytest.raises(
        ValueError, match="activation 'sigmoid': pass probs=True or remove the sigmoid"
    ):
        VK.VAE(encoder, decoder, encoder_outputs=("mean", "logvar", "z"))
    with pytest.raises(ValueError, match="encoder_outputs must be one of"):
        VK.VAE(encoder, decoder, probs=True, encoder_outputs=("mu", "logvar"))
    vae = VK.VAE(encoder, decoder, probs=True)  # states 2 outputs; the encoder gives 3
    with pytest.raises(ValueError, match=r"list of 2 tensors \['mean', 'logvar'\].*list of 3"):
        vae(data)
    with pytest.raises(ValueError, match="probs must be stated"):
        VK.classic_loss(np.full((2, 4), 0.5), np.ones((2, 4)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(
        ValueError, match="seed must be None, an int or a keras.random.SeedGenerator"
    ):
        VK.reparameterize(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))


def test_scale_outputs(example):
    enc = keras.Sequential([keras.Input((6,)), layers.Dense(4, dtype="float64")])
    dec = keras.Sequential([keras.Input((2,)), layers.Dense(6, dtype="float64")])

    class Scale(keras.Model):
        def call(self, x):
            mu, logvar = ops.split(enc(x), 2, axis=-1)
            return [mu, ops.exp(0.5 * logvar)]

    x = (np.random.default_rng(1).uniform(size=(5, 6)) > 0.5).astype("float64")
    a = VK.VAE(Scale(), dec, encoder_outputs=("mean", "scale"), seed=3)(x)
    b = VK.VAE(enc, dec, seed=3)(x)
    np.testing.assert_allclose(np.asarray(a["logvar"].tolist()), np.asarray(b["logvar"].tolist()),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
