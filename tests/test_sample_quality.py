"""Fréchet distance and label entropies against closed forms and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats

from vaekit.metrics.sample_quality import (
    feature_statistics,
    frechet_distance,
    label_entropies,
    sample_quality,
)


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt a - sqrt b)^2
    g = np.random.default_rng(0)
    d = 6
    q = _rotation(d, 1)
    a, b = g.uniform(0.1, 3, d), g.uniform(0.1, 3, d)
    mu1, mu2 = g.normal(size=d), g.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_general_covariances_matches_the_symmetric_form():
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): the symmetric form, each root by sqrtm
    g = np.random.default_rng(2)
    d = 5
    m1, m2 = g.normal(size=(d, d)), g.normal(size=(d, d))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)
    mu1, mu2 = g.normal(size=d), g.normal(size=d)
    r1 = np.real(linalg.sqrtm(s1))
    cross = np.trace(np.real(linalg.sqrtm(r1 @ s2 @ r1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_one_dimension():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2)


def test_frechet_distance_of_feature_statistics_converges_to_the_population_value():
    g = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = 2.0 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
    # population: ||1||^2 * d + d (2 - 1)^2 = 3 + 3
    fd = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert fd == pytest.approx(6.0, abs=0.1)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(2, 2\); received \(3, 3\)"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.zeros(1, 4))


def test_label_entropies_match_scipy():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    got = label_entropies(logits)
    assert got["mean_entropy"] == pytest.approx(np.mean(stats.entropy(p, axis=1)), rel=1e-10)
    assert got["marginal_entropy"] == pytest.approx(stats.entropy(p.mean(0)), rel=1e-10)
    # one-hot, all classes equally often: 0 per sample, log C for the marginal
    onehot = torch.eye(4).repeat(3, 1) * 1e4
    got = label_entropies(onehot)
    assert got["mean_entropy"] == pytest.approx(0, abs=1e-12)
    assert got["marginal_entropy"] == pytest.approx(math.log(4))


def test_sample_quality_uses_the_classifier_features_and_head():
    features = torch.nn.Identity()
    head = torch.nn.Linear(2, 3)
    clf = torch.nn.Sequential(features, head)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 2, generator=g)
    b = torch.randn(4000, 2, generator=g) + torch.tensor([3.0, 0.0])
    got = sample_quality(clf, a, b)
    assert got["frechet_distance"] == pytest.approx(9.0, abs=0.4)
    assert got["max_entropy"] == pytest.approx(math.log(3))
    with torch.no_grad():
        assert got["mean_entropy"] == pytest.approx(label_entropies(head(a))["mean_entropy"])
