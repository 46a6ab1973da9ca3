"""Regularised ELBOs, PIWAE, MMD and the running-variance Gaussian against hand computations."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from vaekit import ELBO, IWAE, VAE
from vaekit import functional as VF
from vaekit.likelihoods import Bernoulli, RunningGaussian
from vaekit.objectives import (
    DIPVAE,
    GECO,
    MIWAE,
    PIWAE,
    WAE,
    BetaTCVAE,
    CapacityELBO,
    FactorVAE,
    InfoVAE,
    PerceptualELBO,
    TripletELBO,
    triplet_indices,
)
from vaekit.priors import LearnableGaussian, MixtureOfGaussians, StandardNormal

D_X, D_Z = 12, 3


def _model(prior=None, likelihood=None, dtype=torch.float32, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(D_X, 16), nn.Tanh(), nn.Linear(16, 2 * D_Z))
    dec = nn.Sequential(nn.Linear(D_Z, 16), nn.Tanh(), nn.Linear(16, D_X))
    model = VAE(enc, dec, prior=prior or StandardNormal(D_Z), likelihood=likelihood or Bernoulli())
    return model.to(dtype)


def _binary_data(n: int = 8, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    # pixel marginals far from 1/2 and two prototypes: there is something to learn
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(2, D_X, generator=g) < 0.5).to(dtype)
    which = torch.randint(0, 2, (n,), generator=g)
    flip = torch.rand(n, D_X, generator=g) < 0.1
    return torch.where(flip, 1 - protos[which], protos[which])


def _posterior_numpy(model: VAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    h = model.encoder(x).detach().numpy()
    return h[:, :D_Z], np.exp(0.5 * h[:, D_Z:])


def _kl_numpy(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return 0.5 * (sd**2 + mu**2 - 1 - 2 * np.log(sd)).sum(1)


# --- capacity ------------------------------------------------------------------------------


def test_capacity_elbo_matches_hand_formula_at_chosen_steps():
    model, x = _model(), _binary_data()
    obj = CapacityELBO(gamma=100.0, c_max=20.0, steps=1000)
    kl = _kl_numpy(*_posterior_numpy(model, x))
    for step, c in [(0, 0.0), (250, 5.0), (4000, 20.0), (None, 20.0)]:
        out = obj(model, x, step=step)
        rec = out.per_example["rec"].detach().numpy()
        np.testing.assert_allclose(out.per_example["kl"].detach().numpy(), kl, rtol=1e-5)
        expected = (rec + 100.0 * np.abs(kl - c)).mean()
        assert out.loss.item() == pytest.approx(expected, rel=1e-5)
        assert out.metrics["capacity"].item() == pytest.approx(c)
        np.testing.assert_allclose(out.per_example["bound"].detach().numpy(), -rec - kl, rtol=1e-5)


# --- GECO ----------------------------------------------------------------------------------


def test_geco_multiplier_follows_hand_computed_updates_over_three_steps():
    model, x = _model(), _binary_data()
    geco = GECO(tolerance=7.0, alpha=0.9, lambda_init=2.0, lr=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lam, ma = 2.0, None
    for step in range(3):
        torch.manual_seed(step)
        out = geco(model, x)
        rec = out.per_example["rec"].detach().double().numpy()
        kl = out.per_example["kl"].detach().double().numpy()
        # this step's loss uses lambda from before its update
        assert out.loss.item() == pytest.approx((kl + lam * (rec - 7.0)).mean(), rel=1e-5)
        c = (rec - 7.0).mean()
        ma = c if ma is None else 0.9 * ma + 0.1 * c
        lam = lam * math.exp(0.05 * ma)
        assert geco.constraint_ma.item() == pytest.approx(ma, rel=1e-5)
        assert geco.lagrange.item() == pytest.approx(lam, rel=1e-5)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert int(geco.updates) == 3


def test_geco_updates_only_in_training_with_gradients_and_clamps():
    model, x = _model(), _binary_data()
    geco = GECO(tolerance=-100.0, lambda_init=1.0, lr=1.0, lambda_max=3.0)
    geco.eval()
    geco(model, x)
    geco.train()
    with torch.no_grad():
        geco(model, x)
    assert geco.lagrange.item() == 1.0 and int(geco.updates) == 0
    geco(model, x)  # constraint ~ 108 nats: exp(108) is clamped at lambda_max
    assert geco.lagrange.item() == 3.0


def _round_trip(module: nn.Module) -> dict:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_geco_state_round_trips_through_weights_only_load():
    model, x = _model(), _binary_data()
    a = GECO(tolerance=5.0, lr=0.01)
    for s in range(2):
        torch.manual_seed(s)
        a(model, x)
    b = GECO(tolerance=5.0, lr=0.01)
    b.load_state_dict(_round_trip(a))
    outs = []
    for g in (a, b):
        torch.manual_seed(9)
        outs.append(g(model, x).loss.item())
    assert outs[0] == outs[1]
    assert a.lagrange.item() == b.lagrange.item() and int(b.updates) == 3


# --- beta-TCVAE ----------------------------------------------------------------------------


def _mss_weight(i: int, j: int, b: int, n: int) -> float:
    """Chen et al. (2018), appendix C.2: own posterior 1/N, one stratum member (N-M)/(NM), rest 1/M."""
    m = b - 1
    if i == j:
        return 1.0 / n
    if j == (i + 1) % b:
        return (n - m) / (n * m)
    return 1.0 / m


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_beta_tcvae_terms_match_brute_force_double_sums(estimator):
    model, x = _model(dtype=torch.float64), _binary_data(6, dtype=torch.float64)
    b, n = x.shape[0], 10
    torch.manual_seed(4)
    z = model(x).z[0].detach().numpy()
    torch.manual_seed(4)
    obj = BetaTCVAE(dataset_size=n, beta=6.0, alpha=0.5, gamma=2.0, estimator=estimator)
    out = obj(model, x)
    mu, sd = _posterior_numpy(model, x)
    log_qzx, log_qz, log_prod, log_pz = (np.zeros(b) for _ in range(4))
    for i in range(b):
        w = [1.0 / (n * b) if estimator == "mws" else _mss_weight(i, j, b, n) for j in range(b)]
        dens = [[stats.norm.pdf(z[i, d], mu[j, d], sd[j, d]) for d in range(D_Z)] for j in range(b)]
        log_qzx[i] = np.log(np.prod(dens[i]))
        log_qz[i] = np.log(sum(w[j] * np.prod(dens[j]) for j in range(b)))
        log_prod[i] = sum(np.log(sum(w[j] * dens[j][d] for j in range(b))) for d in range(D_Z))
        log_pz[i] = stats.norm.logpdf(z[i]).sum()
    pe = {k: v.detach().numpy() for k, v in out.per_example.items()}
    np.testing.assert_allclose(pe["mi"], log_qzx - log_qz, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(pe["tc"], log_qz - log_prod, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(pe["dwkl"], log_prod - log_pz, rtol=1e-7, atol=1e-8)
    # the decomposition of the one-sample KL is exact for the estimator's own log q(z)
    np.testing.assert_allclose(pe["mi"] + pe["tc"] + pe["dwkl"], log_qzx - log_pz, atol=1e-9)
    np.testing.assert_allclose(pe["kl"], log_qzx - log_pz, atol=1e-9)
    expected = pe["rec"] + 0.5 * pe["mi"] + 6.0 * pe["tc"] + 2.0 * pe["dwkl"]
    assert out.loss.item() == pytest.approx(expected.mean(), rel=1e-9)
    np.testing.assert_allclose(pe["bound"], -pe["rec"] - pe["kl"], atol=1e-9)


def _dataset_posteriors(n: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), np.exp(rng.normal(scale=0.3, size=(n, 2)))


def test_mss_is_unbiased_for_the_exact_aggregate_posterior():
    # N = 5 posteriors, z drawn from the first; the others of a batch of 3 are every ordered
    # pair of distinct indices: averaging the estimate of q(z) over them is the expectation
    mu, sd = _dataset_posteriors()
    n = len(mu)
    z = np.array([0.3, -0.4])
    exact = np.mean([np.prod(stats.norm.pdf(z, mu[k], sd[k])) for k in range(n)])
    estimates = []
    for others in itertools.permutations(range(1, n), 2):
        batch = [0, *others]
        log_q = np.stack(
            [np.stack([stats.norm.logpdf(z, mu[j], sd[j]) for j in batch]) for _ in batch]
        )  # every row evaluates the same z: only row 0 is used
        log_qz, _ = VF.aggregate_log_q(torch.tensor(log_q), n, "mss")
        estimates.append(math.exp(log_qz[0].item()))
    assert np.mean(estimates) == pytest.approx(exact, rel=1e-12)


def test_mws_with_the_whole_dataset_in_the_batch_is_the_mixture_minus_log_n():
    # Chen et al.'s 1/(N M) weights: with B = N, log q-hat(z) = log (1/N) sum_n q(z|n) - log N
    mu, sd = _dataset_posteriors()
    n = len(mu)
    rng = np.random.default_rng(1)
    z = mu + sd * rng.normal(size=mu.shape)
    log_q = np.stack(
        [np.stack([stats.norm.logpdf(z[i], mu[j], sd[j]) for j in range(n)]) for i in range(n)]
    )
    log_qz, log_prod = VF.aggregate_log_q(torch.tensor(log_q), n, "mws")
    mixture = np.log(np.exp(log_q.sum(-1)).mean(1))
    marginals = np.log(np.exp(log_q).mean(1)).sum(-1)
    np.testing.assert_allclose(log_qz.numpy(), mixture - math.log(n), rtol=1e-12)
    np.testing.assert_allclose(log_prod.numpy(), marginals - 2 * math.log(n), rtol=1e-12)


def test_beta_tcvae_rejects_a_mixture_prior_and_a_batch_larger_than_the_dataset():
    x = _binary_data()
    with pytest.raises(ValueError, match=r"factorised prior.*DiagonalGaussianMixture"):
        BetaTCVAE(dataset_size=100)(_model(prior=MixtureOfGaussians(D_Z, 3)), x)
    with pytest.raises(ValueError, match=r"dataset_size must be an integer >= the batch size 8"):
        BetaTCVAE(dataset_size=4)(_model(), x)
    out = BetaTCVAE(dataset_size=8, estimator="mss")(_model(prior=LearnableGaussian(D_Z)), x)
    assert torch.isfinite(out.loss)


# --- DIP-VAE -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dip_covariance_and_penalty_match_numpy(kind):
    model, x = _model(), _binary_data(10)
    mu, sd = _posterior_numpy(model, x)
    cov = np.cov(mu.T, bias=True) + (np.diag((sd**2).mean(0)) if kind == "ii" else 0.0)
    obj = DIPVAE(kind=kind, lambda_od=3.0)
    lam_d = {"i": 30.0, "ii": 3.0}[kind]
    assert obj.diagonal_weight == lam_d
    off = (cov**2).sum() - (np.diag(cov) ** 2).sum()
    penalty = 3.0 * off + lam_d * ((np.diag(cov) - 1) ** 2).sum()
    np.testing.assert_allclose(
        obj.covariance(model.encode(x)).detach().numpy(), cov, rtol=1e-5, atol=1e-7
    )
    out = obj(model, x)
    np.testing.assert_allclose(out.per_example["dip"].detach().numpy(), penalty, rtol=1e-5)
    rec, kl = out.per_example["rec"], out.per_example["kl"]
    assert out.loss.item() == pytest.approx((rec + kl).mean().item() + penalty, rel=1e-5)
    assert DIPVAE(kind=kind, lambda_od=3.0, lambda_d=0.5).diagonal_weight == 0.5


# --- FactorVAE -----------------------------------------------------------------------------


def _factor(**kw) -> FactorVAE:
    torch.manual_seed(123)
    return FactorVAE(D_Z, **{"hidden": 16, "layers": 2, "lr": 1e-2, **kw})


def test_factorvae_tc_is_the_mean_logit_difference():
    model, x, fv = _model(), _binary_data(), _factor(gamma=5.0).eval()
    torch.manual_seed(3)
    z = model(x).z[0]
    logits = fv.discriminator(z).detach().numpy()
    torch.manual_seed(3)
    out = fv(model, x)
    tc = logits[:, 0] - logits[:, 1]
    np.testing.assert_allclose(out.per_example["tc"].detach().numpy(), tc, rtol=1e-5, atol=1e-6)
    rec, kl = out.per_example["rec"], out.per_example["kl"]
    assert out.loss.item() == pytest.approx((rec + kl).mean().item() + 5.0 * tc.mean(), rel=1e-5)


def test_factorvae_discriminator_step_changes_only_the_discriminator():
    model, x, fv = _model(), _binary_data(), _factor()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_disc = [p.clone() for p in fv.discriminator.parameters()]
    out = fv(model, x)
    assert 0.0 <= out.metrics["disc_acc"].item() <= 1.0
    assert all(torch.equal(v, before_model[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    changed = [
        not torch.equal(p, q)
        for p, q in zip(fv.discriminator.parameters(), before_disc, strict=True)
    ]
    assert all(changed)
    out.loss.backward()  # the TC term's gradient reaches the encoder, not the discriminator
    assert all(p.grad is None for p in fv.discriminator.parameters())
    assert model.encoder[0].weight.grad.abs().sum() > 0
    # evaluation and no_grad leave the discriminator alone
    snapshot = [p.clone() for p in fv.discriminator.parameters()]
    fv.eval()
    fv(model, x)
    fv.train()
    with torch.no_grad():
        fv(model, x)
    assert all(
        torch.equal(p, q) for p, q in zip(fv.discriminator.parameters(), snapshot, strict=True)
    )


def test_factorvae_state_with_optimizer_round_trips_through_weights_only_load():
    model, x = _model(), _binary_data()
    a = _factor()
    for s in range(3):
        torch.manual_seed(s)
        a(model, x)
    state = _round_trip(a)
    assert "_extra_state" in state and state["_extra_state"]["optimizer"]["state"]
    b = _factor(lr=1e-2)
    b.load_state_dict(state)
    fresh = _factor()
    fresh.load_state_dict({k: v for k, v in state.items() if k != "_extra_state"}, strict=False)
    results = []
    for fv in (a, b, fresh):
        torch.manual_seed(10)
        out = fv(model, x)
        results.append(
            (out.loss.item(), [p.detach().clone() for p in fv.discriminator.parameters()])
        )
    assert results[0][0] == results[1][0]
    assert all(torch.equal(p, q) for p, q in zip(results[0][1], results[1][1], strict=True))
    # without the Adam moments the same step lands elsewhere: the round trip carried them
    assert not all(torch.equal(p, q) for p, q in zip(results[0][1], results[2][1], strict=True))


# --- PIWAE ---------------------------------------------------------------------------------


def test_piwae_gradients_are_iwae_for_the_decoder_and_miwae_for_the_encoder():
    model = _model(prior=LearnableGaussian(D_Z), dtype=torch.float64)
    with torch.no_grad():
        model.prior.loc.add_(0.3)
    x = _binary_data(5, dtype=torch.float64)

    def grads(objective):
        model.zero_grad()
        torch.manual_seed(7)
        out = objective(model, x)
        out.loss.backward()
        return out, {k: p.grad.clone() for k, p in model.named_parameters()}

    out_p, g_p = grads(PIWAE(m=3, k=4))
    out_i, g_i = grads(IWAE(k=12))
    out_m, g_m = grads(MIWAE(m=3, k=4))
    for name in g_p:
        ref = g_m if name.startswith("encoder") else g_i
        torch.testing.assert_close(g_p[name], ref[name], rtol=1e-10, atol=1e-12, msg=name)
    # the two references differ, so the routing is really tested
    assert not torch.allclose(g_i["encoder.0.weight"], g_m["encoder.0.weight"])
    assert not torch.allclose(g_i["decoder.0.weight"], g_m["decoder.0.weight"])
    torch.testing.assert_close(out_p.per_example["bound"], out_i.per_example["bound"])
    torch.testing.assert_close(out_p.per_example["miwae"], out_m.per_example["bound"])
    torch.testing.assert_close(out_p.loss, out_i.loss)


# --- MMD -----------------------------------------------------------------------------------


def _mmd_loops(x: np.ndarray, y: np.ndarray, kernel: str, sigma2: float, unbiased: bool) -> float:
    d = x.shape[1]

    def k(a, b):
        r = float(((a - b) ** 2).sum())
        return (
            math.exp(-r / (2 * sigma2))
            if kernel == "rbf"
            else 2 * d * sigma2 / (2 * d * sigma2 + r)
        )

    def mean_within(s):
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if not (unbiased and i == j)]
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return mean_within(x) + mean_within(y) - 2 * cross


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("bandwidth", [0.7, None], ids=["sigma=0.7", "default"])
def test_mmd_matches_explicit_double_sums(kernel, unbiased, bandwidth):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.2, size=(5, 3))
    sigma2 = bandwidth**2 if bandwidth else (3 / 2 if kernel == "rbf" else 1.0)
    got = VF.mmd(torch.tensor(x), torch.tensor(y), kernel, bandwidth, unbiased).item()
    assert got == pytest.approx(_mmd_loops(x, y, kernel, sigma2, unbiased), rel=1e-12)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_of_one_distribution_is_zero_in_expectation(kernel):
    torch.manual_seed(0)
    same = torch.stack([VF.mmd(torch.randn(20, 2), torch.randn(20, 2), kernel) for _ in range(400)])
    biased = torch.stack(
        [VF.mmd(torch.randn(20, 2), torch.randn(20, 2), kernel, unbiased=False) for _ in range(400)]
    )
    shifted = torch.stack(
        [VF.mmd(torch.randn(20, 2), torch.randn(20, 2) + 1, kernel) for _ in range(100)]
    )
    se = same.std() / 20
    assert abs(same.mean()) < 4 * se
    assert biased.mean() > 10 * se  # the V-statistic is biased upwards
    assert shifted.mean() > 10 * shifted.std() / 10


@pytest.mark.parametrize("which", ["infovae", "wae"])
def test_mmd_objectives_use_prior_samples_and_hand_weights(which):
    model, x = _model(), _binary_data()
    obj = InfoVAE(alpha=0.2, lambda_=50.0) if which == "infovae" else WAE(lambda_=10.0)
    torch.manual_seed(5)
    z = model(x).z.reshape(-1, D_Z).detach().numpy()
    pz = model.prior().sample((len(z),)).numpy()
    kernel, sigma2 = ("rbf", D_Z / 2) if which == "infovae" else ("imq", 1.0)
    mmd = _mmd_loops(z, pz, kernel, sigma2, unbiased=True)
    torch.manual_seed(5)
    out = obj(model, x)
    rec, kl = (out.per_example[k].detach().numpy() for k in ("rec", "kl"))
    if which == "infovae":
        expected = (rec + 0.8 * kl).mean() + 49.2 * mmd
    else:
        expected = rec.mean() + 10.0 * mmd
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out.per_example["mmd"].detach().numpy(), mmd, rtol=1e-5)


# --- running-variance Gaussian ---------------------------------------------------------------


def test_running_gaussian_variance_is_the_running_mse_and_log_prob_uses_it():
    lik = RunningGaussian(momentum=0.8)
    g = torch.Generator().manual_seed(0)
    v = 1.0
    for _ in range(3):
        params, x = torch.randn(4, 5, generator=g), 0.3 * torch.randn(4, 5, generator=g)
        lp = lik(params).log_prob(x)
        v = 0.8 * v + 0.2 * float(((x - params) ** 2).mean())
        assert lik.variance.item() == pytest.approx(v, rel=1e-6)
        expected = stats.norm.logpdf(x.numpy(), params.numpy(), math.sqrt(v)).sum(1)
        np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-5)
    lik.eval()
    lik(params).log_prob(x + 1)
    lik.train()
    with torch.no_grad():
        lik(params).log_prob(x + 1)
    assert lik.variance.item() == pytest.approx(v, rel=1e-6)


def test_running_gaussian_composes_with_the_elbo_and_is_saved_with_the_model():
    model = _model(likelihood=RunningGaussian(momentum=0.5))
    x = _binary_data(16)
    losses = _train(model, ELBO(), x, steps=30)
    assert losses[-5:].mean() < losses[:5].mean()
    assert "likelihood.variance" in model.state_dict()
    assert model.likelihood.variance.item() < 0.5  # tracks the shrinking MSE from 1


# --- every objective: finite, keyed, trains ----------------------------------------------------


def _train(
    model: VAE, objective, x: torch.Tensor, steps: int = 40, key: str = "loss"
) -> np.ndarray:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trace = []
    for step in range(steps):
        kw = {"step": step} if isinstance(objective, CapacityELBO) else {}
        out = objective(model, x, **kw)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        value = out.per_example[key].detach().mean().item()
        trace.append(-value if key == "bound" else value)
    return np.array(trace)


CASES = {
    "piwae": (lambda: PIWAE(m=2, k=3), {"miwae"}, "loss"),
    "capacity": (lambda: CapacityELBO(gamma=10.0, c_max=2.0, steps=0), {"capacity_gap"}, "loss"),
    "geco": (lambda: GECO(tolerance=4.0, lr=1e-2), {"constraint"}, "rec"),
    "betatc-mws": (lambda: BetaTCVAE(dataset_size=32), {"mi", "tc", "dwkl"}, "loss"),
    "betatc-mss": (
        lambda: BetaTCVAE(dataset_size=32, estimator="mss"),
        {"mi", "tc", "dwkl"},
        "loss",
    ),
    "factorvae": (lambda: _factor(), {"tc"}, "loss"),
    "dip-i": (lambda: DIPVAE(kind="i"), {"dip"}, "loss"),
    "dip-ii": (lambda: DIPVAE(kind="ii"), {"dip"}, "loss"),
    "infovae": (lambda: InfoVAE(lambda_=100.0), {"mmd"}, "loss"),
    "wae": (lambda: WAE(), {"mmd"}, "loss"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_objective_is_finite_keyed_and_trains(name):
    make, extra, key = CASES[name]
    model, x, objective = _model(), _binary_data(32), make()
    out = objective(model, x)
    assert {"bound", "rec", "kl", "loss"} | extra <= set(out.per_example)
    assert all(v.shape == (32,) for v in out.per_example.values())
    assert all(torch.isfinite(v).all() for v in out.per_example.values())
    assert all(v.dim() == 0 for v in out.metrics.values())
    trace = _train(model, objective, x, key=key)
    assert trace[-5:].mean() < trace[:5].mean(), trace


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GECO(tolerance=1.0, alpha=1.0), "alpha"),
        (lambda: GECO(tolerance=float("nan")), "tolerance"),
        (lambda: BetaTCVAE(dataset_size=1), "dataset_size"),
        (lambda: BetaTCVAE(dataset_size=10, estimator="msss"), "did you mean 'mss'"),
        (lambda: FactorVAE(0), "latent_dim"),
        (lambda: DIPVAE(kind="iii"), "kind"),
        (lambda: InfoVAE(alpha=2.0), "alpha"),
        (lambda: InfoVAE(alpha=0.0, lambda_=0.5), "alpha \\+ lambda_"),
        (lambda: WAE(kernel="gauss"), "kernel"),
        (lambda: PIWAE(m=0), "m must"),
        (lambda: CapacityELBO(steps=-1), "steps"),
        (lambda: CapacityELBO(gamma=-1.0), "gamma"),
        (lambda: RunningGaussian(momentum=1.0), "momentum"),
        (lambda: VF.mmd(torch.zeros(3, 2), torch.zeros(3, 4)), "same D"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_constructors_reject_nonsense(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- triplet and perceptual terms ------------------------------------------------------------


def test_triplet_indices_pick_same_and_other_labels():
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        pos, neg, valid = triplet_indices(y, generator=g)
        for i in range(6):
            assert y[neg[i]] != y[i]
            if valid[i]:
                assert pos[i] != i and y[pos[i]] == y[i]
        assert valid.tolist() == [True] * 5 + [False]  # label 2 has no positive


def _tiny_vae(d_in=6, d_z=2, seed=0):
    torch.manual_seed(seed)
    enc = torch.nn.Linear(d_in, 2 * d_z).double()
    dec = torch.nn.Linear(d_z, d_in).double()
    return VAE(enc, dec, prior=StandardNormal(d_z))


def test_triplet_term_matches_a_hand_computation():
    model = _tiny_vae()
    x = torch.bernoulli(torch.rand(4, 6, dtype=torch.float64))
    y = torch.tensor([0, 0, 1, 1])  # the positive of each anchor is unique
    obj = TripletELBO(weight=2.0, margin=0.5)
    out = obj(model, x, y=y)
    mu = model.encode(x).mean.detach().numpy()
    trip = out.per_example["triplet"].detach().numpy()
    for i in range(4):
        p = {0: 1, 1: 0, 2: 3, 3: 2}[i]
        d_ap = np.linalg.norm(mu[i] - mu[p] + 1e-6)
        options = [max(0.0, d_ap - np.linalg.norm(mu[i] - mu[n] + 1e-6) + 0.5) for n in (2, 3)]
        if i >= 2:
            options = [max(0.0, d_ap - np.linalg.norm(mu[i] - mu[n] + 1e-6) + 0.5) for n in (0, 1)]
        assert min(abs(trip[i] - o) for o in options) < 1e-9
    pe = out.per_example
    np.testing.assert_allclose(
        out.loss.item(), (pe["rec"] + pe["kl"] + 2.0 * pe["triplet"]).mean().item(), rtol=1e-12
    )
    with pytest.raises(ValueError, match="labels"):
        obj(model, x)


def test_perceptual_term_matches_a_hand_computation_and_keeps_features_frozen():
    model = _tiny_vae()
    torch.manual_seed(1)
    phi = torch.nn.Linear(6, 3).double()
    obj = PerceptualELBO(phi, weight=0.5)
    x = torch.bernoulli(torch.rand(5, 6, dtype=torch.float64))
    torch.manual_seed(2)
    out = obj(model, x)
    torch.manual_seed(2)
    z = model.encode(x).rsample((1,))[0]
    x_hat = torch.sigmoid(model.decoder(z))  # the Bernoulli mean E[x|z]
    want = (phi(x_hat) - phi(x)).square().sum(1)
    torch.testing.assert_close(out.per_example["perceptual"], want)
    out.loss.backward()
    assert all(p.grad is None for p in phi.parameters())  # frozen: no gradient, not trained
    assert model.decoder.weight.grad is not None


def test_feature_classifier_separates_the_classes():
    from vaekit.models.perceptual import feature_classifier

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    x = torch.rand(300, 20, generator=g) * 0.1
    x[torch.arange(300), y * 5] = 1.0  # the class lights one of three pixels
    phi = feature_classifier(x, y, hidden=16, epochs=20, batch_size=50)
    f = phi(x)
    assert f.shape == (300, 16) and not any(p.requires_grad for p in phi.parameters())
    means = torch.stack([f[y == c].mean(0) for c in range(3)])
    nearest = torch.cdist(f, means).argmin(1)
    assert (nearest == y).float().mean() > 0.95
