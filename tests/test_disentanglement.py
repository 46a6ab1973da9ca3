"""Known-answer tests of vaekit.metrics.disentanglement.

References: ground-truth factors as the representation (every score near its maximum, with
exact values where they can be derived), pure noise (every score near chance), an entangled
rotation of the factors (MIG and DCI clearly lower), the plug-in mutual information against
scipy, and a duplicated code whose DCI completeness has a closed form.
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from vaekit.data import DSprites
from vaekit.metrics import (
    DCIScores,
    beta_vae_score,
    dci,
    discretize,
    evaluate_disentanglement,
    factor_vae_score,
    image_representation,
    mig,
    mutual_info_matrix,
    sap,
)

SIZES = (3, 4, 5, 6)
K = len(SIZES)
PERM = [2, 0, 3, 1]  # code j holds factor PERM[j]
SCALE = np.array([0.5, 3.0, -2.0, 1.5])


class TinyFactors:
    """A factors-only data set with the DSprites factor API and small, independent factors."""

    factor_sizes = SIZES

    def sample_factors(self, n, generator=None):
        cols = [torch.randint(s, (n,), generator=generator) for s in self.factor_sizes]
        return torch.stack(cols, 1)

    def sample_fixed_factor(self, n, factor, generator=None):
        f = self.sample_factors(n, generator)
        f[:, factor] = torch.randint(self.factor_sizes[factor], (1,), generator=generator)
        return f


def truth(f):
    """Ground truth as the code: the factors, columns permuted, scaled and shifted."""
    return f[:, PERM].double().numpy() * SCALE + 1.0


def standardised(f, sizes=SIZES):
    s = np.asarray(sizes, dtype=np.float64)
    return (f.double().numpy() - (s - 1) / 2) / np.sqrt((s**2 - 1) / 12)


ROTATION = np.linalg.qr(np.random.default_rng(3).normal(size=(K, K)))[0]


def rotated(f):
    """An entangled code: a random orthogonal mixing of the standardised factors."""
    return standardised(f) @ ROTATION


def noise_representation(d=K, seed=0):
    rng = np.random.default_rng(seed)
    return lambda f: rng.normal(size=(len(f), d))


def draw(n, seed=0, dataset=None):
    dataset = dataset or TinyFactors()
    return dataset.sample_factors(n, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def data():
    return draw(3000, seed=1), draw(1500, seed=2)


# -- mutual information ---------------------------------------------------------------------


def test_mutual_info_matrix_matches_double_sum_and_scipy():
    rng = np.random.default_rng(0)
    n, bins = 300, 5
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], 1)
    codes = np.stack([factors[:, 0] + rng.normal(0, 0.5, n), rng.normal(size=n)], 1)
    got = mutual_info_matrix(codes, factors, bins=bins)
    binned = discretize(codes, bins)
    assert got.shape == (2, 2)
    for j in range(2):
        for k in range(2):
            a, b = binned[:, j], factors[:, k]
            # direct double sum over the empirical joint distribution
            direct = 0.0
            for x in np.unique(a):
                for y in np.unique(b):
                    p_xy = np.mean((a == x) & (b == y))
                    if p_xy > 0:
                        direct += p_xy * math.log(p_xy / (np.mean(a == x) * np.mean(b == y)))
            # I = H(a) + H(b) - H(a, b), entropies by scipy (nats)
            _, ca = np.unique(a, return_counts=True)
            _, cb = np.unique(b, return_counts=True)
            _, cab = np.unique(a * 10 + b, return_counts=True)
            via_scipy = scipy.stats.entropy(ca) + scipy.stats.entropy(cb) - scipy.stats.entropy(cab)
            assert got[j, k] == pytest.approx(direct, abs=1e-12)
            assert got[j, k] == pytest.approx(via_scipy, abs=1e-12)
    assert got[0, 0] > 0.3 > got[1, 0]


def test_discretize_matches_numpy_histogram_edges():
    # disentanglement_lib: np.digitize(z, np.histogram(z, bins)[1][:-1]) - 1
    z = np.random.default_rng(1).normal(size=(500, 3))
    ref = np.stack(
        [np.digitize(z[:, j], np.histogram(z[:, j], 20)[1][:-1]) - 1 for j in range(3)], 1
    )
    np.testing.assert_array_equal(discretize(z, 20), ref)
    assert (discretize(np.ones((4, 2)), 20) == 0).all()


# -- MIG ----------------------------------------------------------------------------------


def expected_mig(sizes, bins=20):
    """MIG of the factors themselves in the limit of many samples (other codes: MI 0)."""
    gaps = []
    for s in sizes:
        b = np.clip(np.floor(np.arange(s) / (s - 1) * bins), 0, bins - 1).astype(int)
        p = np.bincount(b) / s
        p = p[p > 0]
        gaps.append(-(p * np.log(p)).sum() / math.log(s))
    return float(np.mean(gaps))


def test_mig_ground_truth_noise_rotation(data):
    (f, _) = data
    gt = mig(truth(f), f)
    assert expected_mig(SIZES) == 1.0  # every class in its own bin
    assert 0.95 < gt <= 1.0
    assert mig(noise_representation()(f), f) < 0.05
    assert mig(rotated(f), f) < gt - 0.4


def test_mig_of_factors_with_more_classes_than_bins():
    # 40 classes in 20 bins: a perfect code loses log 2 nats of the factor's log 40
    f = draw(4000, dataset=DSprites())
    assert expected_mig([40], 20) == pytest.approx(math.log(20) / math.log(40))
    assert mig(f.double(), f) == pytest.approx(expected_mig(DSprites.factor_sizes), abs=0.03)


# -- DCI ----------------------------------------------------------------------------------


def test_dci_ground_truth(data):
    (ftr, fte) = data
    out = dci(truth(ftr), ftr, truth(fte), fte, predictor="logistic")
    assert isinstance(out, DCIScores)
    assert out.disentanglement > 0.9 and out.completeness > 0.9
    assert out.informativeness > 0.95
    np.testing.assert_allclose(out.importance.sum(0), 1.0)
    # code j is read for factor PERM[j]
    np.testing.assert_array_equal(out.importance.argmax(0), np.argsort(PERM))


def test_dci_noise_and_rotation(data):
    (ftr, fte) = data
    gt = dci(truth(ftr), ftr, truth(fte), fte, predictor="logistic")
    noise = noise_representation()
    out = dci(noise(ftr), ftr, noise(fte), fte, predictor="logistic")
    assert out.disentanglement < 0.2 and out.completeness < 0.2
    assert out.informativeness < 0.4  # chance: mean of 1 / C_k = 0.24
    rot = dci(rotated(ftr), ftr, rotated(fte), fte, predictor="logistic")
    assert rot.disentanglement < gt.disentanglement - 0.4
    assert rot.completeness < gt.completeness - 0.4


def test_dci_duplicated_code_has_known_completeness(data):
    # codes (v0, v0, v1, v2): the L2 fit splits factor 0 evenly over its two identical codes,
    # so C_0 = 1 - log_4(2) = 1/2 and C = (1/2 + 1 + 1) / 3; each code still serves one factor
    (ftr, fte) = data

    def rep(f):
        return f[:, [0, 0, 1, 2]].double().numpy()

    out = dci(rep(ftr), ftr[:, :3], rep(fte), fte[:, :3], predictor="logistic")
    r = out.importance
    np.testing.assert_allclose(r[0, 0], r[1, 0], rtol=1e-9)
    assert out.completeness == pytest.approx(2.5 / 3, abs=0.02)
    assert out.disentanglement > 0.95
    # the aggregation, recomputed with scipy from the returned importances (columns sum to 1)
    c_k = 1 - scipy.stats.entropy(r, base=4, axis=0)
    assert out.completeness == pytest.approx(c_k.mean(), abs=1e-9)
    d_j = 1 - scipy.stats.entropy(r.T, base=3, axis=0)
    assert out.disentanglement == pytest.approx((d_j * r.sum(1)).sum() / r.sum(), abs=1e-9)


# -- SAP ------------------------------------------------------------------------------------


def test_sap_ground_truth_noise_rotation(data):
    (ftr, fte) = data
    gt = sap(truth(ftr), ftr, truth(fte), fte, form="nearest_mean")
    # best code exact, the second best at chance 1 / C_k (up to sampling noise)
    chance_gap = np.mean([1 - 1 / s for s in SIZES])
    assert chance_gap - 0.05 < gt <= 1.0
    noise = noise_representation()
    assert sap(noise(ftr), ftr, noise(fte), fte, form="nearest_mean") < 0.05
    assert sap(rotated(ftr), ftr, rotated(fte), fte, form="nearest_mean") < gt - 0.3


# -- interventional scores ----------------------------------------------------------------


SMALL = dict(n_train=300, n_eval=200)


def test_factor_vae_and_beta_vae_ground_truth():
    ds = TinyFactors()
    assert factor_vae_score(truth, ds, n_variance=2000, **SMALL) == 1.0
    assert beta_vae_score(truth, ds, **SMALL) == 1.0


def test_factor_vae_and_beta_vae_noise_near_chance():
    ds = TinyFactors()  # chance 1/4
    assert factor_vae_score(noise_representation(6), ds, n_variance=2000, **SMALL) < 0.4
    assert beta_vae_score(noise_representation(6), ds, **SMALL) < 0.4


def test_factor_vae_prunes_collapsed_dimensions():
    ds = TinyFactors()

    def with_dead(f):  # one collapsed unit (constant) and one with std 0.01 < 0.05
        z = truth(f)
        return np.concatenate([z, np.full((len(f), 1), 3.0), 0.01 * z[:, :1]], 1)

    # unpruned, the dead units would win every vote: variance ratio 0/0 or tiny noise
    assert factor_vae_score(with_dead, ds, n_variance=2000, **SMALL) == 1.0
    assert factor_vae_score(lambda f: np.zeros((len(f), 3)), ds, **SMALL) == 0.0


# -- all at once, with DSprites -------------------------------------------------------------


def test_evaluate_disentanglement_dsprites_ground_truth():
    ds = DSprites()
    perm = [3, 1, 4, 0, 2]
    # the boosted trees of DCI on 400 draws (113 classes: one tree per class and stage)
    represent = lambda f: 2.0 * f[:, perm].double()  # noqa: E731
    scores = evaluate_disentanglement(represent, ds, n=4000, n_dci=400, fast_variants=True)
    assert set(scores) == {
        "mig",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness",
        "dci_informativeness_train",
        "sap",
        "modularity",
        "explicitness_train",
        "explicitness_test",
        "factor_vae",
        "beta_vae",
        "fast_dci_logistic_disentanglement",
        "fast_dci_logistic_completeness",
        "fast_dci_logistic_informativeness",
        "fast_sap_nearest_mean",
    }
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in scores.values())
    assert scores["mig"] == pytest.approx(expected_mig(ds.factor_sizes), abs=0.03)
    # the fast variants (logistic DCI, nearest-mean SAP) as before they were renamed
    assert scores["fast_dci_logistic_disentanglement"] > 0.9
    assert scores["fast_dci_logistic_completeness"] > 0.9
    assert scores["fast_dci_logistic_informativeness"] > 0.9
    assert scores["fast_sap_nearest_mean"] > 0.8
    assert scores["factor_vae"] == 1.0 and scores["beta_vae"] == 1.0
    # the reference forms: trees read each factor off its own code
    assert scores["dci_disentanglement"] > 0.9 and scores["dci_completeness"] > 0.9
    assert scores["explicitness_test"] > 0.95 and scores["modularity"] > 0.9


def test_evaluate_disentanglement_noise_and_rotation_tiny():
    ds = TinyFactors()
    small = dict(n=2000, n_dci=300, fast_variants=True)
    gt = evaluate_disentanglement(truth, ds, **small)
    noise = evaluate_disentanglement(noise_representation(), ds, **small)
    rot = evaluate_disentanglement(rotated, ds, **small)
    assert noise["mig"] < 0.05 and noise["fast_dci_logistic_disentanglement"] < 0.2
    assert noise["fast_sap_nearest_mean"] < 0.05
    assert noise["factor_vae"] < 0.4 and noise["beta_vae"] < 0.4
    assert rot["mig"] < gt["mig"] - 0.4
    assert rot["fast_dci_logistic_disentanglement"] < gt["fast_dci_logistic_disentanglement"] - 0.4
    # a rotation keeps all the information: a linear read-out still finds the factors
    assert rot["fast_dci_logistic_informativeness"] > 0.6
    # the reference forms: noise near 0 / chance, the rotation below the ground truth
    assert noise["sap"] < 0.05 and noise["dci_disentanglement"] < 0.2
    assert abs(noise["explicitness_test"] - 0.5) < 0.1
    assert rot["dci_disentanglement"] < gt["dci_disentanglement"] - 0.3


def test_evaluate_disentanglement_is_deterministic():
    ds = TinyFactors()
    a = evaluate_disentanglement(rotated, ds, n=800, seed=5, n_dci=200)
    b = evaluate_disentanglement(rotated, ds, n=800, seed=5, n_dci=200)
    c = evaluate_disentanglement(rotated, ds, n=800, seed=6, n_dci=200)
    assert a == b
    assert a != c


def test_image_representation_renders_dsprites():
    ds = DSprites()
    seen = {}

    def encode(x):
        seen["shape"], seen["grad"] = tuple(x.shape), torch.is_grad_enabled()
        return x.flatten(1).sum(1, keepdim=True).repeat(1, 2)  # pixels on

    rep = image_representation(encode, ds)
    f = ds.sample_factors(8, torch.Generator().manual_seed(0))
    z = rep(f)
    assert seen == {"shape": (8, 1, 64, 64), "grad": False}
    assert z.shape == (8, 2) and bool((z > 0).all())


# -- validation ------------------------------------------------------------------------------


def _z(n=20, d=3):
    return np.random.default_rng(0).normal(size=(n, d))


def _f(n=20, k=2):
    return np.random.default_rng(1).integers(0, 3, size=(n, k))


@pytest.mark.parametrize(
    "call, words",
    [
        pytest.param(lambda: mig(_z(20), _f(19)), ["factors", "20 rows", "received 19"], id="rows"),
        pytest.param(lambda: mig(_z()[:, 0], _f()), ["codes", "[N, D]", "(20,)"], id="1d-codes"),
        pytest.param(
            lambda: mig(_z(1), _f(1)), ["codes", "at least 2", "received 1"], id="one-row"
        ),
        pytest.param(lambda: mig(_z(d=1), _f()), ["codes", "2 dimensions", "D=1"], id="one-dim"),
        pytest.param(
            lambda: mig(np.where(_z() > 1, np.nan, _z()), _f()),
            ["codes", "finite", "NaN"],
            id="nan",
        ),
        pytest.param(
            lambda: mig(_z(), np.zeros((20, 2), int)), ["factors column 0", "constant"], id="const"
        ),
        pytest.param(
            lambda: mig(_z(), _z(20, 2)), ["factors column 0", "discrete"], id="continuous"
        ),
        pytest.param(lambda: mig(_z(), _f(), bins=1), ["bins", ">= 2", "received 1"], id="bins"),
        pytest.param(
            lambda: dci(_z(), _f(), _z(10, 4), _f(10)),
            ["codes_test", "D=3", "received 4"],
            id="dci-d",
        ),
        pytest.param(
            lambda: dci(_z(), _f(), _z(10), _f(10, 3)),
            ["factors_test", "K=2", "received 3"],
            id="dci-k",
        ),
        pytest.param(
            lambda: dci(_z(), _f(k=1), _z(10), _f(10, 1)), ["factors_train", "K=1"], id="dci-1"
        ),
        pytest.param(
            lambda: sap(_z(), _f(), _z(10), _f(9)),
            ["factors_test", "10 rows", "received 9"],
            id="sap",
        ),
        pytest.param(
            lambda: factor_vae_score(truth, object()), ["dataset", "sample_factors"], id="no-api"
        ),
        pytest.param(
            lambda: factor_vae_score(truth, TinyFactors(), batch_size=1),
            ["batch_size", ">= 2", "received 1"],
            id="batch",
        ),
        pytest.param(
            lambda: beta_vae_score(lambda f: truth(f)[:-1], TinyFactors()),
            ["represent(factors)", "[n, D]", "received shape"],
            id="represent-shape",
        ),
        pytest.param(
            lambda: factor_vae_score(lambda f: truth(f) * np.nan, TinyFactors()),
            ["represent(factors)", "finite", "NaN"],
            id="represent-nan",
        ),
        pytest.param(
            lambda: evaluate_disentanglement(truth, TinyFactors(), n=10),
            ["n", ">= 40", "received 10"],
            id="n",
        ),
    ],
)
def test_bad_input_names_argument_expected_and_received(call, words):
    with pytest.raises(ValueError) as err:
        call()
    for w in words:
        assert w in str(err.value)


def test_evaluate_disentanglement_options():
    ds = TinyFactors()
    with pytest.raises(ValueError, match="n_dci must be at most n=100; received 200"):
        evaluate_disentanglement(truth, ds, n=100, n_dci=200)
    with pytest.raises(ValueError, match="n_dci must be an integer >= 2; received 1"):
        evaluate_disentanglement(truth, ds, n=100, n_dci=1)
    scores = evaluate_disentanglement(truth, ds, n=400, n_dci=100, interventional=False)
    assert "factor_vae" not in scores and "beta_vae" not in scores
    assert not any(k.startswith("fast_") for k in scores)  # only when asked for
    assert scores["mig"] > 0.9 and scores["explicitness_test"] > 0.95
