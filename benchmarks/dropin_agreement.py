"""Agreement of the drop-in API with four VAE scripts' own losses (float64): prints JSON lines.

For each script (transcribed in tests/test_dropin.py and tests/interop/test_dropin_*.py,
which name the commit read) and each vaekit route, on one batch with the same random draw:
the script's loss, vaekit's, and the largest absolute difference of the loss and of the
parameter gradients. Run from the repository root:

    OMP_NUM_THREADS=1 KERAS_BACKEND=torch JAX_PLATFORMS=cpu python benchmarks/dropin_agreement.py
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vaekit  # noqa: E402
from vaekit.likelihoods import Bernoulli  # noqa: E402
from vaekit.posteriors import DiagonalGaussian  # noqa: E402
from vaekit.priors import StandardNormal  # noqa: E402


def emit(script, route, ref, ours, d_grad, batch):
    print(json.dumps({"script": script, "route": route, "batch": batch, "reference": ref,
                      "vaekit": ours, "max_abs_diff_loss": abs(ours - ref),
                      "max_abs_diff_grad": d_grad}), flush=True)  # fmt: skip


def torch_grads(loss, params):
    return torch.autograd.grad(loss, params)


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def pytorch_example():
    from tests.test_dropin import ExampleVAE, example_loss_function

    torch.manual_seed(0)
    m, data = ExampleVAE(), torch.bernoulli(torch.rand(128, 1, 28, 28))
    params = list(m.parameters())
    torch.manual_seed(1)
    recon, mu, logvar = m(data)
    ref = example_loss_function(recon, data, mu, logvar)
    g_ref = torch_grads(ref, params)
    torch.manual_seed(1)
    recon, mu, logvar = m(data)
    out = vaekit.classic_loss(recon, data, mu, logvar, probs=True, reduction="sum")
    emit("pytorch/examples vae/main.py", "classic_loss", ref.item(), out.loss.item(),
         max_diff(torch_grads(out.loss, params), g_ref), 128)  # fmt: skip
    model = vaekit.VAE(
        m.encode, m.decode, prior=StandardNormal(20), likelihood=Bernoulli(probs=True)
    )
    torch.manual_seed(1)
    out = vaekit.ELBO(reduction="sum")(model, data.view(-1, 784))
    emit("pytorch/examples vae/main.py", "VAE(model.encode, model.decode) + ELBO", ref.item(),
         out.loss.item(), max_diff(torch_grads(out.loss, params), g_ref), 128)  # fmt: skip


def pyro_tutorial():
    try:
        import pyro
        import pyro.distributions as dist
        import pyro.infer
    except ImportError:
        return
    from tests.test_dropin import PyroDecoder, PyroEncoder

    torch.manual_seed(0)
    enc, dec = PyroEncoder(50, 400), PyroDecoder(50, 400)
    params = [*enc.parameters(), *dec.parameters()]

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(torch.zeros(x.shape[0], 50),
                                                  torch.ones(x.shape[0], 50)).to_event(1))  # fmt: skip
            pyro.sample("obs", dist.Bernoulli(dec(z), validate_args=False).to_event(1),
                        obs=x.reshape(-1, 784))  # fmt: skip

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, scale = enc(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))

    data = torch.bernoulli(torch.rand(256, 1, 28, 28))
    vae = vaekit.VAE(enc, dec, prior=StandardNormal(50), posterior=DiagonalGaussian(param="scale"),
                     likelihood=Bernoulli(probs=True))  # fmt: skip
    for name, kl in (("TraceMeanField_ELBO", "analytic"), ("Trace_ELBO", "mc")):
        pyro.clear_param_store()
        torch.manual_seed(2)
        ref = getattr(pyro.infer, name)().differentiable_loss(model, guide, data)
        g_ref = torch_grads(ref, params)
        torch.manual_seed(2)
        out = vaekit.ELBO(kl=kl, reduction="sum")(vae, data.view(-1, 784))
        emit(f"Pyro VAE tutorial, {name}", f'VAE(param="scale") + ELBO(kl="{kl}")', ref.item(),
             out.loss.item(), max_diff(torch_grads(out.loss, params), g_ref), 256)  # fmt: skip


def keras_example():
    import keras
    from tests.interop import test_dropin_keras as T

    encoder, decoder, data = T.build_example()
    z_mean, z_log_var, z = encoder(data)
    recon = decoder(z)
    ref = T._f(T.example_loss(data, recon, z_mean, z_log_var, bce=T.keras_bce))
    out = T._f(vaekit.interop.keras.classic_loss(recon, data, z_mean, z_log_var, probs=True).loss)
    emit("keras-io examples/generative/vae.py", "interop.keras.classic_loss", ref, out, None,
         len(data))  # fmt: skip
    del keras


def flax_example():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from tests.interop import test_dropin_jax as T

    params = T._init(jax.random.key(0))
    batch = (jax.random.uniform(jax.random.key(1), (128, 784)) > 0.5).astype(jnp.float64)
    ref, g_ref = jax.value_and_grad(T.flax_loss)(params, batch, jax.random.key(2))
    for route, fn in (
        ("interop.jax.classic_loss", T.classic),
        ("interop.jax.elbo_loss", T.keyword),
    ):
        v, g = jax.value_and_grad(fn)(params, batch, jax.random.key(2))
        d = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True))  # fmt: skip
        emit("flax examples/vae", route, float(ref), float(v), d, 128)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    pytorch_example()
    pyro_tutorial()
    flax_example()
    keras_example()
