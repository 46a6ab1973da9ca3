"""vaekit.doctor: each gallery loss diagnosed as what it computes by construction."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import doctor_gallery as G
from vaekit.cli import main
from vaekit.doctor import diagnose

ROOT = Path(__file__).resolve().parents[1]
D = 784


def test_pytorch_example_is_minus_elbo_summed():
    d = diagnose(G.pytorch_example)
    assert (d.likelihood, d.recon) == ("bernoulli", "probabilities")
    assert (d.batch_reduction, d.pixel_reduction) == ("sum", "sum")
    assert (d.kl, d.kl_sign) == ("analytic", "ok")
    assert d.effective_beta == pytest.approx(1, rel=1e-9)
    assert "−ELBO summed over the batch, β = 1" in d.verdict
    assert "log-probabilities clamped at -100" in d.clipping  # F.binary_cross_entropy
    assert d.equivalent == (
        "vaekit.classic_loss(recon_x, x, mu, logvar, probs=True, reduction='sum')"
    )


def test_keras_example_is_minus_elbo_averaged_channels_last():
    d = diagnose(G.keras_example)
    assert d.framework == "numpy" and d.input_shape == [28, 28, 1]
    assert (d.likelihood, d.recon, d.batch_reduction, d.pixel_reduction) == (
        "bernoulli", "probabilities", "mean", "sum",
    )  # fmt: skip
    assert d.effective_beta == pytest.approx(1, rel=1e-9)
    assert d.clipping == "probabilities clipped to [1e-07, 1 - 1e-07]"  # Keras' epsilon
    assert "−ELBO averaged over the batch, β = 1" in d.verdict


def test_mean_over_pixels_has_effective_beta_784():
    d = diagnose(G.mean_over_pixels)
    assert (d.batch_reduction, d.pixel_reduction) == ("mean", "mean")
    assert d.effective_beta == pytest.approx(D, rel=1e-9)
    assert d.factor == pytest.approx(1 / D, rel=1e-9)
    assert "effective β = 784" in d.verdict
    assert "beta=784" in d.equivalent


def test_mse_mean_with_kld_weight():
    d = diagnose(G.pytorch_vae_kld_weight)
    assert (d.likelihood, d.recon) == ("gaussian", "the mean")
    assert (d.batch_reduction, d.pixel_reduction) == ("mean", "mean")
    # per example: (1/D) sum (r - x)^2 + w KL = (1/D) [sum (r - x)^2 + w D KL]
    assert d.effective_beta == pytest.approx(G.KLD_WEIGHT * D, rel=1e-9)
    assert 'likelihood="gaussian", scale=math.sqrt(0.5)' in d.equivalent


def test_tf_tutorial_single_sample_mc():
    d = diagnose(G.tf_tutorial_mc)
    assert (d.likelihood, d.recon) == ("bernoulli", "logits")
    assert (d.kl, d.kl_sign, d.batch_reduction, d.pixel_reduction) == ("mc", "ok", "mean", "sum")
    assert d.effective_beta == pytest.approx(1, rel=1e-9)  # exact: the RNG is re-seeded
    assert d.clipping == "none"


def test_flipped_kl():
    d = diagnose(G.flipped_kl)
    assert (d.kl, d.kl_sign) == ("analytic", "flipped")
    assert d.effective_beta == pytest.approx(1, rel=1e-9)  # the size; the sign is kl_sign
    assert "wrong sign" in d.verdict


def test_numpy_loss_with_its_own_rng_mc_kl():
    # a KL estimated with an RNG the doctor cannot seed: the weight is estimated (to ~1%)
    import numpy as np

    def loss(r, x, mu, lv):
        eps = np.random.default_rng().normal(size=mu.shape)
        z = mu + np.exp(lv / 2) * eps
        return np.sum((r - x) ** 2) + 3.0 * np.sum(-0.5 * eps**2 - lv / 2 + 0.5 * z**2)

    d = diagnose(loss)
    assert (d.likelihood, d.kl, d.batch_reduction) == ("gaussian", "mc", "sum")
    assert d.effective_beta == pytest.approx(3.0, rel=0.02)


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "vaekit.cli", "doctor", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_json():
    proc = _cli("tests.helpers.doctor_gallery:mean_over_pixels", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("likelihood", "batch_reduction", "pixel_reduction", "kl", "kl_sign",
                "effective_beta", "equivalent"):  # fmt: skip
        assert key in out
    assert out["effective_beta"] == pytest.approx(D, rel=1e-9)
    assert (out["likelihood"], out["kl"], out["kl_sign"]) == ("bernoulli", "analytic", "ok")


def test_cli_text(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["doctor", "tests.helpers.doctor_gallery:pytorch_example"]) == 0
    assert "−ELBO summed over the batch, β = 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tests.helpers.doctor_gallery", "MODULE:FUNCTION"),
        ("no_such_module_xyz:f", "could not import module 'no_such_module_xyz'"),
        ("tests.helpers.doctor_gallery:nope", "has no attribute 'nope'"),
        ("tests.helpers.doctor_gallery:NOT_A_FUNCTION", "must be a function"),
    ],
)
def test_cli_bad_spec_exits_2_with_a_message(spec, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["doctor", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaekit: error: ") and message in err


def test_uncallable_and_unprobeable():
    with pytest.raises(ValueError, match="fn must be callable"):
        diagnose(3)
    with pytest.raises(ValueError, match="every call failed"):
        diagnose(lambda r, x, mu, lv: r.no_such_method())
