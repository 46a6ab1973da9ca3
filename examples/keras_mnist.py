"""Train a small VAE on binarised MNIST with Keras 3 and the vaekit loss.

    pip install -e ".[keras]"                                 # the torch backend needs nothing else
    vaekit data fetch mnist                                   # once: the MNIST pickle into $VAEKIT_DATA
    python examples/keras_mnist.py --steps 2000               # under a minute on a laptop CPU
    KERAS_BACKEND=jax python examples/keras_mnist.py          # any Keras 3 backend (default: torch)
    python examples/keras_mnist.py --warmup-epochs 5          # linear KL warm-up (BetaSchedule)
    python examples/keras_mnist.py --synthetic --steps 50     # random binary data, no download (CI)

``vaekit.interop.keras.VAE`` trains ``rec + beta * kl`` in nats per example, summed over the
784 pixels: no ``binary_crossentropy * original_dim`` (a mean over pixels scaled back up).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported: vaekit ships torch

import keras  # noqa: E402
import numpy as np  # noqa: E402

from vaekit.data import from_tensor, mnist  # noqa: E402
from vaekit.interop.keras import VAE, BetaSchedule, Cyclical  # noqa: E402
from vaekit.schedules import Constant, LinearWarmup  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps in all (the budget)")
    p.add_argument(
        "--epochs", type=int, default=10, help="the steps are split into this many epochs"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256, help="units of each of the 2 tanh layers")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (after warm-up)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear KL warm-up (0: none)")
    p.add_argument(
        "--cycle-epochs", type=int, default=0, help="cyclical annealing period (0: none)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true", help="random binary data instead of MNIST")
    return p.parse_args(argv)


def synthetic_data(seed: int, dim: int = 784):
    """10 random binary prototypes with 5% of pixels flipped, drawn once (static)."""
    rng = np.random.default_rng(seed)
    probs = 0.05 + 0.9 * rng.integers(0, 2, size=(10, dim)).astype(np.float32)
    return from_tensor(
        probs[rng.integers(0, 10, 2000)], test=probs[rng.integers(0, 10, 500)], binarize="static"
    )


def mlp(inputs: int, hidden: int, outputs: int) -> keras.Sequential:
    layers = [keras.layers.Dense(hidden, activation="tanh") for _ in range(2)]
    return keras.Sequential([keras.Input((inputs,)), *layers, keras.layers.Dense(outputs)])


class PrintTerms(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(
            f"epoch {epoch + 1:3d}  loss {logs['loss']:8.2f}  rec {logs['rec']:8.2f}  "
            f"kl {logs['kl']:6.2f}  beta {logs.get('beta', float('nan')):.2f}",
            flush=True,
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    # static binarisation (the VampPrior protocol): one seeded draw, plain arrays for fit()
    data = synthetic_data(args.seed) if args.synthetic else mnist("static", seed=args.seed)
    x_train, x_test = data.train.x.numpy(), data.test.x.numpy()
    dim = x_train.shape[1]

    encoder = mlp(dim, args.hidden, 2 * args.latent_dim)  # -> [mean | log-variance]
    decoder = mlp(args.latent_dim, args.hidden, dim)  # -> Bernoulli logits
    vae = VAE(encoder, decoder, beta=args.beta, seed=args.seed)
    vae.compile(optimizer=keras.optimizers.Adam(args.lr))

    if args.cycle_epochs:
        schedule = Cyclical(args.beta, period=args.cycle_epochs, ratio=0.5)
    elif args.warmup_epochs:
        schedule = LinearWarmup(args.beta, steps=args.warmup_epochs)
    else:
        schedule = Constant(args.beta)
    print(
        f"{data.name}: {len(x_train)} train examples of {dim} values; Keras backend "
        f"{keras.backend.backend()}; loss = rec + beta * kl, nats per example"
    )
    start = time.perf_counter()
    vae.fit(
        x_train,
        epochs=args.epochs,
        steps_per_epoch=max(1, args.steps // args.epochs),
        batch_size=args.batch_size,
        callbacks=[BetaSchedule(schedule), PrintTerms()],
        verbose=0,
    )
    vae.beta.assign(1.0)  # report the ELBO itself
    res = vae.evaluate(x_test, batch_size=500, return_dict=True, verbose=0)
    print(
        f"test ({len(x_test)} examples): -ELBO {res['loss']:.2f}  rec {res['rec']:.2f}  "
        f"kl {res['kl']:.2f} nats; {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
