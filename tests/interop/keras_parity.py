"""Parity checks of vaekit.interop.keras on the Keras backend named by KERAS_BACKEND.

Keras fixes its backend at import, so ``test_keras.py`` runs this once per backend:
``KERAS_BACKEND=jax python -m tests.interop.keras_parity`` (from the repository root).
It prints one JSON line ``{"backend": ..., "results": {check: null | error text}}``.
"""

from __future__ import annotations

import json
import traceback

import numpy as np


def _value_and_grads(backend: str, f, args, diff):
    """Run ``f(*tensors) -> (target, aux)``; gradients of ``sum(target)`` w.r.t. ``args[i]``, i in ``diff``.

    Returns ``(aux, {i: gradient})`` as NumPy (aux: an array or a dict of arrays).
    """
    if backend == "torch":
        import torch

        ts = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(args)]
        target, aux = f(*ts)
        target.sum().backward()
        return _numpy(aux), {i: ts[i].grad.numpy() for i in diff}
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(*a):
            target, aux = f(*a)
            return jnp.sum(target), aux

        # one compiled program per check: op-by-op dispatch compiles every small op
        vg = jax.jit(jax.value_and_grad(total, argnums=tuple(diff), has_aux=True))
        (_, aux), grads = vg(*map(jnp.asarray, args))
        return _numpy(aux), dict(zip(diff, map(np.asarray, grads), strict=True))
    raise NotImplementedError(f"no gradient helper for the {backend} backend")


def _numpy(tree):
    if isinstance(tree, dict):
        return {k: _numpy(v) for k, v in tree.items()}
    return tree.detach().numpy() if hasattr(tree, "detach") else np.asarray(tree)


def main() -> None:
    import keras
    from keras import ops

    from tests.interop import cases
    from vaekit import functional as VF
    from vaekit.interop import keras as VK
    from vaekit.schedules import LinearWarmup

    backend = keras.backend.backend()
    results: dict[str, str | None] = {}

    def check(name, fn):
        try:
            fn()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc(limit=4)

    def formula(case, dtype):
        args = cases.inputs(case, dtype)
        ref, ref_grads = cases.torch_reference(case, args)
        fn = getattr(VK, case.fn)

        def f(*a):
            out = fn(*a, **case.kwargs)
            return out, out

        value, grads = _value_and_grads(backend, f, args, case.diff)
        tol = cases.tolerances(dtype)
        assert value.dtype == dtype, value.dtype
        np.testing.assert_allclose(value, ref, **tol)
        for i in case.diff:
            np.testing.assert_allclose(grads[i], ref_grads[i], **tol, err_msg=f"d/d arg {i}")

    for case in cases.CASES:
        for dtype in (np.float64, np.float32):
            check(f"{case.name}[{np.dtype(dtype).name}]", lambda c=case, d=dtype: formula(c, d))

    def objective(name):
        ref = cases.objective_reference(name)

        def run(we, be, wd, bd):
            # the backend's own @: keras.ops.matmul computes float64 in float32 on torch
            x, eps = ops.convert_to_tensor(ref.x), ops.convert_to_tensor(ref.eps)
            mu, logvar = ops.split(x @ ops.transpose(we) + be, 2, axis=-1)
            z = mu + ops.exp(0.5 * logvar) * eps
            logits = z @ ops.transpose(wd) + bd
            if name == "elbo":
                return VK.elbo_loss(ref.x, mu, logvar, logits[0], beta=0.7)
            if name == "elbo/samples3":
                return VK.elbo_loss(ref.x, mu, logvar, logits, beta=0.7)
            return VK.iwae_loss(ref.x, mu, logvar, z, logits)

        def f(*w):
            out = run(*w)
            return out.loss, {"loss": out.loss, "per_example": out.per_example}

        diff = (0, 1, 2, 3)
        values, grads = _value_and_grads(backend, f, ref.weights, diff)
        assert set(values["per_example"]) == set(ref.per_example)
        for key, expected in ref.per_example.items():
            got = values["per_example"][key]
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=key)
        np.testing.assert_allclose(values["loss"], ref.loss, rtol=1e-10)
        for i in diff:
            np.testing.assert_allclose(grads[i], ref.grads[i], rtol=1e-10, atol=1e-10)

    for name in cases.OBJECTIVES:
        check(f"objective/{name}", lambda n=name: objective(n))

    def errors_match_torch():
        import torch

        x = np.full((2, 3), 1.5)
        try:
            VK.bernoulli_log_prob(np.zeros((2, 3)), x)
        except ValueError as err:
            got = str(err)
        else:
            raise AssertionError("no ValueError for x outside [0, 1]")
        try:
            VF.bernoulli_log_prob(torch.zeros(2, 3), torch.tensor(x))
        except ValueError as err:
            assert got == str(err), (got, str(err))

    check("errors_match_torch", errors_match_torch)

    def fit_with_beta_schedule():
        keras.utils.set_random_seed(0)
        x = (np.random.default_rng(0).uniform(size=(64, 12)) < 0.5).astype("float32")
        enc = keras.Sequential(
            [keras.Input((12,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(4)]
        )
        dec = keras.Sequential([keras.Input((2,)), keras.layers.Dense(12)])
        vae = VK.VAE(enc, dec, seed=0)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        schedule = VK.BetaSchedule(LinearWarmup(1.0, steps=2))
        h = vae.fit(x, epochs=4, batch_size=16, callbacks=[schedule], verbose=0).history
        assert h["beta"] == [0.0, 0.5, 1.0, 1.0], h["beta"]
        # the compiled step read the scheduled beta: epoch means obey loss = rec + beta * kl
        for loss, rec, kl, beta in zip(h["loss"], h["rec"], h["kl"], h["beta"], strict=True):
            np.testing.assert_allclose(loss, rec + beta * kl, rtol=1e-5)
            assert kl > 0
        assert h["loss"][-1] < h["loss"][1], h  # same beta in epochs 2 and 3: it trains
        assert float(vae.beta.value) == 1.0
        res = vae.evaluate(x, batch_size=64, return_dict=True, verbose=0)
        assert set(res) == {"loss", "rec", "kl"}, res
        np.testing.assert_allclose(res["loss"], res["rec"] + res["kl"], rtol=1e-5)
        out = vae(x[:5])
        assert tuple(out["z"].shape) == (5, 2) and tuple(out["params"].shape) == (5, 12)

    check("VAE.fit/BetaSchedule", fit_with_beta_schedule)
    print(json.dumps({"backend": backend, "results": results}))


if __name__ == "__main__":
    main()
