"""The disentanglement metrics that need scikit-learn, in disentanglement_lib's form.

disentanglement_lib (Locatello et al. 2019; ``evaluation/metrics/{sap_score, dci,
modularity_explicitness}.py``) fits scikit-learn estimators with their default settings; the
published scores of almost every paper since come from it. This module fits the same
estimators with the same settings, so the same codes give the same numbers:

* SAP (discrete form): ``LinearSVC(C=0.01, class_weight="balanced")`` per (code, factor) pair,
  fitted on the training codes, accuracy on the test codes (:func:`sap_score_matrix`);
* DCI: ``GradientBoostingClassifier()`` per factor, impurity importances, informativeness as
  accuracy (:func:`dci_gbt`);
* modularity (Ridgeway & Mozer 2018): :func:`modularity`;
* explicitness (Ridgeway & Mozer 2018): :func:`explicitness`.

scikit-learn is an optional dependency (``pip install "vaekit[metrics]"``); it is imported
inside the functions, so ``import vaekit.metrics`` works without it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.stats

from vaekit.metrics.disentanglement import (
    DCIScores,
    _as_codes,
    _as_factors,
    _check_int,
    _paired,
    mutual_info_matrix,
)

__all__ = ["dci_gbt", "explicitness", "modularity", "sap_score_matrix"]

_INSTALL = 'pip install "vaekit[metrics]"'


def _sklearn() -> Any:
    """Import scikit-learn, or raise an ImportError that says how to install it."""
    try:
        import sklearn
        import sklearn.ensemble
        import sklearn.exceptions
        import sklearn.linear_model
        import sklearn.metrics
        import sklearn.svm
    except ImportError as e:
        raise ImportError(
            "the disentanglement_lib forms of SAP, DCI and explicitness fit scikit-learn "
            f"estimators; scikit-learn is not installed: {_INSTALL}"
        ) from e
    return sklearn


def _check_seed(random_state: object) -> int:
    return _check_int("random_state", random_state, 0)


# -- SAP ----------------------------------------------------------------------------------------


def sap_score_matrix(
    codes_train: np.ndarray,
    labels_train: np.ndarray,
    codes_test: np.ndarray,
    labels_test: np.ndarray,
    *,
    continuous: bool = False,
    random_state: int = 0,
) -> np.ndarray:
    """SAP's score matrix ``S`` ``[D, K]`` as disentanglement_lib's ``_compute_score_matrix``.

    Discrete (default): ``S[j, k]`` = test accuracy (fraction in [0, 1]) of
    ``LinearSVC(C=0.01, class_weight="balanced")`` fitted on training code ``j`` alone to
    predict factor ``k``. Continuous: ``S[j, k] = Cov(z_j, v_k)^2 / (Var z_j Var v_k)`` (the
    squared Pearson correlation, ``ddof=1``) on the training set only, 0 where
    ``Var z_j <= 1e-12``. Inputs are checked arrays (see :func:`vaekit.metrics.sap`).
    """
    d, k_factors = codes_train.shape[1], labels_train.shape[1]
    score = np.zeros((d, k_factors))
    if continuous:
        for j in range(d):
            for k in range(k_factors):
                cov = np.cov(codes_train[:, j], labels_train[:, k], ddof=1)
                if cov[0, 0] > 1e-12:
                    score[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
        return score
    sk = _sklearn()
    seed = _check_seed(random_state)
    with warnings.catch_warnings():
        # C = 0.01 on one feature often stops at liblinear's iteration limit, as it does in
        # disentanglement_lib; the warning would be printed D x K times
        warnings.simplefilter("ignore", sk.exceptions.ConvergenceWarning)
        for j in range(d):
            for k in range(k_factors):
                svm = sk.svm.LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                svm.fit(codes_train[:, j, None], labels_train[:, k])
                score[j, k] = np.mean(svm.predict(codes_test[:, j, None]) == labels_test[:, k])
    return score


# -- DCI ----------------------------------------------------------------------------------------


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """``1 - H_base(row)`` per row of ``p`` (rows normalised; ``1e-11`` added as the reference)."""
    return 1.0 - scipy.stats.entropy(p + 1e-11, base=base, axis=1)


def dci_from_importance(importance: object) -> tuple[float, float]:
    """DCI disentanglement and completeness from an importance matrix ``R`` ``[D, K]``.

    ``D = sum_j rho_j (1 - H_K(R[j, :]))`` with ``rho_j = sum_k R[j, k] / sum R`` and
    ``C = sum_k rho_k (1 - H_D(R[:, k]))`` with ``rho_k = sum_j R[j, k] / sum R``; entropies in
    base K and D of the normalised rows / columns (disentanglement_lib adds ``1e-11`` to every
    entry first; an all-zero ``R`` weighs codes and factors equally). Both in [0, 1].
    """
    r = np.abs(_as_codes("importance", importance, min_rows=2))
    if r.shape[1] < 2:
        raise ValueError(
            f"importance must have shape [D, K] with D, K >= 2; received shape {r.shape}"
        )
    weights = r if r.sum() > 0 else np.ones_like(r)
    code_weight = weights.sum(1) / weights.sum()
    factor_weight = weights.sum(0) / weights.sum()
    disentanglement = float(np.sum(_one_minus_entropy(r, r.shape[1]) * code_weight))
    completeness = float(np.sum(_one_minus_entropy(r.T, r.shape[0]) * factor_weight))
    return disentanglement, completeness


def dci_gbt(
    codes_train: np.ndarray,
    labels_train: np.ndarray,
    codes_test: np.ndarray,
    labels_test: np.ndarray,
    *,
    random_state: int = 0,
) -> DCIScores:
    """DCI with gradient-boosted trees, as disentanglement_lib's ``compute_dci``.

    Per factor ``k``: ``GradientBoostingClassifier()`` (scikit-learn defaults: 100 trees of
    depth 3, learning rate 0.1, deviance loss) fitted on the raw training codes;
    ``R[:, k]`` its impurity-based ``feature_importances_`` (each column sums to 1);
    informativeness = mean over factors of the test accuracy (``informativeness_train``:
    the training accuracy). ``random_state`` only breaks ties between equally good splits
    (disentanglement_lib leaves it unset). Inputs are checked arrays (see :func:`vaekit.metrics.dci`).
    """
    sk = _sklearn()
    seed = _check_seed(random_state)
    d, k_factors = codes_train.shape[1], labels_train.shape[1]
    importance = np.zeros((d, k_factors))
    acc_train, acc_test = np.zeros(k_factors), np.zeros(k_factors)
    for k in range(k_factors):
        model = sk.ensemble.GradientBoostingClassifier(random_state=seed)
        model.fit(codes_train, labels_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        acc_train[k] = np.mean(model.predict(codes_train) == labels_train[:, k])
        acc_test[k] = np.mean(model.predict(codes_test) == labels_test[:, k])
    disentanglement, completeness = dci_from_importance(importance)
    return DCIScores(
        disentanglement=disentanglement,
        completeness=completeness,
        informativeness=float(acc_test.mean()),
        importance=importance,
        informativeness_train=float(acc_train.mean()),
        predictor="gbt",
    )


# -- modularity and explicitness ------------------------------------------------------------


def modularity(codes: object, factors: object, bins: int = 20) -> float:
    """Modularity (Ridgeway & Mozer 2018) as disentanglement_lib computes it, in [0, 1].

    With ``m[j, k] = I(z_j; v_k)`` (nats; codes discretised into ``bins`` equal-width bins,
    :func:`vaekit.metrics.mutual_info_matrix`) and ``theta_j = max_k m[j, k]``:
    ``modularity = 1/D sum_j (1 - (sum_k m[j, k]^2 - theta_j^2) / (theta_j^2 (K - 1)))``, a
    code with ``theta_j = 0`` (no information about any factor) counting 0. 1 when each code
    informs about one factor only.

    Args:
        codes: ``[N, D]`` representation; disentanglement_lib uses N = 10,000.
        factors: ``[N, K]`` ground-truth factor classes, ``K >= 2``.
        bins: equal-width bins per code dimension (default 20, as disentanglement_lib).
    """
    z = _as_codes("codes", codes)
    f = _as_factors("factors", factors, z.shape[0], "codes")
    if f.shape[1] < 2:
        raise ValueError(f"factors must have at least 2 columns (K >= 2); received K={f.shape[1]}")
    squared = np.square(mutual_info_matrix(z, f, bins))
    theta = squared.max(1)
    deviation = (squared.sum(1) - theta) / np.where(theta > 0, theta * (squared.shape[1] - 1), 1)
    return float(np.mean(np.where(theta > 0, 1.0 - deviation, 0.0)))


def explicitness(
    codes_train: object, factors_train: object, codes_test: object, factors_test: object
) -> tuple[float, float]:
    """Explicitness (Ridgeway & Mozer 2018) as disentanglement_lib computes it: ``(train, test)``.

    Codes are z-scored with the training mean and standard deviation (``ddof=0``; a constant
    code is only centred). Per factor, scikit-learn's default ``LogisticRegression()``
    (C = 1, lbfgs, multinomial, 100 iterations) is fitted on the training codes; its score is
    the macro average over classes of the one-vs-rest ROC-AUC of the predicted class
    probabilities, on the training and on the test codes. Both returned values are means over
    factors, in [0, 1] (0.5: chance). Classes absent from the test set are left out of the
    test average (disentanglement_lib fails on them).

    Args:
        codes_train, factors_train: ``[N, D]`` codes and ``[N, K]`` factor classes the
            classifiers are fitted on (disentanglement_lib: N = 10,000).
        codes_test, factors_test: ``[M, D]`` and ``[M, K]`` held-out pairs (M = 5,000).

    Raises:
        ValueError: shapes that do not match, NaN / Inf, or a factor with one class only in
            the training set.
        ImportError: scikit-learn is missing.
    """
    ztr, vtr, zte, vte, sizes = _paired(codes_train, factors_train, codes_test, factors_test)
    sk = _sklearn()
    mean, std = ztr.mean(0), ztr.std(0)
    std = np.where(std > 0, std, 1.0)
    xtr, xte = (ztr - mean) / std, (zte - mean) / std
    train, test = np.zeros(len(sizes)), np.zeros(len(sizes))
    for k in range(len(sizes)):
        if len(np.unique(vtr[:, k])) < 2:
            raise ValueError(
                f"factors_train column {k} has one class only: explicitness needs at least 2 "
                "classes per factor in the training set"
            )
        with warnings.catch_warnings():
            # lbfgs' 100 default iterations often stop short, in disentanglement_lib too
            warnings.simplefilter("ignore", sk.exceptions.ConvergenceWarning)
            clf = sk.linear_model.LogisticRegression().fit(xtr, vtr[:, k])
        train[k] = _macro_ovr_auc(sk, vtr[:, k], clf.predict_proba(xtr), clf.classes_)
        test[k] = _macro_ovr_auc(sk, vte[:, k], clf.predict_proba(xte), clf.classes_)
    return float(train.mean()), float(test.mean())


def _macro_ovr_auc(sk: Any, y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Mean over classes of the ROC-AUC of ``proba[:, c]`` for "y == classes[c]"."""
    aucs = []
    for c, label in enumerate(classes):
        positive = y == label
        if positive.any() and not positive.all():
            aucs.append(sk.metrics.roc_auc_score(positive, proba[:, c]))
    if not aucs:
        raise ValueError(
            "explicitness needs every factor to take at least 2 classes in each set; one "
            f"factor has the single class {np.unique(y).tolist()} in {len(y)} samples"
        )
    return float(np.mean(aucs))
