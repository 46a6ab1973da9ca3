"""Train a small VAE on binarised MNIST in JAX (Equinox + Optax) with the vaekit loss.

    pip install -e ".[jax]"                          # jax, jaxlib, equinox, optax
    vaekit data fetch mnist                          # once: the MNIST pickle into $VAEKIT_DATA
    python examples/jax_mnist.py --steps 2000        # under a minute on a laptop CPU
    python examples/jax_mnist.py --k 5               # train on the IWAE_5 bound instead
    python examples/jax_mnist.py --synthetic --steps 50   # random binary data, no download (CI)

The loss is ``vaekit.interop.jax.elbo_loss`` (``iwae_loss`` for ``--k > 1``): the formulas,
units and signs of ``vaekit.objectives.ELBO`` / ``IWAE``, i.e. nats per example, summed over
the 784 pixels (never averaged over them), ``loss = rec + beta * kl``.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from vaekit.data import from_tensor, mnist
from vaekit.interop.jax import elbo_loss, iwae_loss, reparameterize
from vaekit.schedules import LinearWarmup


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (the budget)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256, help="units of each of the 2 tanh layers")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--k", type=int, default=1, help="1: ELBO; > 1: IWAE_k bound")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight after warm-up")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear KL warm-up (0: none)")
    p.add_argument("--log-every", type=int, default=0, help="default: steps / 10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true", help="random binary data instead of MNIST")
    return p.parse_args(argv)


def synthetic_data(seed: int, dim: int = 784):
    """10 random binary prototypes; each example is a fresh draw with 5% of pixels flipped."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 2, size=(10, dim)).astype(np.float32)
    probs = 0.05 + 0.9 * protos  # Bernoulli means: dynamic binarisation draws the flips
    return from_tensor(
        probs[rng.integers(0, 10, 2000)], test=probs[rng.integers(0, 10, 500)], binarize="dynamic"
    )


class VAE(eqx.Module):
    encoder: eqx.nn.MLP  # x [D] -> [2Z] = [mean | log-variance], vaekit's convention
    decoder: eqx.nn.MLP  # z [Z] -> Bernoulli logits [D]

    def __init__(self, dim: int, hidden: int, latent: int, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.encoder = eqx.nn.MLP(dim, 2 * latent, hidden, 2, activation=jnp.tanh, key=k1)
        self.decoder = eqx.nn.MLP(latent, dim, hidden, 2, activation=jnp.tanh, key=k2)


def loss_fn(model: VAE, x: jax.Array, key: jax.Array, beta: jax.Array, k: int):
    mu, logvar = jnp.split(jax.vmap(model.encoder)(x), 2, axis=-1)
    if k == 1:
        z = reparameterize(key, mu, logvar)  # [B, Z]
        out = elbo_loss(x, mu, logvar, jax.vmap(model.decoder)(z), beta=beta)
    else:
        z = reparameterize(key, mu, logvar, samples=k)  # [K, B, Z]
        out = iwae_loss(x, mu, logvar, z, jax.vmap(jax.vmap(model.decoder))(z))
    return out.loss, out.per_example


def main(argv=None) -> None:
    args = parse_args(argv)
    data = synthetic_data(args.seed) if args.synthetic else mnist("dynamic", seed=args.seed)
    dim = data.train.x.shape[1]
    key = jax.random.PRNGKey(args.seed)
    key, init_key = jax.random.split(key)
    model = VAE(dim, args.hidden, args.latent_dim, init_key)
    opt = optax.adam(args.lr)
    opt_state = opt.init(eqx.filter(model, eqx.is_array))
    beta_at = LinearWarmup(args.beta, steps=args.warmup)  # the same schedule as the torch trainer
    grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)

    @eqx.filter_jit
    def train_step(model, opt_state, x, key, beta):
        (loss, terms), grads = grad_fn(model, x, key, beta, args.k)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return (
            eqx.apply_updates(model, updates),
            opt_state,
            loss,
            terms["rec"].mean(),
            terms["kl"].mean(),
        )

    def batches():  # endless; dynamic binarisation: a fresh Bernoulli draw per batch
        g = torch.Generator().manual_seed(args.seed)
        while True:
            for xb, _ in data.train.batches(args.batch_size, generator=g, drop_last=True):
                yield jnp.asarray(xb.numpy())

    log_every = args.log_every or max(1, args.steps // 10)
    bound = "ELBO" if args.k == 1 else f"IWAE_{args.k}"
    print(f"{data.name}: {len(data.train)} train examples of {dim} values; loss = -{bound}, nats")
    start, sums, it = time.perf_counter(), np.zeros(3), batches()
    for step in range(1, args.steps + 1):
        key, step_key = jax.random.split(key)
        beta = jnp.float32(beta_at(step - 1))  # an array: a new beta does not recompile
        model, opt_state, *terms = train_step(model, opt_state, next(it), step_key, beta)
        sums += np.array(terms, dtype=np.float64)
        if step % log_every == 0 or step == args.steps:
            n = (step - 1) % log_every + 1
            loss, rec, kl = sums / n
            print(
                f"step {step:6d}  loss {loss:8.2f}  rec {rec:8.2f}  kl {kl:6.2f}  beta {float(beta):.2f}"
            )
            sums[:] = 0

    test_x = jnp.asarray(data.test.eval_view().x.numpy())  # one fixed, seeded draw
    _, terms = eqx.filter_jit(loss_fn)(model, test_x, key, jnp.float32(1.0), args.k)
    rec, kl = float(terms["rec"].mean()), float(terms["kl"].mean())
    print(
        f"test ({len(test_x)} examples): -{bound} {-float(terms['bound'].mean()):.2f}  rec {rec:.2f}"
        f"  kl {kl:.2f} nats; {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
