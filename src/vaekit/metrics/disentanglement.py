"""Disentanglement metrics: MIG, DCI, SAP, modularity, explicitness, FactorVAE and beta-VAE scores.

The definitions follow the papers and their common reference implementation, disentanglement_lib
(Locatello et al. 2019, "Challenging common assumptions in the unsupervised learning of
disentangled representations"). MIG, SAP, DCI, modularity and explicitness compute by default
what disentanglement_lib computes, with the same scikit-learn estimators and settings
(:mod:`vaekit.metrics.reference`; ``pip install "vaekit[metrics]"``); vaekit's faster forms of
DCI and SAP are options named as such (``predictor="logistic"``, ``form="nearest_mean"``).
Every score is a number in [0, 1], higher is more disentangled; mutual information and
entropies are in nats.

Two kinds of input:

* **Observational** metrics (:func:`mig`, :func:`dci`, :func:`sap`,
  :func:`~vaekit.metrics.reference.modularity`,
  :func:`~vaekit.metrics.reference.explicitness`) take codes ``[N, D]`` (the
  representation of N observations, e.g. posterior means) and their ground-truth factors
  ``[N, K]`` (discrete classes: every distinct value of a column is one class).
* **Interventional** metrics (:func:`factor_vae_score`, :func:`beta_vae_score`) need batches in
  which one factor is held fixed, so they take a sampler: ``represent(factors) -> codes`` and a
  ``dataset`` with the factor API of :class:`vaekit.data.DSprites` (``factor_sizes``,
  ``sample_factors(n, generator)``, ``sample_fixed_factor(n, factor, generator)``). For a model,
  ``represent`` renders and encodes (:func:`image_representation`); for a known-answer test it
  can be the factors themselves.

Example (``model`` a trained :class:`vaekit.VAE` whose encoder outputs ``[mean, log-variance]``)::

    from vaekit.data import DSprites
    ds = DSprites()
    # the ground truth itself: MIG 0.90 (40 orientations in 20 bins), FactorVAE 1, beta-VAE 1;
    # pure noise: all near 0 or chance
    evaluate_disentanglement(lambda f: f.double(), ds)
    encode = lambda x: model.encoder(x.flatten(1)).chunk(2, -1)[0]   # posterior means
    evaluate_disentanglement(image_representation(encode, ds), ds)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DCIScores",
    "FactorDataset",
    "beta_vae_score",
    "dci",
    "discretize",
    "evaluate_disentanglement",
    "factor_vae_score",
    "image_representation",
    "mig",
    "mutual_info_matrix",
    "sap",
]

Representation = Callable[[torch.Tensor], "np.ndarray | torch.Tensor"]


class FactorDataset(Protocol):
    """What the interventional metrics need of a data set (:class:`vaekit.data.DSprites` has it).

    ``factor_sizes``: classes per factor. ``sample_factors(n, generator)``: ``[n, K]`` int64,
    factors drawn from the data distribution. ``sample_fixed_factor(n, factor, generator)``:
    ``[n, K]`` int64 whose column ``factor`` holds one class shared by all rows.
    """

    factor_sizes: tuple[int, ...]

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def sample_fixed_factor(
        self, n: int, factor: int, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


class DCIScores(NamedTuple):
    """The three DCI scores (each in [0, 1]) and the importance matrix behind them.

    ``importance`` is ``[D, K]``: how much code ``j`` is used to predict factor ``k``; each
    column sums to 1. ``informativeness`` is the test accuracy, ``informativeness_train`` the
    training accuracy (fractions). ``predictor``: ``"gbt"`` (gradient-boosted trees, the
    disentanglement_lib form) or ``"logistic"`` (vaekit's fast variant).
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray
    informativeness_train: float
    predictor: str


# -- input checks -----------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; received {value!r}")
    return int(value)


def _as_array(name: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists and other non-arrays
        raise ValueError(
            f"{name} must be an array [N, ...]; received {type(value).__name__}"
        ) from e
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"{name} must hold numbers; received dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise ValueError(f"{name} must hold real numbers; received dtype {a.dtype}")
    return a


def _check_finite(name: str, a: np.ndarray) -> None:
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise ValueError(
            f"{name} must be finite; received {n_nan} NaN and {n_inf} Inf values (shape {a.shape})"
        )


def _as_codes(name: str, value: object, min_rows: int = 2) -> np.ndarray:
    """Codes ``[N, D]`` as float64, checked: 2-D, at least ``min_rows`` rows, finite."""
    a = _as_array(name, value)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must have shape [N, D] with D >= 1; received shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} rows (samples); received {a.shape[0]}"
        )
    _check_finite(name, a)
    return a.astype(np.float64, copy=False)


