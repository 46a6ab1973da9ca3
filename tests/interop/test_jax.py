"""vaekit.interop.jax equals vaekit.functional / vaekit.objectives: values and gradients."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64; float32 stay float32

import jax.numpy as jnp  # noqa: E402

from tests.interop import cases  # noqa: E402
from vaekit import validation  # noqa: E402
from vaekit.interop import jax as VJ  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def jax_value_and_grads(case: cases.Case, args):
    fn = getattr(VJ, case.fn)

    def total(*a):
        out = fn(*a, **case.kwargs)
        return out.sum(), out

    # jit(value_and_grad): both transformations, and one compile per case (not per op)
    (_, value), grads = jax.jit(jax.value_and_grad(total, argnums=case.diff, has_aux=True))(
        *map(jnp.asarray, args)
    )
    return np.asarray(value), dict(zip(case.diff, map(np.asarray, grads), strict=True))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", cases.CASES, ids=cases.CASE_IDS)
def test_formula_parity(case, dtype):
    args = cases.inputs(case, dtype)
    ref, ref_grads = cases.torch_reference(case, args)
    value, grads = jax_value_and_grads(case, args)
    tol = cases.tolerances(dtype)
    assert value.dtype == dtype and value.shape == ref.shape
    assert np.isfinite(value).all()
    np.testing.assert_allclose(value, ref, **tol)
    for i in case.diff:
        assert grads[i].shape == args[i].shape
        np.testing.assert_allclose(grads[i], ref_grads[i], **tol, err_msg=f"d/d arg {i}")


@pytest.mark.parametrize("case", cases.CASES[::3], ids=lambda c: c.name)
def test_jit_equals_eager(case):
    args = tuple(map(jnp.asarray, cases.inputs(case)))
    fn = getattr(VJ, case.fn)
    jitted = jax.jit(lambda *a: fn(*a, **case.kwargs))
    np.testing.assert_allclose(jitted(*args), fn(*args, **case.kwargs), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- objectives


def _forward(weights, x, eps):
    """The torch reference model's forward pass in JAX: linear encoder, reparameterisation, decoder."""
    we, be, wd, bd = weights
    mu, logvar = jnp.split(x @ we.T + be, 2, axis=-1)
    z = mu + jnp.exp(0.5 * logvar) * eps  # eps [S, B, Z]
    return mu, logvar, z, z @ wd.T + bd


def _jax_objective(name, weights, x, eps):
    mu, logvar, z, logits = _forward(weights, x, eps)
    if name == "elbo":
        return VJ.elbo_loss(x, mu, logvar, logits[0], beta=0.7)  # one draw: params shaped like x
    if name == "elbo/samples3":
        return VJ.elbo_loss(x, mu, logvar, logits, beta=0.7)  # [S, B, D]
    return VJ.iwae_loss(x, mu, logvar, z, logits)


@pytest.mark.parametrize("name", list(cases.OBJECTIVES))
def test_objective_parity(name):
    ref = cases.objective_reference(name)
    x, eps = jnp.asarray(ref.x), jnp.asarray(ref.eps)
    weights = tuple(map(jnp.asarray, ref.weights))

    def loss(w):
        out = _jax_objective(name, w, x, eps)
        return out.loss, out

    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(weights)
    assert set(out.per_example) == set(ref.per_example)
    for key, expected in ref.per_example.items():
        np.testing.assert_allclose(
            out.per_example[key], expected, rtol=1e-10, atol=1e-10, err_msg=key
        )
    np.testing.assert_allclose(value, ref.loss, rtol=1e-10)
    for g, expected in zip(grads, ref.grads, strict=True):
        np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-10)


def test_elbo_terms_and_reductions():
    ref = cases.objective_reference("elbo")
    mu, logvar, _, logits = _forward(tuple(map(jnp.asarray, ref.weights)), ref.x, ref.eps)
    pe = VJ.elbo_loss(ref.x, mu, logvar, logits[0], reduction="none").per_example
    np.testing.assert_allclose(pe["bound"], -pe["rec"] - pe["kl"])
    np.testing.assert_allclose(pe["rec"], -VJ.bernoulli_log_prob(logits[0], ref.x))
    np.testing.assert_allclose(pe["kl"], VJ.kl_normal_std(mu, logvar))
    full = VJ.elbo_loss(ref.x, mu, logvar, logits[0], reduction="none").loss
    total = VJ.elbo_loss(ref.x, mu, logvar, logits[0], reduction="sum").loss
    np.testing.assert_allclose(total, full.sum())
    cb = VJ.elbo_loss(ref.x, mu, logvar, logits[0], likelihood="continuous_bernoulli").per_example
    np.testing.assert_allclose(cb["rec"], -VJ.continuous_bernoulli_log_prob(logits[0], ref.x))

    def gauss(p, x):
        return VJ.gaussian_log_prob(x, p, jnp.zeros_like(p))

    custom = VJ.elbo_loss(ref.x, mu, logvar, logits[0], likelihood=gauss).per_example
    np.testing.assert_allclose(custom["rec"], -gauss(logits[0], ref.x))


