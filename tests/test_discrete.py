"""Discrete latents (vaekit.discrete, JointVAE) against brute force, torch.distributions and SciPy."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from torch import nn
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from vaekit import ELBO, VAE
from vaekit import functional as VF
from vaekit.cli import main
from vaekit.discrete import (
    GumbelSoftmax,
    GumbelSoftmaxCategorical,
    JointLatent,
    JointPosterior,
    JointPrior,
    UniformCategorical,
    category_rows,
    cluster_accuracy,
    evaluate_discrete,
)
from vaekit.evaluate import evaluate
from vaekit.likelihoods import Bernoulli
from vaekit.objectives import JointVAE
from vaekit.schedules import Geometric

D_X = 12


def _codes(m: int, c: int) -> torch.Tensor:
    """Every joint code of M categoricals of C, one-hot: ``[C**M, M * C]``."""
    grid = torch.tensor(list(itertools.product(range(c), repeat=m)))
    return torch.nn.functional.one_hot(grid, c).float().flatten(-2)


# -- the closed-form KL ----------------------------------------------------------------------


@pytest.mark.parametrize("m, c", [(1, 2), (1, 10), (3, 4)], ids=["1x2", "1x10", "3x4"])
def test_kl_to_uniform_matches_brute_force_and_torch(m, c):
    logits = torch.randn(5, m, c, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = VF.kl_categorical_uniform(logits)
    q = torch.softmax(logits, -1).numpy()
    # brute force: the KL of the joint pmf over all C**M codes against (1/C)**M
    brute = []
    for b in range(5):
        total = 0.0
        for code in itertools.product(range(c), repeat=m):
            p_code = np.prod([q[b, i, k] for i, k in enumerate(code)])
            total += p_code * (math.log(p_code) - m * math.log(1.0 / c))
        brute.append(total)
    torch.testing.assert_close(got, torch.tensor(brute, dtype=torch.float64))
    uniform = Categorical(logits=torch.zeros(c, dtype=torch.float64))
    ref = kl_divergence(Categorical(logits=logits), uniform).sum(-1)
    torch.testing.assert_close(got, ref)
    # the registered pair gives the same, with the uniform prior module
    q_dist = GumbelSoftmaxCategorical(logits)
    p_dist = UniformCategorical(c, m).double()()
    torch.testing.assert_close(kl_divergence(q_dist, p_dist), ref)


def test_kl_bounds_uniform_zero_one_hot_m_log_c():
    m, c = 2, 5
    assert VF.kl_categorical_uniform(torch.zeros(1, m, c)).item() == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.full((1, m, c), -1e4)
    one_hot[..., 0] = 1e4
    assert VF.kl_categorical_uniform(one_hot).item() == pytest.approx(m * math.log(c), rel=1e-6)
    with pytest.raises(ValueError, match="C >= 2"):
        VF.kl_categorical_uniform(torch.zeros(3, 1))


def test_registered_kl_to_a_non_uniform_categorical_matches_the_joint_pmf():
    m, c = 2, 3
    g = torch.Generator().manual_seed(1)
    lq = torch.randn(4, m, c, dtype=torch.float64, generator=g)
    lp = torch.randn(m, c, dtype=torch.float64, generator=g)
    q, p = GumbelSoftmaxCategorical(lq), GumbelSoftmaxCategorical(lp)
    codes = _codes(m, c).double()
    log_q = q.log_prob(codes.unsqueeze(1))  # [C**M, B]
    log_p = p.log_prob(codes).unsqueeze(1)
    brute = (log_q.exp() * (log_q - log_p)).sum(0)
    torch.testing.assert_close(kl_divergence(q, p), brute)


def test_joint_kl_is_the_sum_of_torch_normal_kl_and_the_categorical_kl():
    g = torch.Generator().manual_seed(2)
    mu, sd, logits = torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.5, None
    logits = torch.randn(3, 1, 5, generator=g)
    normal = Independent(Normal(mu, sd), 1)
    q = JointLatent(normal, GumbelSoftmaxCategorical(logits))
    p = JointPrior(4, 5)()
    ref = kl_divergence(normal, Independent(Normal(torch.zeros(4), torch.ones(4)), 1))
    ref = ref + kl_divergence(Categorical(logits=logits[:, 0]), Categorical(logits=torch.zeros(5)))
    torch.testing.assert_close(kl_divergence(q, p), ref)


# -- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hard, relaxed", [(True, True), (False, False)], ids=["st", "exact"])
def test_one_hot_sample_frequencies_match_the_probabilities(hard, relaxed):
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    q = GumbelSoftmaxCategorical(probs.log().reshape(1, 4), 0.5, hard=hard, relaxed=relaxed)
    torch.manual_seed(0)
    y = q.sample((20000,))
    assert torch.equal(y.sum(-1), torch.ones(20000))  # one-hot
    assert bool(((y == 0) | (y == 1)).all())
    counts = y.sum(0).numpy()
    assert stats.chisquare(counts, probs.numpy() * 20000).pvalue > 1e-3


def test_relaxed_argmax_is_gumbel_max_and_samples_lie_on_the_simplex():
    probs = torch.tensor([0.6, 0.3, 0.1])
    q = GumbelSoftmaxCategorical(probs.log().reshape(1, 3), temperature=2.0)
    torch.manual_seed(1)
    y = q.rsample((20000,))
    torch.testing.assert_close(y.sum(-1), torch.ones(20000))
    assert float(y.max()) < 1.0  # soft at tau = 2
    counts = np.bincount(y.argmax(-1).numpy(), minlength=3)
    assert stats.chisquare(counts, probs.numpy() * 20000).pvalue > 1e-3


def test_straight_through_gradient_equals_the_relaxed_gradient():
    logits = torch.randn(6, 2, 4, generator=torch.Generator().manual_seed(3))
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(4))
    grads = {}
    for hard in (False, True):
        lg = logits.clone().requires_grad_(True)
        torch.manual_seed(5)  # the same Gumbel noise
        y = GumbelSoftmaxCategorical(lg, 0.7, hard=hard).rsample()
        (w * y).sum().backward()
        grads[hard] = lg.grad
        if hard:
            blocks = y.detach().reshape(6, 2, 4)
            torch.testing.assert_close(blocks.sum(-1), torch.ones(6, 2))
            assert bool(((blocks - blocks.round()).abs() < 1e-6).all())
    torch.testing.assert_close(grads[True], grads[False])


def test_log_prob_is_the_categorical_pmf_and_refuses_relaxed_values():
    logits = torch.randn(2, 3, generator=torch.Generator().manual_seed(6))
    q = GumbelSoftmaxCategorical(logits.reshape(1, 2, 3))
    code = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]])
    ref = Categorical(logits=logits).log_prob(torch.tensor([1, 2])).sum()
    torch.testing.assert_close(q.log_prob(code)[0], ref)
    with pytest.raises(ValueError, match="one-hot"):
        q.log_prob(torch.full((1, 6), 1 / 3))


# -- the posterior module and its temperature schedule -------------------------------------


def test_geometric_schedule_is_jangs_exponential_annealing():
    s = Geometric(1.0, 0.5, steps=1000)
    r = math.log(2.0) / 1000
    for step in (0, 1, 250, 999, 1000, 5000):
        assert s(step) == pytest.approx(max(0.5, math.exp(-r * step)))
    assert s.final == 0.5
    for bad in (dict(start=0.0), dict(end=-1.0), dict(steps=-1), dict(start=float("nan"))):
        with pytest.raises(ValueError):
            Geometric(**{"start": 1.0, "end": 0.5, "steps": 10, **bad})


def _model(posterior, prior, code: int, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    n_in = posterior.features
    enc = nn.Sequential(nn.Linear(D_X, 16), nn.Tanh(), nn.Linear(16, n_in))
    dec = nn.Sequential(nn.Linear(code, 16), nn.Tanh(), nn.Linear(16, D_X))
    return VAE(enc, dec, posterior=posterior, prior=prior, likelihood=Bernoulli())


def _data(n: int = 8) -> torch.Tensor:
    return torch.rand(n, D_X, generator=torch.Generator().manual_seed(7)).round()


def test_the_temperature_schedule_reaches_the_posterior_through_the_objective():
    tau = Geometric(1.0, 0.5, steps=100)
    model = _model(GumbelSoftmax(4, 2, temperature=tau), UniformCategorical(4, 2), 8)
    x = _data()
    ELBO()(model, x, step=50)
    assert model.encode(x).temperature == pytest.approx(0.5**0.5)
    ELBO()(model, x)  # evaluation: the schedule's final value
    assert model.encode(x).temperature == pytest.approx(0.5)
    joint = _model(JointPosterior(3, 4, temperature=tau), JointPrior(3, 4), 7)
    out = JointVAE()(joint, x, step=25)
    assert out.metrics["temperature"].item() == pytest.approx(0.5**0.25)


def test_posterior_modules_refuse_bad_arguments():
    for kwargs, name in [
        (dict(categories=1), "categories"),
        (dict(categories=3, variables=0), "variables"),
        (dict(categories=3, temperature=0.0), "temperature"),
        (dict(categories=3, temperature=float("inf")), "temperature"),
    ]:
        with pytest.raises(ValueError, match=name):
            GumbelSoftmax(**kwargs)
    with pytest.raises(ValueError, match="6 = variables x categories"):
        GumbelSoftmax(3, 2)(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="2 x latent_dim"):
        JointPosterior(2, 3)(torch.zeros(4, 6))


def test_evaluation_draws_exact_one_hot_codes():
    model = _model(GumbelSoftmax(5, 2, temperature=3.0), UniformCategorical(5, 2), 10).eval()
    z = model(_data(), samples=50).z
    assert bool(((z == 0) | (z == 1)).all())
    torch.testing.assert_close(z.reshape(50, 8, 2, 5).sum(-1), torch.ones(50, 8, 2))


# -- JointVAE ----------------------------------------------------------------------------------


def test_jointvae_capacity_terms_match_a_hand_computation():
    d, c = 3, 4
    model = _model(JointPosterior(d, c), JointPrior(d, c), d + c, seed=1)
    x = _data()
    obj = JointVAE(gamma=7.0, cont_capacity=2.0, cont_capacity_steps=100, disc_capacity=5.0,
                   disc_capacity_steps=100)  # fmt: skip
    h = model.encoder(x).detach().double()
    mu, logvar, logits = h[:, :d], h[:, d : 2 * d], h[:, 2 * d :]
    kl_cont = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    q = torch.softmax(logits, 1)
    kl_disc = (q * q.log()).sum(1) + math.log(c)
    for step, c_z, c_c in [(20, 0.4, 1.0), (80, 1.6, math.log(c)), (None, 2.0, math.log(c))]:
        out = obj(model, x, step=step)
        want = 7.0 * ((kl_cont - c_z).abs() + (kl_disc - c_c).abs())
        got = out.per_example["loss"] - out.per_example["rec"]
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            out.per_example["kl_cont"].double(), kl_cont, rtol=1e-4, atol=1e-5
        )
        torch.testing.assert_close(
            out.per_example["kl_disc"].double(), kl_disc, rtol=1e-4, atol=1e-5
        )
        assert out.metrics["disc_capacity"].item() == pytest.approx(c_c)
    with pytest.raises(ValueError, match="joint continuous"):
        obj(_model(GumbelSoftmax(4), UniformCategorical(4), 4), x)


# -- evaluation --------------------------------------------------------------------------------


def test_enumerated_nll_matches_a_loop_over_codes_and_bounds_the_importance_estimate():
    m, c = 2, 3
    model = _model(GumbelSoftmax(c, m), UniformCategorical(c, m), m * c, seed=2)
    x = _data(6)
    got = evaluate_discrete(model, x, labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    with torch.no_grad():
        log_px = torch.stack(
            [model.decode(code.expand(6, -1)).log_prob(x) for code in _codes(m, c)]
        )
        ref = -(torch.logsumexp(log_px, 0) - m * math.log(c)).mean().item()
    assert got["nll_enumerated"] == pytest.approx(ref, rel=1e-5)
    torch.manual_seed(0)
    iw = evaluate(model, x, samples=2000)
    # IWAE_K with exact one-hot codes: a lower bound on log p(x), tight for 9 codes and K = 2000
    assert iw["nll"] >= ref - 1e-4
    assert iw["nll"] == pytest.approx(ref, abs=0.05)
    assert got["elbo_enumerated"] <= -ref + 1e-5
    assert iw["elbo"] == pytest.approx(got["elbo_enumerated"], abs=0.1)
    assert sum(got["category_counts"]) == 6


def test_cluster_accuracy_is_the_best_permutation():
    g = np.random.default_rng(0)
    codes, labels = g.integers(0, 4, 200), g.integers(0, 4, 200)
    best = max(
        np.mean(np.array(perm)[codes] == labels) for perm in itertools.permutations(range(4))
    )
    assert cluster_accuracy(codes, labels) == pytest.approx(best)
    assert cluster_accuracy([2, 2, 0, 0], [1, 1, 3, 3]) == 1.0
    with pytest.raises(ValueError, match="one length"):
        cluster_accuracy([0, 1], [0])


def test_category_rows_decode_each_category_with_shared_continuous_codes():
    d, c = 2, 3
    model = _model(JointPosterior(d, c), JointPrior(d, c), d + c, seed=3)
    torch.manual_seed(0)
    rows = category_rows(model, n=4)
    torch.manual_seed(0)
    z = model.prior().sample((4,))
    for k in range(c):
        code = torch.cat(
            [z[:, :d], torch.nn.functional.one_hot(torch.tensor(k), c).expand(4, c)], 1
        )
        torch.testing.assert_close(rows[k], torch.sigmoid(model.decoder(code)))
    # a single categorical and nothing else: one image per category, E[x | c]
    alone = _model(GumbelSoftmax(c), UniformCategorical(c), c, seed=4)
    rows = category_rows(alone, n=4)
    assert rows.shape == (c, 1, D_X)
    torch.testing.assert_close(rows[:, 0], torch.sigmoid(alone.decoder(torch.eye(c))))


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def npz(tmp_path):
    g = np.random.default_rng(0)
    x = (g.random((100, 4, 4)) > 0.5).astype(np.float32)
    path = tmp_path / "tiny.npz"
    np.savez(path, train=x[:60], valid=x[60:80], test=x[80:])
    return path


def _flags(npz, out, *extra: str) -> list[str]:
    return [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--hidden", "16", "--epochs", "1", "--batch-size", "20", "--eval-samples", "4",
        "--no-tensorboard", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def test_cli_trains_a_gumbel_softmax_vae(npz, tmp_path):
    out = tmp_path / "g"
    flags = ("--posterior", "gumbel", "--categories", "3", "--discrete-variables", "2", "--hard")
    assert main(_flags(npz, out, *flags)) == 0
    model_cfg = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert model_cfg["categories"] == 3 and model_cfg["hard"] is True
    assert "latent_dim" not in model_cfg and "prior" not in model_cfg
    assert "temperature_end" not in model_cfg  # not annealed: unused
    result = json.loads((out / "eval.json").read_text())
    assert result["categories"] == 3 and sum(result["category_counts"]) == 20
    assert result["nll_enumerated"] > 0 and math.isfinite(result["nll"])
    assert (out / "categories.png").exists()


def test_cli_trains_a_gumbel_softmax_vae_with_the_capacity_objective(npz, tmp_path):
    out = tmp_path / "c"
    flags = ("--posterior", "gumbel", "--categories", "3", "--objective", "capacity",
             "--gamma", "2", "--capacity", "0.5", "--capacity-steps", "2", "--no-eval")  # fmt: skip
    assert main(_flags(npz, out, *flags)) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["objective"]["objective"] == "capacity" and cfg["model"]["posterior"] == "gumbel"
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"][-1]
    assert 0.0 <= train["kl"] <= math.log(3) + 1e-5  # the closed-form categorical KL
    # C(step) = 0.5 min(1, step / 2); the epoch row averages its steps 0, 1, 2
    assert train["capacity"] == pytest.approx((0.0 + 0.25 + 0.5) / 3, rel=1e-5)


def test_cli_trains_jointvae_with_its_objective_and_an_annealed_temperature(npz, tmp_path):
    out = tmp_path / "j"
    flags = ("--model", "jointvae", "--latent-dim", "2", "--categories", "3", "--gamma", "5",
             "--temperature", "1.0", "--temperature-steps", "3", "--temperature-end", "0.25")  # fmt: skip
    assert main(_flags(npz, out, *flags)) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["objective"]["objective"] == "jointvae" and cfg["objective"]["gamma"] == 5.0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"][-1]
    # the epoch row averages its 3 steps (60 examples / 20): tau = 0.25 ** (step / 3)
    want = sum(0.25 ** (s / 3) for s in range(3)) / 3
    assert train["temperature"] == pytest.approx(want, rel=1e-5)
    assert (out / "categories.png").exists()


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (("--posterior", "gumbel", "--categories", "1"), "categories.*>= 2"),
        (("--posterior", "gumbel", "--temperature", "0"), "temperature.*> 0"),
        (("--posterior", "gumbel", "--temperature-end", "0.3"), "temperature_end"),
        (("--posterior", "gumbel", "--latent-dim", "4"), "latent_dim"),
        (("--categories", "4"), "categories"),  # a Gaussian VAE does not use it
        (("--model", "jointvae", "--objective", "elbo"), "jointvae"),
        (("--model", "jointvae", "--prior", "mog"), "prior"),
    ],
    ids=[
        "categories",
        "temperature",
        "end-without-steps",
        "latent-dim",
        "gaussian",
        "elbo",
        "prior",
    ],
)
def test_cli_refuses_bad_discrete_settings(npz, tmp_path, capsys, extra, pattern):
    assert main(_flags(npz, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert __import__("re").search(pattern, err), err