def _as_factors(name: str, value: object, n: int, codes_name: str) -> np.ndarray:
    """Factors ``[N, K]``, checked: 2-D, ``n`` rows, finite, discrete-looking."""
    a = _as_array(name, value)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must have shape [N, K] with K >= 1; received shape {a.shape}")
    if a.shape[0] != n:
        raise ValueError(
            f"{name} must have one row per row of {codes_name}: expected {n} rows; "
            f"received {a.shape[0]}"
        )
    _check_finite(name, a)
    return a


def _labels(factors: np.ndarray, name: str) -> tuple[np.ndarray, list[int]]:
    """Each column's distinct values -> classes 0..C-1; returns labels ``[N, K]`` and the Cs."""
    n = factors.shape[0]
    labels = np.empty(factors.shape, dtype=np.int64)
    sizes = []
    for k in range(factors.shape[1]):
        values, labels[:, k] = np.unique(factors[:, k], return_inverse=True)
        # a continuous column would make every sample its own class: the MI and the
        # classifiers would then measure nothing useful. Integer labels are always classes.
        fractional = np.issubdtype(values.dtype, np.floating) and (values != np.round(values)).any()
        if fractional and len(values) > max(n // 2, 2):
            raise ValueError(
                f"{name} column {k} has {len(values)} distinct values in {n} samples: factors "
                "must be discrete classes (e.g. DSprites.index_to_factors), not continuous "
                "values; expected at most N/2 distinct values"
            )
        sizes.append(len(values))
    return labels, sizes


def _paired_shapes(
    ztr: np.ndarray, ftr: np.ndarray, codes_test: object, factors_test: object
) -> tuple[np.ndarray, np.ndarray]:
    """Check the test codes and factors against checked training ones; returns them."""
    zte = _as_codes("codes_test", codes_test, min_rows=1)
    if zte.shape[1] != ztr.shape[1]:
        raise ValueError(
            f"codes_test must have D={ztr.shape[1]} columns like codes_train; "
            f"received {zte.shape[1]}"
        )
    fte = _as_factors("factors_test", factors_test, zte.shape[0], "codes_test")
    if fte.shape[1] != ftr.shape[1]:
        raise ValueError(
            f"factors_test must have K={ftr.shape[1]} columns like factors_train; "
            f"received {fte.shape[1]}"
        )
    return zte, fte


def _paired(
    codes_train: object, factors_train: object, codes_test: object, factors_test: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Check a train / test pair; factors relabelled jointly (one class set per factor)."""
    ztr = _as_codes("codes_train", codes_train, min_rows=2)
    ftr = _as_factors("factors_train", factors_train, ztr.shape[0], "codes_train")
    zte, fte = _paired_shapes(ztr, ftr, codes_test, factors_test)
    labels, sizes = _labels(np.concatenate([ftr, fte]), "factors_train/factors_test")
    return ztr, labels[: len(ztr)], zte, labels[len(ztr) :], sizes


# -- MIG ----------------------------------------------------------------------------------------


def discretize(codes: object, bins: int = 20) -> np.ndarray:
    """Equal-width histogram bins per code dimension: ``[N, D]`` floats -> ``[N, D]`` int64.

    Bin ``b`` of dimension ``j`` is ``[lo + b w, lo + (b + 1) w)`` with ``lo, hi`` the column's
    minimum and maximum and ``w = (hi - lo) / bins`` (the maximum goes to the last bin), as
    disentanglement_lib's ``_histogram_discretize``. A constant column is all bin 0.
    """
    z = _as_codes("codes", codes, min_rows=1)
    bins = _check_int("bins", bins, 2)
    out = np.zeros(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        if z[:, j].max() > z[:, j].min():  # the same edges as np.histogram, bit for bit
            edges = np.histogram_bin_edges(z[:, j], bins)
            out[:, j] = np.digitize(z[:, j], edges[:-1]) - 1
    return out


def _entropy_nats(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_info(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """Plug-in MI (nats) of two label vectors with ``na`` and ``nb`` classes."""
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_info_matrix(codes: object, factors: object, bins: int = 20) -> np.ndarray:
    """``I[j, k] = I(z_j; v_k)`` in nats, with each code dimension discretised into ``bins``.

    ``I(z; v) = sum_{b, c} p(b, c) log(p(b, c) / (p(b) p(c)))`` over the empirical joint
    distribution of the code's bin ``b`` (:func:`discretize`) and the factor's class ``c``:
    the plug-in estimate, biased upwards by about ``(B - 1)(C - 1) / (2 N)`` nats.

    Args:
        codes: ``[N, D]`` representation (NumPy or torch).
        factors: ``[N, K]`` ground-truth factors; each distinct value of a column is a class.
        bins: equal-width bins per code dimension.

    Returns:
        ``[D, K]`` float64, nats.
    """
    z = _as_codes("codes", codes)
    f = _as_factors("factors", factors, z.shape[0], "codes")
    v, sizes = _labels(f, "factors")
    zb = discretize(z, bins)
    out = np.empty((z.shape[1], v.shape[1]))
    for j in range(z.shape[1]):
        for k in range(v.shape[1]):
            out[j, k] = _mutual_info(zb[:, j], bins, v[:, k], sizes[k])
    return out


def mig(codes: object, factors: object, bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018), in [0, 1].

    ``MIG = 1/K sum_k (I(z_{j1}; v_k) - I(z_{j2}; v_k)) / H(v_k)``, where ``j1`` and ``j2`` are
    the codes with the largest and second-largest mutual information with factor ``k``
    (:func:`mutual_info_matrix`, nats) and ``H(v_k)`` the factor's empirical entropy (nats), so
    the units cancel. Codes are discretised into ``bins`` equal-width bins, as in
    disentanglement_lib; a factor with more classes than ``bins`` (dSprites' orientation, 40)
    therefore cannot reach 1 even for a perfect code.

    Args:
        codes: ``[N, D]`` representation, ``D >= 2``; disentanglement_lib uses N = 10,000.
        factors: ``[N, K]`` ground-truth factor classes; no factor may be constant.
        bins: equal-width bins per code dimension (default 20, as disentanglement_lib).

    Raises:
        ValueError: shapes that do not match, NaN / Inf, fewer than 2 samples or code
            dimensions, or a constant factor (entropy 0: its gap is undefined).
    """
    z = _as_codes("codes", codes)
    if z.shape[1] < 2:
        raise ValueError(
            f"codes must have at least 2 dimensions for a gap; received D={z.shape[1]}"
        )
    mi = mutual_info_matrix(z, factors, bins)  # validates factors
    v, sizes = _labels(_as_array("factors", factors), "factors")
    entropy = np.array(
        [_entropy_nats(np.bincount(v[:, k], minlength=sizes[k])) for k in range(v.shape[1])]
    )
    if (entropy <= 0).any():
        k = int(np.flatnonzero(entropy <= 0)[0])
        raise ValueError(
            f"factors column {k} is constant in the sample: its entropy is 0 and its MIG is "
            "undefined; expected at least 2 classes per factor"
        )
    top = np.sort(mi, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))


# -- classifiers (torch, full batch) ------------------------------------------------------------


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: ``argmin mean CE(x W^T + b, y) + l2 / 2 ||W||^2``.

    Full-batch L-BFGS in float64 from zero weights, deterministic. On (nearly) separable
    classes with a weak penalty the weights keep growing until ``max_iter``; the importances
    (normalised per factor) and the predictions are stable long before that.
    Returns ``W`` ``[C, D]`` and ``b`` ``[C]``.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    w = torch.zeros(n_classes, xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, xt, w.T), yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def _predict(w: torch.Tensor, b: torch.Tensor, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return torch.addmm(b, xt, w.T).argmax(1).numpy()


# -- DCI ----------------------------------------------------------------------------------------


def _weighted_one_minus_entropy(p: np.ndarray, weights: np.ndarray, base: int) -> float:
    """``sum_i weights_i (1 - H_base(p_i))`` for rows ``p_i`` (normalised here)."""
    total = p.sum(1, keepdims=True)
    keep = total[:, 0] > 0
    q = p[keep] / total[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(q > 0, q * np.log(q), 0.0).sum(1) / math.log(base)
    w = weights[keep]
    return float(np.clip((w * (1.0 - h)).sum() / w.sum(), 0.0, 1.0))


def dci(
    codes_train: object,
    factors_train: object,
    codes_test: object,
    factors_test: object,
    *,
    predictor: str = "gbt",
    random_state: int = 0,
    l2: float | None = None,
    max_iter: int | None = None,
) -> DCIScores:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018), in [0, 1].

    ``R[j, k]``: importance of code ``j`` for predicting factor ``k`` (each column sums to 1).
    ``disentanglement = sum_j rho_j (1 - H_K(R[j, :] / sum_k R[j, k]))`` with
    ``rho_j = sum_k R[j, k] / sum R`` and ``H_K`` the entropy in base K (K factors);
    ``completeness = sum_k rho_k (1 - H_D(R[:, k]))`` (base D, D codes; ``rho_k`` the column
    share); ``informativeness`` is the mean test accuracy of the per-factor classifiers.

    ``predictor="gbt"`` (default) is disentanglement_lib's ``compute_dci``: per factor, a
    scikit-learn ``GradientBoostingClassifier()`` with its default settings (100 trees of depth
    3, learning rate 0.1) on the raw codes, ``R[:, k]`` its impurity-based feature importances
    (:func:`vaekit.metrics.reference.dci_gbt`). It costs minutes on 10,000 codes of dSprites
    (one tree per class and stage: 113 classes x 100 stages) and needs scikit-learn
    (``pip install "vaekit[metrics]"``).

    ``predictor="logistic"`` is vaekit's **fast variant, not disentanglement_lib's**:
    multinomial logistic regressions on the standardised codes, fitted by L-BFGS (torch) with
    an L2 penalty; ``R[j, k]`` is the mean absolute weight of code ``j`` over the classes of
    factor ``k``. It sees only codes whose classes are ordered along them, and its
    informativeness is that of a linear read-out: its numbers differ from the published ones.

    Args:
        codes_train, factors_train: ``[N, D]`` codes and ``[N, K]`` factor classes the
            predictors are fitted on (disentanglement_lib: N = 10,000).
        codes_test, factors_test: ``[M, D]`` and ``[M, K]`` held-out pairs for the accuracy
            (disentanglement_lib: M = 5,000).
        predictor: ``"gbt"`` (the reference) or ``"logistic"`` (fast variant).
        random_state: seeds the trees (only ties between equally good splits depend on it).
        l2: logistic only: L2 penalty on the weights, per sample (scikit-learn's
            ``C = 1 / (l2 N)``); default ``1e-6``, weak on purpose: classes ordered along one
            code need large weights to be told apart, and with ``l2 = 1 / N`` the ground-truth
            factors of dSprites reach an informativeness of only 0.67 instead of 0.99.
        max_iter: logistic only: L-BFGS iterations per factor (default 200).

    Returns:
        :class:`DCIScores` ``(disentanglement, completeness, informativeness, importance,
        informativeness_train, predictor)``.

    Raises:
        ValueError: shapes that do not match, NaN / Inf, fewer than 2 training samples, fewer
            than 2 codes or factors (the entropies in base D and K need D, K >= 2), an unknown
            ``predictor``, or ``l2`` / ``max_iter`` given with ``predictor="gbt"``.
        ImportError: ``predictor="gbt"`` without scikit-learn.
    """
    if predictor not in ("gbt", "logistic"):
        raise ValueError(f"predictor must be one of ['gbt', 'logistic']; received {predictor!r}")
    ztr, vtr, zte, vte, sizes = _paired(codes_train, factors_train, codes_test, factors_test)
    d, k_factors = ztr.shape[1], vtr.shape[1]
    if d < 2:
        raise ValueError(f"codes_train must have at least 2 dimensions for DCI; received D={d}")
    if k_factors < 2:
        raise ValueError(
            f"factors_train must have at least 2 factors for DCI; received K={k_factors}"
        )
    if predictor == "gbt":
        for name, value in (("l2", l2), ("max_iter", max_iter)):
            if value is not None:
                raise ValueError(
                    f"{name} applies to predictor='logistic' only; received {name}={value!r} "
                    "with predictor='gbt'"
                )
        from vaekit.metrics.reference import dci_gbt

        return dci_gbt(ztr, vtr, zte, vte, random_state=random_state)
    return _dci_logistic(
        ztr, vtr, zte, vte, sizes, 1e-6 if l2 is None else l2, 200 if max_iter is None else max_iter
    )


def _dci_logistic(
    ztr: np.ndarray,
    vtr: np.ndarray,
    zte: np.ndarray,
    vte: np.ndarray,
    sizes: list[int],
    l2: object,
    max_iter: object,
) -> DCIScores:
    """DCI's fast variant: logistic-regression importances (see :func:`dci`)."""
    d, k_factors = ztr.shape[1], vtr.shape[1]
    if isinstance(l2, bool) or not (isinstance(l2, int | float) and l2 >= 0):
        raise ValueError(f"l2 must be a number >= 0; received {l2!r}")
    max_iter = _check_int("max_iter", max_iter, 1)
    xtr, xte = _standardise(ztr, zte)
    importance = np.zeros((d, k_factors))
    accuracy, accuracy_train = np.zeros(k_factors), np.zeros(k_factors)
    for k in range(k_factors):
        w, b = _fit_logistic(xtr, vtr[:, k], sizes[k], float(l2), max_iter)
        # the softmax is unchanged by adding one vector to every class's weights; the L2
        # optimum has class-mean zero, subtracted again here so that stopping early cannot leak
        w = w - w.mean(0, keepdim=True)
        importance[:, k] = w.abs().mean(0).numpy()
        accuracy[k] = float((_predict(w, b, xte) == vte[:, k]).mean())
        accuracy_train[k] = float((_predict(w, b, xtr) == vtr[:, k]).mean())
    col = importance.sum(0, keepdims=True)
    importance = np.where(col > 0, importance / np.where(col > 0, col, 1.0), 1.0 / d)
    code_weight = importance.sum(1) / importance.sum()
    factor_weight = importance.sum(0) / importance.sum()
    return DCIScores(
        disentanglement=_weighted_one_minus_entropy(importance, code_weight, k_factors),
        completeness=_weighted_one_minus_entropy(importance.T, factor_weight, d),
        informativeness=float(accuracy.mean()),
        importance=importance,
        informativeness_train=float(accuracy_train.mean()),
        predictor="logistic",
    )


# -- SAP ----------------------------------------------------------------------------------------


def _nearest_mean_accuracy(
    ztr: np.ndarray, ytr: np.ndarray, zte: np.ndarray, yte: np.ndarray, n_classes: int
) -> np.ndarray:
    """Test accuracy ``[D]`` of the 1-D nearest-class-mean classifier of each code dimension."""
    counts = np.bincount(ytr, minlength=n_classes).astype(np.float64)
    onehot = np.zeros((len(ytr), n_classes))
    onehot[np.arange(len(ytr)), ytr] = 1.0
    means = (onehot.T @ ztr)[counts > 0] / counts[counts > 0, None]  # [C', D]
    classes = np.flatnonzero(counts > 0)
    acc = np.empty(ztr.shape[1])
    for j in range(ztr.shape[1]):
        dist = np.abs(zte[:, j, None] - means[None, :, j])  # [M, C']
        acc[j] = float((classes[dist.argmin(1)] == yte).mean())
    return acc


_SAP_FORMS = ("discrete", "continuous", "nearest_mean")


def sap(
    codes_train: object,
    factors_train: object,
    codes_test: object,
    factors_test: object,
    *,
    form: str = "discrete",
    random_state: int = 0,
) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018), in [0, 1].

    ``S[j, k]``: how well code ``j`` alone predicts factor ``k``;
    ``SAP = 1/K sum_k (S[j1, k] - S[j2, k])`` with ``j1``, ``j2`` the best and second-best codes
    for factor ``k``. The forms, named as in disentanglement_lib's ``sap_score.py``:

    * ``"discrete"`` (default, disentanglement_lib's ``continuous_factors=False``, used for
      its published scores): ``S[j, k]`` is the test accuracy of scikit-learn's
      ``LinearSVC(C=0.01, class_weight="balanced")`` fitted on training code ``j``. The strong
      penalty keeps the SVM from separating many classes along one code, so even a perfect
      code scores far below 1 (needs ``pip install "vaekit[metrics]"``).
    * ``"continuous"`` (``continuous_factors=True``): ``S[j, k]`` is the squared Pearson
      correlation of code ``j`` and factor ``k`` on the training set (the test set is not
      used), 0 for a code of variance <= 1e-12.
    * ``"nearest_mean"``: vaekit's **fast variant, not disentanglement_lib's**: the 1-D
      nearest-class-mean classifier of code ``j`` (thresholds midway between consecutive class
      means on the training set), test accuracy. A perfect code scores about ``1 - 1/C_k`` per
      factor, as the second-best code is at chance level.

    Args:
        codes_train, factors_train: ``[N, D]`` codes and ``[N, K]`` factor classes the
            classifiers are fitted on (disentanglement_lib: N = 10,000).
        codes_test, factors_test: ``[M, D]`` and ``[M, K]`` held-out pairs (M = 5,000).
        form: ``"discrete"``, ``"continuous"`` or ``"nearest_mean"`` (see above).
        random_state: seeds liblinear (discrete form; its result does not depend on it
            beyond the solver's tolerance).

    Raises:
        ValueError: shapes that do not match, NaN / Inf, fewer than 2 training samples or
            fewer than 2 code dimensions, an unknown ``form``, or (continuous form) a
            factor that is constant on the training set.
        ImportError: the discrete form without scikit-learn.
    """
    if form not in _SAP_FORMS:
        raise ValueError(f"form must be one of {list(_SAP_FORMS)}; received {form!r}")
    if form == "continuous":
        # the factors' own values (continuous ones allowed), as disentanglement_lib
        ztr = _as_codes("codes_train", codes_train, min_rows=2)
        vtr = _as_factors("factors_train", factors_train, ztr.shape[0], "codes_train")
        _paired_shapes(ztr, vtr, codes_test, factors_test)
        vtr = vtr.astype(np.float64)
        constant = [k for k in range(vtr.shape[1]) if np.ptp(vtr[:, k]) == 0]
        if constant:
            raise ValueError(
                f"factors_train column {constant[0]} is constant: its correlation with a "
                "code is undefined; expected at least 2 distinct values per factor"
            )
        zte, vte = None, None
    else:
        ztr, vtr, zte, vte, sizes = _paired(codes_train, factors_train, codes_test, factors_test)
    if ztr.shape[1] < 2:
        raise ValueError(
            f"codes_train must have at least 2 dimensions for a gap; received D={ztr.shape[1]}"
        )
    if form == "nearest_mean":
        score = np.stack(
            [
                _nearest_mean_accuracy(ztr, vtr[:, k], zte, vte[:, k], sizes[k])
                for k in range(len(sizes))
            ],
            axis=1,
        )
    else:
        from vaekit.metrics.reference import sap_score_matrix

        score = sap_score_matrix(
            ztr, vtr, zte, vte, continuous=form == "continuous", random_state=random_state
        )
    top = np.sort(score, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


# -- interventional metrics -------------------------------------------------------------------


def _num_factors(dataset: object) -> int:
    for attr in ("sample_factors", "sample_fixed_factor"):
        if not callable(getattr(dataset, attr, None)):
            raise ValueError(
                f"dataset must have a method {attr}(...) (the factor API of vaekit.data.DSprites); "
                f"received {type(dataset).__name__} without it"
            )
    sizes = getattr(dataset, "factor_sizes", None)
    if sizes is None:
        raise ValueError(
            f"dataset must have factor_sizes (classes per factor); received "
            f"{type(dataset).__name__} without it"
        )
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(
            f"dataset.factor_sizes must list at least 2 factors of size >= 1; received {sizes}"
        )
    return len(sizes)


def _represent(represent: Representation, factors: torch.Tensor, chunk_size: int) -> np.ndarray:
    """``represent`` over ``factors`` in chunks, checked, as float64 ``[n, D]``."""
    if not callable(represent):
        raise ValueError(f"represent must be callable factors -> codes; received {represent!r}")
    parts = []
    with torch.no_grad():
        for i in range(0, len(factors), chunk_size):
            f = factors[i : i + chunk_size]
            z = _as_array("represent(factors)", represent(f))
            if z.ndim != 2 or z.shape[0] != len(f):
                raise ValueError(
                    f"represent(factors) must return codes [n, D] with n={len(f)} rows for "
                    f"factors of shape {tuple(f.shape)}; received shape {z.shape}"
                )
            parts.append(z.astype(np.float64))
    codes = np.concatenate(parts)
    if len({p.shape[1] for p in parts}) > 1:
        raise ValueError(
            "represent(factors) returned a different number of code dimensions per call"
        )
    _check_finite("represent(factors)", codes)
    return codes


def _sample_factors(dataset: object, n: int, generator: torch.Generator, k: int) -> torch.Tensor:
    f = torch.as_tensor(dataset.sample_factors(n, generator=generator))
    if f.shape != (n, k):
        raise ValueError(
            f"dataset.sample_factors({n}) must return [{n}, {k}] factors; received {tuple(f.shape)}"
        )
    return f


def factor_vae_score(
    represent: Representation,
    dataset: FactorDataset,
    *,
    batch_size: int = 64,
    n_train: int = 1000,
    n_eval: int = 500,
    n_variance: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
    chunk_size: int = 4096,
) -> float:
    """FactorVAE score (Kim & Mnih 2018): majority-vote accuracy of "which factor is fixed", in [0, 1].

    Codes are divided by their standard deviation over ``n_variance`` samples; dimensions with
    standard deviation below ``prune_threshold`` (in the code's own units: collapsed latents)
    are dropped. Each vote draws ``batch_size`` samples sharing one class of a uniformly chosen
    factor ``k`` and votes ``(argmin_j Var_batch(z_j / s_j), k)``; the classifier maps each
    code to its majority factor on ``n_train`` votes, and the score is its accuracy on
    ``n_eval`` further votes. Chance is about ``1/K``; a representation without an active
    dimension scores 0. disentanglement_lib: batch 64, 10,000 / 5,000 votes, 10,000 samples
    for the variances; the defaults here take 96,000 + 10,000 codes.

    Args:
        represent: factors ``[n, K]`` int64 -> codes ``[n, D]`` (NumPy or torch), e.g. an
            encoder's posterior means of ``dataset.render(factors)`` (:func:`image_representation`).
        dataset: an object with ``factor_sizes``, ``sample_factors`` and ``sample_fixed_factor``
            (:class:`FactorDataset`; :class:`vaekit.data.DSprites` is one).
        batch_size: samples per vote (>= 2: a variance is taken).
        n_train, n_eval: votes to fit and to score the majority-vote classifier.
        n_variance: samples for the global standard deviations.
        prune_threshold: minimum global standard deviation of an active code dimension.
        seed: seeds the torch generator handed to the dataset; equal seeds give equal scores.
        chunk_size: rows per call of ``represent``.
    """
    k_factors = _num_factors(dataset)
    batch_size = _check_int("batch_size", batch_size, 2)
    n_train = _check_int("n_train", n_train, 1)
    n_eval = _check_int("n_eval", n_eval, 1)
    n_variance = _check_int("n_variance", n_variance, 2)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if not (isinstance(prune_threshold, int | float) and prune_threshold >= 0):
        raise ValueError(f"prune_threshold must be a number >= 0; received {prune_threshold!r}")
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))

    codes = _represent(represent, _sample_factors(dataset, n_variance, gen, k_factors), chunk_size)
    scale = codes.std(0, ddof=1)
    active = scale >= prune_threshold
    if not active.any():
        return 0.0

    n_votes = n_train + n_eval
    fixed = torch.randint(k_factors, (n_votes,), generator=gen)
    batches = []
    for k in fixed.tolist():
        f = torch.as_tensor(dataset.sample_fixed_factor(batch_size, k, generator=gen))
        if f.shape != (batch_size, k_factors):
            raise ValueError(
                f"dataset.sample_fixed_factor({batch_size}, {k}) must return "
                f"[{batch_size}, {k_factors}] factors; received {tuple(f.shape)}"
            )
        batches.append(f)
    z = _represent(represent, torch.cat(batches), chunk_size)[:, active] / scale[active]
    local = z.reshape(n_votes, batch_size, -1).var(1, ddof=1)
    winner = local.argmin(1)  # [votes], index among the active dims
    d_active, fixed = int(active.sum()), fixed.numpy()
    votes = np.zeros((d_active, k_factors), dtype=np.int64)
    np.add.at(votes, (winner[:n_train], fixed[:n_train]), 1)
    classifier = votes.argmax(1)  # code -> majority factor (ties: the lower factor)
    return float((classifier[winner[n_train:]] == fixed[n_train:]).mean())


def beta_vae_score(
    represent: Representation,
    dataset: FactorDataset,
    *,
    batch_size: int = 64,
    n_train: int = 1000,
    n_eval: int = 500,
    l2: float | None = None,
    max_iter: int = 200,
    seed: int = 0,
    chunk_size: int = 4096,
) -> float:
    """beta-VAE score (Higgins et al. 2017): linear accuracy of "which factor is shared", in [0, 1].

    Each point picks a factor ``k`` uniformly and ``batch_size`` pairs ``(v1, v2)`` of factor
    draws that agree on factor ``k`` only by construction (``v2[k] := v1[k]``, the value drawn
    per pair, as in the paper and disentanglement_lib); its feature is
    ``mean_pairs |z(v1) - z(v2)|`` ``[D]``, its label ``k``. A multinomial logistic regression
    on the standardised features (L-BFGS, L2 penalty ``l2``, default ``1 / n_train``) is
    fitted on ``n_train`` points; the score is its accuracy on ``n_eval`` further points.
    Chance is ``1/K``. disentanglement_lib: batch 64, 10,000 / 5,000 points; the defaults here
    take 192,000 codes. The factors of each pair come from ``dataset.sample_factors``: this
    assumes independent factors, as dSprites' are.

    Args:
        represent: factors ``[n, K]`` int64 -> codes ``[n, D]`` (see :func:`factor_vae_score`).
        dataset: an object with ``factor_sizes`` and ``sample_factors`` (:class:`FactorDataset`).
        batch_size: pairs averaged per point.
        n_train, n_eval: points to fit and to score the classifier.
        l2, max_iter: the classifier's L2 penalty (per sample) and L-BFGS iterations.
        seed: seeds the torch generator handed to the dataset; equal seeds give equal scores.
        chunk_size: rows per call of ``represent``.
    """
    k_factors = _num_factors(dataset)
    batch_size = _check_int("batch_size", batch_size, 1)
    n_train = _check_int("n_train", n_train, 2)
    n_eval = _check_int("n_eval", n_eval, 1)
    max_iter = _check_int("max_iter", max_iter, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if l2 is None:
        l2 = 1.0 / n_train
    if not (isinstance(l2, int | float) and l2 >= 0):
        raise ValueError(f"l2 must be a number >= 0 or None; received {l2!r}")
    gen = torch.Generator().manual_seed(_check_int("seed", seed, 0))

    n_points = n_train + n_eval
    rows = n_points * batch_size
    label = torch.randint(k_factors, (n_points,), generator=gen)
    v1 = _sample_factors(dataset, rows, gen, k_factors)
    v2 = _sample_factors(dataset, rows, gen, k_factors).clone()
    col = label.repeat_interleave(batch_size)
    idx = torch.arange(rows)
    v2[idx, col] = v1[idx, col]
    z1 = _represent(represent, v1, chunk_size)
    z2 = _represent(represent, v2, chunk_size)
    if z1.shape[1] != z2.shape[1]:
        raise ValueError(
            "represent(factors) returned a different number of code dimensions per call"
        )
    feature = np.abs(z1 - z2).reshape(n_points, batch_size, -1).mean(1)
    y = label.numpy()
    xtr, xte = _standardise(feature[:n_train], feature[n_train:])
    w, b = _fit_logistic(xtr, y[:n_train], k_factors, float(l2), max_iter)
    return float((_predict(w, b, xte) == y[n_train:]).mean())


# -- all at once --------------------------------------------------------------------------------


def image_representation(
    encode: Callable[[torch.Tensor], object],
    dataset: object,
    device: torch.device | str | None = None,
) -> Representation:
    """``represent`` for a model: ``factors -> encode(dataset.render(factors))`` without grad.

    Args:
        encode: images ``[n, *image_shape]`` -> codes ``[n, D]``, e.g. the posterior means.
        dataset: anything with ``render(factors)`` (:class:`vaekit.data.DSprites`).
        device: where to move the rendered images before ``encode``; default where they are.
    """
    if not callable(getattr(dataset, "render", None)):
        raise ValueError(
            f"dataset must have a method render(factors) -> images; received "
            f"{type(dataset).__name__} without it"
        )

    def represent(factors: torch.Tensor):
        with torch.no_grad():
            images = dataset.render(factors)
            if device is not None:
                images = images.to(device)
            return encode(images)

    return represent


def evaluate_disentanglement(
    represent: Representation,
    dataset: FactorDataset,
    n: int = 10000,
    seed: int = 0,
    *,
    bins: int = 20,
    chunk_size: int = 4096,
    n_dci: int | None = None,
    fast_variants: bool = False,
    interventional: bool = True,
) -> dict[str, float]:
    """Every disentanglement score of a representation, seeded and deterministic.

    The observational scores in disentanglement_lib's form: MIG and modularity on ``n``
    factor draws; DCI (gradient-boosted trees), SAP (discrete form, linear SVMs) and
    explicitness (logistic regression, ROC-AUC) fitted on those and tested on ``n // 2``
    further draws. The FactorVAE score with ``n`` samples for the variances and ``n // 10`` /
    ``n // 20`` vote batches of 64; the beta-VAE score with ``n // 10`` / ``n // 20`` points of
    64 pairs. ``n`` = 10,000 is disentanglement_lib's training size; on dSprites (113 factor
    classes: one tree per class and boosting stage) DCI's trees then take minutes of CPU
    time, the rest seconds; ``n_dci`` fits them on fewer draws (the first ``n_dci`` training
    and ``n_dci // 2`` test draws). Needs scikit-learn (``pip install "vaekit[metrics]"``).

    Args:
        represent: factors ``[n, K]`` int64 -> codes ``[n, D]`` (:func:`image_representation`).
        dataset: the factor API (:class:`FactorDataset`, e.g. :class:`vaekit.data.DSprites`).
        n: base sample size (>= 40).
        seed: one seed for every draw and estimator; equal seeds give equal results.
        bins: MIG's and modularity's bins per code dimension.
        chunk_size: rows per call of ``represent``.
        n_dci: training draws for DCI's boosted trees (>= 2, at most ``n``); default ``n``.
        fast_variants: also report vaekit's fast variants, **not disentanglement_lib's**,
            under keys that say so: ``fast_dci_logistic_*`` (:func:`dci` with
            ``predictor="logistic"``) and ``fast_sap_nearest_mean`` (:func:`sap` with
            ``form="nearest_mean"``).
        interventional: compute the FactorVAE and beta-VAE scores (``False``: leave them
            out; they render and encode ~30 times more images than the others).

    Returns:
        ``{"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
        "dci_informativeness_train", "sap", "modularity", "explicitness_train",
        "explicitness_test", "factor_vae", "beta_vae"}`` (plus the ``fast_*`` keys), each a
        float in [0, 1].
    """
    from vaekit.metrics.reference import explicitness, modularity

    k_factors = _num_factors(dataset)
    n = _check_int("n", n, 40)
    seed = _check_int("seed", seed, 0)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    n_dci = n if n_dci is None else _check_int("n_dci", n_dci, 2)
    if n_dci > n:
        raise ValueError(f"n_dci must be at most n={n}; received {n_dci}")
    gen = torch.Generator().manual_seed(seed)
    f_train = _sample_factors(dataset, n, gen, k_factors)
    f_test = _sample_factors(dataset, n // 2, gen, k_factors)
    z_train = _represent(represent, f_train, chunk_size)
    z_test = _represent(represent, f_test, chunk_size)
    pair = (z_train, f_train, z_test, f_test)
    pair_dci = (
        z_train[:n_dci],
        f_train[:n_dci],
        z_test[: max(n_dci // 2, 1)],
        f_test[: max(n_dci // 2, 1)],
    )
    scores = dci(*pair_dci, random_state=seed)
    explicit_train, explicit_test = explicitness(*pair)
    small = dict(n_train=n // 10, n_eval=n // 20, seed=seed, chunk_size=chunk_size)
    out = {
        "mig": mig(z_train, f_train, bins),
        "dci_disentanglement": scores.disentanglement,
        "dci_completeness": scores.completeness,
        "dci_informativeness": scores.informativeness,
        "dci_informativeness_train": scores.informativeness_train,
        "sap": sap(*pair, random_state=seed),
        "modularity": modularity(z_train, f_train, bins),
        "explicitness_train": explicit_train,
        "explicitness_test": explicit_test,
    }
    if interventional:
        out["factor_vae"] = factor_vae_score(represent, dataset, n_variance=n, **small)
        out["beta_vae"] = beta_vae_score(represent, dataset, **small)
    if fast_variants:
        fast = dci(*pair, predictor="logistic")
        out.update(
            fast_dci_logistic_disentanglement=fast.disentanglement,
            fast_dci_logistic_completeness=fast.completeness,
            fast_dci_logistic_informativeness=fast.informativeness,
            fast_sap_nearest_mean=sap(*pair, form="nearest_mean"),
        )
    return out
