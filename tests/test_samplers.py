"""Post-hoc samplers: the mixture's density against SciPy, the flow against a known Gaussian,
save/load round trips, and the CLI end to end on a tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from tests.helpers.cli import train_flags
from vaekit.cli import main
from vaekit.samplers import (
    FlowSampler,
    GaussianMixtureSampler,
    SecondStageSampler,
    fit_flow,
    fit_gmm,
    load_sampler,
    save_sampler,
)


def _clusters(n: int, seed: int) -> torch.Tensor:
    """Three well separated anisotropic 3-D Gaussian clusters."""
    g = np.random.default_rng(seed)
    centres = np.array([[4.0, 0, 0], [-4, 2, 0], [0, -4, 3]])
    k = g.integers(0, 3, n)
    return torch.from_numpy(centres[k] + g.normal(size=(n, 3)) * [1.0, 0.5, 0.3])


def test_gmm_log_prob_matches_a_scipy_mixture_and_selection_finds_three_clusters():
    sampler, info = fit_gmm(_clusters(900, 0), _clusters(300, 1), components=(1, 3), seed=0)
    assert info["components"] == 3
    assert info["valid_log_lik"][3] > info["valid_log_lik"][1]
    z = _clusters(50, 2)
    w = torch.softmax(sampler.logits, 0).numpy()
    covs = (sampler.scale_tril @ sampler.scale_tril.transpose(-1, -2)).numpy()
    by_hand = logsumexp(
        [
            np.log(w[k])
            + stats.multivariate_normal(sampler.loc[k].numpy(), covs[k]).logpdf(z.numpy())
            for k in range(3)
        ],
        axis=0,
    )
    np.testing.assert_allclose(
        sampler.log_prob(z).numpy(), by_hand, rtol=1e-6, atol=1e-5
    )  # float32
    # the fitted mixture recovers the clusters' centres (in some order)
    centres = sorted(map(tuple, sampler.loc.numpy().round(0)))
    assert centres == sorted([(4.0, 0, 0), (-4, 2, 0), (0, -4, 3)])
    # validation score is the mean log-likelihood per code, nats
    assert info["valid_log_lik"][3] == pytest.approx(
        float(sampler.log_prob(_clusters(300, 1)).mean()), rel=1e-6
    )


def test_gmm_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"valid must have D = 3 columns; received 2"):
        fit_gmm(torch.zeros(10, 3), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="finite"):
        fit_gmm(torch.full((10, 3), float("nan")), torch.zeros(10, 3))


def test_flow_learns_a_correlated_gaussian():
    # the standardisation alone cannot remove the correlation; the couplings must
    cov = np.array([[1.0, 0.9], [0.9, 1.0]]) * 4
    g = np.random.default_rng(0)
    draw = lambda n: torch.from_numpy(g.multivariate_normal([1, -2], cov, n)).float()  # noqa: E731
    train, valid, test = draw(4000), draw(1000), draw(2000)
    sampler, info = fit_flow(train, valid, layers=4, hidden=32, epochs=15, seed=0)
    true = stats.multivariate_normal([1, -2], cov).logpdf(test.numpy()).mean()
    with torch.no_grad():
        got = float(sampler.log_prob(test).mean())
    assert got == pytest.approx(true, abs=0.08)
    assert info["valid_log_lik"] == max(info["history"])
    torch.manual_seed(0)
    z = sampler.latents(20000)
    assert np.corrcoef(z.T.numpy())[0, 1] == pytest.approx(0.9, abs=0.03)


@pytest.mark.parametrize("kind", ["gmm", "flow", "two_stage"])
def test_save_load_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "gmm":
        sampler = GaussianMixtureSampler(3, 2)
        with torch.no_grad():
            sampler.logits.normal_()
            sampler.loc.normal_()
    elif kind == "flow":
        sampler = FlowSampler(2, layers=2, hidden=8)
        with torch.no_grad():
            for p in sampler.parameters():
                p.normal_()
    else:
        sampler = SecondStageSampler(2, hidden=(8,))
    meta = save_sampler(sampler, tmp_path, "mine", {"note": 1})
    assert json.loads(meta.read_text())["kind"] == kind
    loaded = load_sampler(tmp_path, "mine")
    assert type(loaded) is type(sampler)
    for (k, a), (k2, b) in zip(
        sampler.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    torch.manual_seed(5)
    a = sampler.latents(7)
    torch.manual_seed(5)
    assert torch.equal(a, loaded.latents(7))


def test_load_refuses_tampered_and_unknown_samplers(tmp_path):
    save_sampler(GaussianMixtureSampler(2, 2), tmp_path, "gmm")
    with pytest.raises(ValueError, match=r"received 'nope'.*|gmm"):
        load_sampler(tmp_path, "nope")
    with pytest.raises(ValueError, match="sampler name"):
        load_sampler(tmp_path, "../gmm")
    weights = tmp_path / "samplers" / "gmm.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_sampler(tmp_path, "gmm")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("samplers")
    g = np.random.default_rng(0)
    x = (g.random((200, 4, 4)) < 0.3).astype(np.float32)
    x[:100, :2] = 1.0  # two kinds of image
    npz = tmp / "tiny.npz"
    np.savez(npz, train=x[:120], valid=x[120:160], test=x[160:])
    run = tmp / "run"
    assert main(train_flags(npz, run, "--no-eval")) == 0
    return run


def test_cli_fit_sampler_and_sample_end_to_end(tiny_run, capsys):
    for kind in ("gmm", "flow", "two_stage"):
        extra = [] if kind == "gmm" else ["--epochs", "2"]
        assert main(["fit-sampler", str(tiny_run), "--kind", kind, *extra]) == 0
        record = json.loads((tiny_run / "samplers" / f"{kind}.json").read_text())
        assert record["kind"] == kind and "posterior means" in record["info"]["codes"]
        png = tiny_run / f"s_{kind}.png"
        assert (
            main(["sample", str(tiny_run), "--sampler", kind, "--n", "4", "--out", str(png)]) == 0
        )
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gmm = json.loads((tiny_run / "samplers" / "gmm.json").read_text())["info"]
    assert str(gmm["components"]) == max(
        gmm["valid_log_lik"], key=lambda k: gmm["valid_log_lik"][k]
    )
    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--sampler", "maf"]) == 2
    assert "gmm" in capsys.readouterr().err  # names the fitted ones
    assert main(["fit-sampler", str(tiny_run), "--kind", "gmm", "--epochs", "3"]) == 2
    assert main(["fit-sampler", str(tiny_run / "missing"), "--kind", "gmm"]) == 2
