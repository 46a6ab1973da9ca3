"""vaekit.interop.keras: parity with PyTorch on the torch and jax backends, VAE, BetaSchedule."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Keras fixes its backend at first import, and its default (TensorFlow) is not a vaekit
# dependency; torch is. The parity runs choose their backend in a subprocess.
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from tests.interop import cases  # noqa: E402
from vaekit.interop import keras as VK  # noqa: E402
from vaekit.schedules import Constant, Cyclical, LinearWarmup  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# one thread: the machines that run this suite are small and shared
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_backend_parity(backend):
    """Every formula (float64 to 1e-10, float32), its input gradients, ELBO/IWAE vs vaekit.objectives,
    and VAE.fit with a BetaSchedule, on one Keras backend (see keras_parity.py)."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**ENV, "KERAS_BACKEND": backend, "JAX_ENABLE_X64": "1"}
    cmd = [sys.executable, "-m", "tests.interop.keras_parity"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    results = report["results"]
    expected = 2 * len(cases.CASES) + len(cases.OBJECTIVES) + 2  # + errors, VAE.fit
    assert len(results) == expected, sorted(results)
    failed = {name: err for name, err in results.items() if err}
    assert not failed, "\n\n".join(f"{name}:\n{err}" for name, err in failed.items())


def _vae(**kwargs):
    enc = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    dec = keras.Sequential([keras.Input((2,)), keras.layers.Dense(6)])
    return VK.VAE(enc, dec, **kwargs)


def _beta(model) -> float:
    return float(model.beta.value)


def _np(t) -> np.ndarray:
    return np.asarray(t.tolist())  # any backend, no copy-keyword warning from NumPy 2


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (LinearWarmup(1.0, steps=4), {0: 0.0, 1: 0.25, 3: 0.75, 4: 1.0, 10: 1.0}),
        (LinearWarmup(2.0, steps=0), {0: 2.0, 5: 2.0}),
        (Constant(0.5), {0: 0.5, 7: 0.5}),
        (Cyclical(1.0, period=4, ratio=0.5), {0: 0.0, 1: 0.5, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.5}),
        (Cyclical(3.0, period=5, ratio=1.0), {0: 0.0, 1: 0.6, 4: 2.4, 5: 0.0, 7: 1.2}),
    ],
    ids=["warmup", "warmup-none", "constant", "cyclical", "sawtooth"],
)
def test_beta_schedule_sets_beta(schedule, expected):
    model = _vae(beta=7.0)
    callback = VK.BetaSchedule(schedule)
    callback.set_model(model)
    for epoch, beta in expected.items():
        callback.on_epoch_begin(epoch)
        assert _beta(model) == pytest.approx(beta, abs=1e-6)
        logs = {}
        callback.on_epoch_end(epoch, logs)
        assert logs["beta"] == pytest.approx(beta, abs=1e-12)


def test_beta_schedule_errors():
    with pytest.raises(ValueError, match="schedule must be a callable"):
        VK.BetaSchedule(0.5)
    callback = VK.BetaSchedule(Constant(1.0))
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="needs a model with a `beta` keras.Variable"):
        callback.on_epoch_begin(0)
    callback = VK.BetaSchedule(lambda epoch: -1.0)
    callback.set_model(_vae())
    with pytest.raises(ValueError, match="beta must be >= 0"):
        callback.on_epoch_begin(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"period": 0}, "period must be an integer >= 1"),
        ({"period": 2.5}, "period must be an integer >= 1"),
        ({"period": 4, "ratio": 0.0}, r"ratio must be in \(0, 1\]"),
        ({"period": 4, "ratio": 1.5}, r"ratio must be in \(0, 1\]"),
        ({"period": 4, "value": -1.0}, "value must be >= 0"),
    ],
)
def test_cyclical_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Cyclical(**kwargs)


def test_vae_rejects_bad_arguments():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        _vae(likelihood="gaussian")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        _vae(beta=-0.5)


def test_vae_loss_is_the_vaekit_elbo():
    model = _vae(beta=0.3, seed=1)
    x = (np.random.default_rng(0).uniform(size=(8, 6)) < 0.5).astype("float32")
    out = model(x)
    loss = model.compute_loss(x=x, y_pred=out)
    ref = VK.elbo_loss(x, out["mu"], out["logvar"], out["params"], beta=0.3)
    np.testing.assert_allclose(_np(loss), _np(ref.loss), rtol=1e-6)
    metrics = {m.name: float(m.result()) for m in model.metrics}
    pe = {k: _np(v) for k, v in ref.per_example.items()}
    expected = {"loss": pe["loss"].mean(), "rec": pe["rec"].mean(), "kl": pe["kl"].mean()}
    assert metrics == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="sample_weight must be None"):
        model.compute_loss(x=x, y_pred=out, sample_weight=np.ones(8))


def test_example_trains():
    cmd = [sys.executable, str(ROOT / "examples" / "keras_mnist.py"), "--synthetic"]
    cmd += ["--steps", "40", "--epochs", "4", "--batch-size", "50"]
    env = {**ENV, "KERAS_BACKEND": "torch"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"^epoch\s+\d+\s+loss\s+(\S+)", proc.stdout, re.M)]
    assert len(losses) == 4 and np.isfinite(losses).all(), proc.stdout
    assert losses[-1] < losses[0] - 50, proc.stdout
    assert "test (500 examples): -ELBO" in proc.stdout