def test_reparameterize_shapes_and_moments():
    mu, logvar = jnp.full((4, 2), 3.0), jnp.full((4, 2), np.log(4.0))
    z = VJ.reparameterize(jax.random.PRNGKey(0), mu, logvar, samples=5000)
    assert z.shape == (5000, 4, 2)
    assert VJ.reparameterize(jax.random.PRNGKey(0), mu, logvar).shape == (4, 2)
    np.testing.assert_allclose(z.mean(0), 3.0, atol=0.12)  # 4 standard errors
    np.testing.assert_allclose(z.std(0), 2.0, atol=0.12)


# ---------------------------------------------------------------- errors


def test_value_errors_match_torch():
    x = np.full((2, 3), 1.5)
    with pytest.raises(ValueError, match=r"x must lie in \[0.0, 1.0\]") as jax_err:
        VJ.bernoulli_log_prob(np.zeros((2, 3)), x)
    with pytest.raises(ValueError) as torch_err:
        cases.VF.bernoulli_log_prob(cases.torch.zeros(2, 3), cases.torch.tensor(x))
    assert str(jax_err.value) == str(torch_err.value)
    with pytest.raises(ValueError, match="must be finite"):
        VJ.gaussian_log_prob(np.array([[np.nan]]), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"scaled to \[-1, 1\]"):
        VJ.discretized_logistic_log_prob(np.full((1, 2), 2.0), 0.0, 0.0)
    with pytest.raises(ValueError, match="bins must be >= 2"):
        VJ.discretized_logistic_log_prob(np.zeros((1, 2)), 0.0, 0.0, bins=1)
    with pytest.raises(ValueError, match=r"shapes do not broadcast: mu \(2, 3\), logvar \(4, 3\)"):
        VJ.kl_normal_std(np.zeros((2, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"log_w must have shape \[K, B\]"):
        VJ.iwae_bound(np.zeros(3))
    with validation(False):  # the same switch as PyTorch's value checks
        assert np.isfinite(VJ.bernoulli_log_prob(np.zeros((2, 3)), x)).all()


def test_no_value_check_under_jit():
    # traced data cannot be read: jit checks shapes only
    out = jax.jit(VJ.bernoulli_log_prob)(jnp.zeros((2, 3)), jnp.full((2, 3), 1.5))
    assert out.shape == (2,)


def test_loss_argument_errors():
    mu = logvar = np.zeros((2, 3))
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VJ.elbo_loss(x, mu, logvar, x, likelihood="gauss")
    with pytest.raises(ValueError, match="reduction must be one of .* did you mean 'mean'"):
        VJ.elbo_loss(x, mu, logvar, x, reduction="meen")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VJ.elbo_loss(x, mu, logvar, x, beta=-1.0)
    with pytest.raises(ValueError, match=r"mu and logvar must both have shape \[B, Z\]"):
        VJ.elbo_loss(x, mu, logvar[:, :2], x)
    with pytest.raises(ValueError, match=r"decoder output must have x's shape"):
        VJ.elbo_loss(x, mu, logvar, np.zeros((1, 1, 2, 4)))
    with pytest.raises(ValueError, match=r"must be \[S, B, \.\.\.\] with B = 2"):
        VJ.elbo_loss(x, mu, logvar, np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"z must have shape \[K, B, Z\]"):
        VJ.iwae_loss(x, mu, logvar, np.zeros((2, 3)), np.zeros((5, 2, 4)))
    with pytest.raises(
        ValueError, match=r"decoder output must have shape \[K, \*x.shape\] with K = 5"
    ):
        VJ.iwae_loss(x, mu, logvar, np.zeros((5, 2, 3)), np.zeros((4, 2, 4)))


# ---------------------------------------------------------------- example


def _losses(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"^step\s+\d+\s+loss\s+(\S+)", stdout, re.M)]


def test_example_trains():
    pytest.importorskip("equinox")
    pytest.importorskip("optax")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, str(ROOT / "examples" / "jax_mnist.py"), "--synthetic"]
    cmd += ["--steps", "30", "--log-every", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(proc.stdout)
    assert len(losses) == 6 and np.isfinite(losses).all(), proc.stdout
    assert losses[-1] < losses[0] - 50, proc.stdout  # 10 noisy prototypes: learnt quickly
    assert "test (500 examples): -" in proc.stdout
