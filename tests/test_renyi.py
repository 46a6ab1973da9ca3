"""The variational Renyi bound against independent references.

References: log-weights turned into the bound by hand (NumPy/SciPy ``logsumexp``, mpmath near
alpha = 1), IWAE and the Monte Carlo ELBO on the same draws, and on a linear-Gaussian (PPCA)
model the exact log p(x) (SciPy) and the exact Renyi value
``L_alpha = log p(x) + 1/(1-alpha) log int q(z|x)^alpha p(z|x)^(1-alpha) dz`` by quadrature.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import integrate, stats
from scipy.special import logsumexp, softmax
from torch import nn

from vaekit import ELBO, IWAE, VAE
from vaekit.cli import main
from vaekit.likelihoods import Bernoulli, Gaussian
from vaekit.objectives import OBJECTIVES, Renyi, log_weights
from vaekit.objectives.renyi import renyi_bound
from vaekit.priors import StandardNormal
from vaekit.schedules import LinearWarmup

SIGMA = 0.5
K = 6


def _bernoulli_model(latent: int = 3, d: int = 12) -> VAE:
    torch.manual_seed(0)
    enc = nn.Linear(d, 2 * latent)
    dec = nn.Sequential(nn.Linear(latent, 16), nn.Tanh(), nn.Linear(16, d))
    return VAE(enc, dec, prior=StandardNormal(latent), likelihood=Bernoulli())


def _by_hand(log_w: np.ndarray, alpha: float) -> np.ndarray:
    """``1/(1-alpha) log (1/K) sum_k w_k^(1-alpha)`` in float64 SciPy; alpha = 1: mean log w."""
    if alpha == 1:
        return log_w.mean(0)
    s = 1.0 - alpha
    return (logsumexp(s * log_w, axis=0) - math.log(log_w.shape[0])) / s


def _draw(objective, model, x, seed=5):
    torch.manual_seed(seed)
    return objective(model, x)


def _log_w(model, x, k=K, seed=5) -> np.ndarray:
    torch.manual_seed(seed)
    return log_weights(model, x, samples=k).log_w.detach().double().numpy()


# -- 1. special cases on the same draws ------------------------------------------------------


@pytest.mark.parametrize("alpha", [-3.0, -0.5, 0.0, 0.3, 0.5, 0.9, 1 - 1e-6, 1.0, 1 + 1e-6, 2.5])
def test_bound_equals_the_log_weights_by_hand(alpha):
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(9, 12))
    log_w = _log_w(model, x)
    out = _draw(Renyi(alpha=alpha, k=K), model, x)
    np.testing.assert_allclose(
        out.per_example["renyi"].detach().numpy(), _by_hand(log_w, alpha), rtol=1e-5, atol=1e-5
    )
    # the loss minimised is -L; rec and kl are Monte Carlo over the same K draws
    torch.testing.assert_close(out.per_example["loss"], -out.per_example["renyi"])
    np.testing.assert_allclose(
        out.per_example["elbo"].detach().numpy(), log_w.mean(0), rtol=1e-5, atol=1e-5
    )
    # bound: L itself for alpha >= 0; for alpha < 0 (not a bound) IWAE_K of the same draws
    iwae = _by_hand(log_w, 0.0)
    expected = _by_hand(log_w, alpha) if alpha >= 0 else iwae
    np.testing.assert_allclose(
        out.per_example["bound"].detach().numpy(), expected, rtol=1e-5, atol=1e-5
    )
    assert (
        out.per_example["renyi"].detach().numpy()
        >= out.per_example["bound"].detach().numpy() - 1e-5
    ).all()
    assert out.metrics["alpha"].item() == pytest.approx(alpha)
    assert out.metrics["renyi"].item() == pytest.approx(_by_hand(log_w, alpha).mean(), abs=1e-4)


def test_alpha_0_is_iwae_and_alpha_1_is_the_k_sample_elbo_on_the_same_draws():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    iwae = _draw(IWAE(k=K), model, x).per_example
    elbo = _draw(ELBO(kl="mc", samples=K), model, x).per_example
    r0 = _draw(Renyi(alpha=0.0, k=K), model, x).per_example
    for key in ("bound", "rec", "kl", "elbo", "loss"):
        torch.testing.assert_close(r0[key], iwae[key])
    for alpha in (1.0, 1 - 1e-6):
        r1 = _draw(Renyi(alpha=alpha, k=K), model, x).per_example
        torch.testing.assert_close(r1["bound"], elbo["bound"], rtol=0, atol=1e-4)
        torch.testing.assert_close(r1["rec"], elbo["rec"])
        torch.testing.assert_close(r1["kl"], elbo["kl"])


def test_gradients_at_alpha_0_and_1_are_iwae_and_elbo_gradients():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    params = list(model.parameters())

    def grads(objective):
        torch.manual_seed(7)
        return torch.cat(
            [g.flatten() for g in torch.autograd.grad(objective(model, x).loss, params)]
        )

    torch.testing.assert_close(grads(Renyi(alpha=0.0, k=K)), grads(IWAE(k=K)))
    elbo = grads(ELBO(kl="mc", samples=K))
    torch.testing.assert_close(grads(Renyi(alpha=1.0, k=K)), elbo)
    torch.testing.assert_close(grads(Renyi(alpha=1 - 1e-7, k=K)), elbo, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alpha", [-40.0, -0.5, 0.0, 0.5, 1 - 1e-7, 1.0, 1 + 1e-7, 3.0, 40.0])
def test_gradient_wrt_log_weights_is_the_softmax_and_extreme_weights_stay_finite(alpha):
    # d L / d log w_k = softmax_k((1 - alpha) log w), also for log-weights spread over 1e4 nats
    g = np.random.default_rng(0)
    log_w64 = np.concatenate([g.normal(-5e3, 3e3, (7, 3)), g.normal(-20, 1, (7, 2))], 1)
    log_w = torch.tensor(log_w64, dtype=torch.float32, requires_grad=True)
    value = renyi_bound(log_w, alpha)
    (grad,) = torch.autograd.grad(value.sum(), log_w)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    ref = _by_hand(log_w.detach().double().numpy(), alpha)
    np.testing.assert_allclose(value.detach().numpy(), ref, rtol=1e-5)
    expected = softmax((1.0 - alpha) * log_w.detach().double().numpy(), axis=0)
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_alpha_1_matches_a_50_digit_reference(dtype):
    # the naive (1/s) log mean exp(s log w) loses ~eps/s; the bound keeps a few ulps
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    g = np.random.default_rng(1)
    log_w = torch.tensor(g.normal(-300, 20, (50, 3)), dtype=dtype)
    eps = torch.finfo(dtype).eps
    for s in (1e-3, 1e-6, 1e-9, 1e-12, -1e-9, -1e-6):
        got = renyi_bound(log_w, 1.0 - s).numpy()
        for b in range(3):
            col = [mpmath.mpf(float(v)) for v in log_w[:, b]]
            s_ = 1 - mpmath.mpf(1.0 - s)  # the order the objective receives, exactly
            ref = mpmath.log(mpmath.fsum(mpmath.exp(s_ * v) for v in col) / len(col)) / s_
            assert abs(got[b] - float(ref)) <= 8 * eps * 300, (s, b, got[b] - float(ref))


# -- 2. the linear-Gaussian model: exact log p(x) and exact Renyi values ---------------------


def _ppca(d: int = 5, latent: int = 2, seed: int = 0):
    """PPCA x = W z + b + N(0, sigma^2 I), orthogonal W columns, an inexact linear encoder.

    The exact posterior N(M^-1 W^T (x - b), sigma^2 M^-1), M = W^T W + sigma^2 I, is diagonal;
    the encoder's q(z|x) is shifted and 2.2x wider, so w = p(x, z)/q(z|x) is bounded.
    Returns the float64 VAE, 16 draws x of the model, exact log p(x) and the function
    alpha -> exact L_alpha(x) per example.
    """
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(d, latent)))
    w = u * np.array([2.0, 0.7, 1.3, 0.4][:latent])
    b = rng.normal(size=d)
    m_diag = (w**2).sum(0) + SIGMA**2
    enc = nn.Linear(d, 2 * latent, dtype=torch.float64)
    dec = nn.Linear(latent, d, dtype=torch.float64)
    with torch.no_grad():
        a = (w / m_diag).T + 0.3 * rng.normal(size=(latent, d))
        enc.weight.copy_(torch.tensor(np.vstack([a, np.zeros((latent, d))])))
        enc.bias.copy_(torch.tensor(np.concatenate([-a @ b, np.log(SIGMA**2 / m_diag) + 0.8])))
        dec.weight.copy_(torch.tensor(w))
        dec.bias.copy_(torch.tensor(b))
    model = VAE(enc, dec, prior=StandardNormal(latent), likelihood=Gaussian(scale=SIGMA)).double()
    marginal = stats.multivariate_normal(mean=b, cov=w @ w.T + SIGMA**2 * np.eye(d))
    x = torch.tensor(marginal.rvs(size=16, random_state=seed))
    log_px = marginal.logpdf(x.numpy())

    mp = (x.numpy() - b) @ w / m_diag  # posterior mean [16, latent]
    vp = SIGMA**2 / m_diag  # posterior variance [latent]
    with torch.no_grad():
        h = enc(x).numpy()
    mq, vq = h[:, :latent], np.exp(h[:, latent:])

    def exact(alpha: float) -> np.ndarray:
        if alpha == 1:  # the ELBO: log p(x) - KL(q || p(z|x))
            kl = 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1).sum(1)
            return log_px - kl
        out = np.zeros(len(x))
        for i in range(len(x)):
            for j in range(latent):
                gauss = (mq[i, j], vq[i, j], mp[i, j], vp[j])
                sd = math.sqrt(max(vq[i, j], vp[j]))
                lo, hi = min(mq[i, j], mp[i, j]) - 30 * sd, max(mq[i, j], mp[i, j]) + 30 * sd
                val, _ = integrate.quad(
                    _tilted,
                    lo,
                    hi,
                    args=(alpha, *gauss),
                    points=[mq[i, j], mp[i, j]],
                    epsabs=0,
                    epsrel=1e-12,
                    limit=200,
                )
                out[i] += math.log(val)
        return log_px + out / (1 - alpha)

    return model, x, log_px, exact


def _tilted(z, alpha, mq, vq, mp, vp):
    """``N(z; mq, vq)^alpha N(z; mp, vp)^(1 - alpha)``, one latent dimension."""
    log_q = -0.5 * (math.log(2 * math.pi * vq) + (z - mq) ** 2 / vq)
    log_p = -0.5 * (math.log(2 * math.pi * vp) + (z - mp) ** 2 / vp)
    return math.exp(alpha * log_q + (1 - alpha) * log_p)


ALPHAS = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_renyi_on_ppca_is_ordered_in_alpha_bounded_by_log_px_and_converges_to_the_exact_value():
    model, x, log_px, exact = _ppca()
    truth = log_px.mean()
    limit = {a: exact(a).mean() for a in ALPHAS}
    # the reference itself: L_0 = log p(x), L_alpha decreasing, L_(-0.5) above log p(x)
    assert limit[0.0] == pytest.approx(truth, abs=1e-8)
    assert all(limit[a] > limit[b] + 0.1 for a, b in zip(ALPHAS, ALPHAS[1:], strict=False))
    assert limit[-0.5] > truth + 0.1

    reps = 200
    xr = x.repeat(reps, 1)
    means, ses = {}, {}
    torch.manual_seed(0)
    with torch.no_grad():
        for a in ALPHAS:  # independent draws per alpha
            v = Renyi(alpha=a, k=8)(model, xr).per_example["renyi"].numpy().reshape(reps, -1)
            means[a], ses[a] = v.mean(), v.mean(1).std(ddof=1) / math.sqrt(reps)
    for a, b in zip(ALPHAS, ALPHAS[1:], strict=False):
        assert means[a] >= means[b] - 3 * math.hypot(ses[a], ses[b]), (a, b, means)
    for a in ALPHAS:
        # E[L_alpha,K] <= L_alpha for alpha <= 1 (Jensen), with equality at alpha = 1
        assert means[a] <= limit[a] + 3 * ses[a], (a, means[a], limit[a])
        if 0 <= a <= 1:
            assert means[a] <= truth + 3 * ses[a], (a, means[a], truth)
    assert means[1.0] == pytest.approx(limit[1.0], abs=4 * ses[1.0])

    # on the same draws L_alpha,K is a power mean of the weights: non-increasing, every example
    same = np.stack(
        [_draw(Renyi(alpha=a, k=8), model, x).per_example["renyi"].detach().numpy() for a in ALPHAS]
    )
    assert (np.diff(same, axis=0) <= 1e-12).all()

    # large K: every alpha approaches its exact L_alpha; alpha = 0 approaches log p(x)
    with torch.no_grad():
        draws = [log_weights(model, x, samples=5000).log_w for _ in range(3)]
    big = {a: np.mean([renyi_bound(lw, a).numpy() for lw in draws], 0) for a in ALPHAS}
    gap = truth - limit[1.0]  # the ELBO's gap, ~1.9 nats
    assert abs(big[0.0].mean() - truth) < min(0.05, 0.05 * gap)
    for a in ALPHAS:
        assert big[a].mean() == pytest.approx(limit[a], abs=0.05), a
    # alpha < 0 is no lower bound: at large K it exceeds log p(x); its `bound` is IWAE_K
    assert big[-0.5].mean() > truth + 0.2
    torch.manual_seed(1)
    with torch.no_grad():
        out = Renyi(alpha=-0.5, k=5000)(model, x).per_example
    assert out["bound"].mean().item() <= truth + 0.05 < out["renyi"].mean().item()


def test_k1_gives_log_w_for_every_alpha():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    log_w = _log_w(model, x, k=1)[0]
    for alpha in (-2.0, 0.0, 0.5, 1.0, 4.0):
        got = _draw(Renyi(alpha=alpha, k=1), model, x).per_example["renyi"].detach().numpy()
        np.testing.assert_allclose(got, log_w, rtol=1e-5, atol=1e-5)


def test_alpha_schedule_is_evaluated_at_the_step():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    objective = Renyi(alpha=LinearWarmup(0.8, 10), k=K)
    log_w = _log_w(model, x)
    for step, alpha in [(0, 0.0), (5, 0.4), (None, 0.8)]:
        torch.manual_seed(5)
        out = objective(model, x, step=step)
        assert out.metrics["alpha"].item() == pytest.approx(alpha)
        np.testing.assert_allclose(
            out.per_example["renyi"].detach().numpy(), _by_hand(log_w, alpha), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reduction_acts_on_the_batch_axis(reduction):
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(8, 12))
    out = _draw(Renyi(alpha=0.5, k=K, reduction=reduction), model, x)
    per = out.per_example["loss"]
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(out.loss, expected)


# -- 3. the command line ---------------------------------------------------------------------


@pytest.fixture
def npz(tmp_path):
    g = np.random.default_rng(0)
    protos = g.random((4, 16))

    def make(m):
        images = np.clip(protos[g.integers(0, 4, m)] + 0.1 * g.normal(size=(m, 16)), 0, 1)
        return images.astype(np.float32).reshape(-1, 4, 4)

    path = tmp_path / "tiny.npz"
    np.savez(path, train=make(60), valid=make(20), test=make(20))
    return path


def test_cli_trains_renyi(npz, tmp_path):
    out = tmp_path / "run"
    flags = [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--network", "mlp", "--hidden", "16", "--latent-dim", "2", "--epochs", "1",
        "--batch-size", "20", "--eval-samples", "4", "--no-tensorboard", "--quiet", "--no-eval",
        "--objective", "renyi", "--alpha", "0.5", "--k", "3", "--out", str(out),
    ]  # fmt: skip
    assert main(flags) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(math.isfinite(r["loss"]) for r in train_rows)
    for r in train_rows:
        assert math.isfinite(r["renyi"]) and r["alpha"] == pytest.approx(0.5)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["objective"] == {"objective": "renyi", "alpha": 0.5, "k": 3}


# -- 4. bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must"),
        ({"k": 2.5}, "k must"),
        ({"k": True}, "k must"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),
        ({"alpha": -float("inf")}, "alpha"),
        ({"alpha": "0.5"}, "alpha"),
        ({"reduction": "avg"}, "reduction"),
    ],
    ids=["k0", "k2.5", "kbool", "nan", "inf", "-inf", "str", "reduction"],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Renyi(**kwargs)


@pytest.mark.parametrize(
    "given, match",
    [({"k": 0}, r"\bk\b"), ({"k": 2.5}, r"\bk\b"), ({"alpha": float("nan")}, "alpha")],
)
def test_config_rejects_bad_arguments(given, match):
    with pytest.raises(ValueError, match=match):
        OBJECTIVES["renyi"].resolve(given)


def test_a_schedule_giving_a_non_finite_alpha_is_an_error():
    model = _bernoulli_model()
    x = torch.bernoulli(torch.rand(4, 12))
    with pytest.raises(ValueError, match="alpha"):
        Renyi(alpha=lambda step: float("nan"), k=2)(model, x, step=0)


def test_registry_entry():
    spec = OBJECTIVES["renyi"]
    assert spec.cls is Renyi
    assert spec.defaults() == {"alpha": 0.5, "k": 1}
    assert spec.param("k").type is int
    assert Renyi.weights == ("alpha",)
