"""The loss doctor: what does a ``loss_function(recon_x, x, mu, logvar)`` actually compute?

:func:`diagnose` calls a user's VAE loss on controlled inputs and reads off, against the
exact negative ELBO, the likelihood it implies (Bernoulli from binary cross-entropy,
Gaussian from squared error, ...), whether ``recon_x`` is taken as probabilities or
logits, the batch and pixel reductions, the KL form (closed form or single-sample Monte
Carlo) and its sign, probability clipping, and the **effective beta**: the weight of the KL
relative to the reconstruction negative log-likelihood summed over pixels, in nats (for
squared error, relative to the sum of squared errors: a Gaussian with sigma^2 = 1/2).

How. The loss is taken as ``L = a * sum_b sum_i l(recon_x, x) + c + K(mu, logvar)``:

* reconstruction: with ``mu = logvar = 0`` (where every form of the KL is exactly 0), ``L``
  is fitted on six random probes against each candidate ``l`` (affine fit: a, c); the
  candidate with no residual is the likelihood. ``a`` at batch B and at 2B (the batch
  repeated) gives the batch reduction (equal: sum; halved: mean) and the weight per
  example ``w``; ``w = 1`` is a sum over pixels and ``w = 1/D`` a mean.
* KL: ``K = L(mu, logvar) - L(0, 0)``. Repeated under other seeds it is constant (closed
  form, fitted against ``0.5 sum(e^logvar - 1 - logvar + mu^2)``) or not (Monte Carlo,
  ``log q(z) - log p(z)``: with the RNG re-seeded, ``K(m, 0) + K(-m, 0) = sum m^2``
  exactly, so its weight is exact too).
* ``effective_beta = |kl weight| / w``: the size of the weight; its sign is ``kl_sign``
  (``"flipped"``: the KL enters the loss with a minus sign).

The function may be written for PyTorch (probed with float64 tensors) or for NumPy, JAX
or Keras (probed with float64 NumPy arrays when tensors fail). Command line:
``vaekit doctor MODULE:FUNCTION [--json]``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

__all__ = ["Diagnosis", "diagnose", "load", "main"]

# MNIST as the classic scripts lay it out: flat, then channels first for PyTorch and
# channels last for NumPy/JAX/Keras code (a function that accepts both is read in that layout)
_SHAPES = {"torch": ((784,), (1, 28, 28), (28, 28, 1)), "numpy": ((784,), (28, 28, 1), (1, 28, 28))}
_B, _Z, _PROBES = 8, 4, 6
_TOL = 1e-5  # relative residual of an exact fit (float32 inside the user's code: ~1e-7)


@dataclass
class Diagnosis:
    """What ``fn(recon_x, x, mu, logvar)`` computes, against the exact -ELBO (nats).

    ``rec_weight`` w: weight of the per-example reconstruction NLL summed over pixels;
    ``kl_weight``: weight of the per-example KL (signed); ``effective_beta = |kl_weight| / rec_weight``;
    ``factor``: the loss is ``factor * equivalent`` (plus ``constant`` per batch: the
    Gaussian normaliser a squared error leaves out).
    """

    likelihood: str
    recon: str
    batch_reduction: str
    pixel_reduction: str
    kl: str
    kl_sign: str
    kl_batch_reduction: str
    clipping: str
    effective_beta: float | None
    rec_weight: float | None
    kl_weight: float
    factor: float | None
    constant: float
    equivalent: str
    verdict: str
    input_shape: list[int]
    framework: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The diagnosis as a JSON-ready dict (the keys of ``vaekit doctor --json``)."""
        return asdict(self)

    def _factor(self) -> str:
        if self.factor is None:
            return "n/a"
        if self.kl_sign == "flipped":
            b = self.effective_beta
            kl = "KL" if abs(b - 1) < 1e-9 else f"{_fmt(b)}·KL"
            return f"your loss = {_fmt(self.factor)} × (rec − {kl}); the equivalent adds the KL"
        const = f" + {self.constant:.6g} (at B = {_B})" if abs(self.constant) > 1e-9 else ""
        return f"your loss = {_fmt(self.factor)} × equivalent{const}"

    def __str__(self) -> str:
        d = self.input_shape
        rows = [
            ("input", f"recon_x as {self.recon}, x of shape [B, {', '.join(map(str, d))}] "
                      f"({self.framework})"),
            ("likelihood", self.likelihood + (f"; clipping: {self.clipping}"
                                              if self.clipping != "none" else "")),
            ("reduction", f"{self.pixel_reduction} over pixels, {self.batch_reduction} over "
                          "the batch"),
            ("KL", f"{self.kl}, sign {self.kl_sign}, {self.kl_batch_reduction} over the batch"),
            ("effective β", _fmt(self.effective_beta)),
            ("verdict", self.verdict),
            ("equivalent", self.equivalent),
            ("factor", self._factor()),
        ]  # fmt: skip
        rows += [("note", n) for n in self.notes]
        return "\n".join(f"  {k:<12} {v}" for k, v in rows)


# ---------------------------------------------------------------- candidate likelihoods


def _softplus(t):
    return np.logaddexp(0.0, t)


def _cb(logits):
    from vaekit.functional import continuous_bernoulli_log_norm

    return continuous_bernoulli_log_norm(torch.as_tensor(logits)).numpy()


def _logit(p):
    return np.log(p) - np.log1p(-p)


# name -> (likelihood, how recon_x is read, elementwise NLL l(r, x))
_CANDIDATES: dict[str, tuple[str, str, Callable]] = {
    "bce_probs": ("bernoulli", "probabilities",
                  lambda r, x: -(x * np.log(r) + (1 - x) * np.log1p(-r))),
    "bce_logits": ("bernoulli", "logits", lambda r, x: _softplus(r) - x * r),
    "sq": ("gaussian", "the mean", lambda r, x: (r - x) ** 2),
    "abs": ("laplace", "the location", lambda r, x: np.abs(r - x)),
    "cb_logits": ("continuous_bernoulli", "logits",
                  lambda r, x: _softplus(r) - x * r - _cb(r)),
    "cb_probs": ("continuous_bernoulli", "probabilities",
                 lambda r, x: -(x * np.log(r) + (1 - x) * np.log1p(-r)) - _cb(_logit(r))),
}  # fmt: skip


# ---------------------------------------------------------------- calling the user's fn


class _Caller:
    """Calls ``fn`` on NumPy inputs converted to the framework that worked; returns a float."""

    def __init__(self, fn: Callable, framework: str):
        self.fn, self.framework, self.calls = fn, framework, 0

    def __call__(self, r, x, mu, lv, seed: int = 0) -> float:
        args = [np.asarray(a, dtype=np.float64) for a in (r, x, mu, lv)]
        if self.framework == "torch":
            args = [torch.from_numpy(a) for a in args]
        self.calls += 1
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. NumPy code handed torch tensors
            torch.manual_seed(seed)
            state = np.random.get_state()
            np.random.seed(seed)
            try:
                out = self.fn(*args)
            except Exception as e:  # the user's code: one clear line, not its traceback
                shapes = ", ".join(str(tuple(a.shape)) for a in args)
                raise ValueError(
                    f"fn(recon_x, x, mu, logvar) raised {type(e).__name__}: {e} (probe: {self.framework} "
                    f"arrays of shapes {shapes})"
                ) from None
            finally:
                np.random.set_state(state)
        return _scalar(out)


def _scalar(out) -> float:
    """A loss value as a float: a scalar tensor/array, or the first of a tuple, or ``["loss"]``."""
    if isinstance(out, dict):
        if "loss" not in out:
            raise ValueError(f"fn returned a dict without 'loss'; keys {sorted(out)}")
        out = out["loss"]
    if isinstance(out, tuple | list):
        out = out[0]
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().double().numpy()
    a = np.asarray(out, dtype=np.float64)
    if a.size != 1:
        raise ValueError(f"fn must return a scalar loss; received shape {a.shape}")
    return float(a.reshape(()))


def _probe(rng, shape, b=_B):
    r = rng.uniform(0.05, 0.95, (b, *shape))
    x = rng.uniform(0.0, 1.0, (b, *shape))
    return r, x


def _setup(fn: Callable, shapes) -> tuple[_Caller, tuple[int, ...]]:
    """The first framework (torch, then NumPy) and x shape that ``fn`` accepts."""
    rng = np.random.default_rng(0)
    errors = []
    for framework in ("torch", "numpy"):
        for shape in shapes or _SHAPES[framework]:
            caller = _Caller(fn, framework)
            r, x = _probe(rng, shape)
            zeros = np.zeros((_B, _Z))
            try:
                value = caller(r, x, zeros, zeros)
            except ValueError as e:  # the call failed (see _Caller): not this form
                errors.append(f"{framework} {shape}: {e}"[:300])
                continue
            if math.isfinite(value):
                return caller, tuple(shape)
            errors.append(f"{framework} {shape}: returned {value}")
    raise ValueError(
        "fn must accept fn(recon_x [B, *shape], x [B, *shape], mu [B, Z], logvar [B, Z]) as "
        f"float64 torch tensors or NumPy arrays for a shape in "
        f"{list(shapes or _SHAPES['torch'])}; every call failed:\n  " + "\n  ".join(errors)
    )


def _affine(values, sums) -> tuple[float, float, float]:
    """Least-squares ``values = a * sums + c``: (a, c, relative residual)."""
    A = np.stack([sums, np.ones_like(sums)], 1)
    (a, c), *_ = np.linalg.lstsq(A, values, rcond=None)
    resid = np.abs(A @ np.array([a, c]) - values).max()
    scale = np.abs(values - values.mean()).max() + 1e-300
    return float(a), float(c), float(resid / scale)


# ---------------------------------------------------------------- the diagnosis


def _reconstruction(call: _Caller, shape) -> dict:
    rng = np.random.default_rng(1)
    probes = [_probe(rng, shape) for _ in range(_PROBES)]
    zeros = np.zeros((_B, _Z))
    values = np.array([call(r, x, zeros, zeros) for r, x in probes])
    best = None
    for name, (_, _, nll) in _CANDIDATES.items():
        sums = np.array([nll(r, x).sum() for r, x in probes])
        a, c, resid = _affine(values, sums)
        if best is None or resid < best[3]:
            best = (name, a, c, resid)
    name, a, c, resid = best
    if resid > 1e-3 or abs(a) < 1e-300:
        return {"name": None, "resid": resid}
    # batch reduction: the slope with the batch repeated twice
    nll = _CANDIDATES[name][2]
    r0, x0 = probes[0]
    r2, x2 = np.concatenate([r0, r0]), np.concatenate([x0, x0])
    z2 = np.zeros((2 * _B, _Z))
    v2 = call(r2, x2, z2, z2)
    # c at 2B is unknown (a Gaussian normaliser doubles with the batch): use a second 2B probe
    r3, x3 = np.concatenate([probes[1][0]] * 2), np.concatenate([probes[1][1]] * 2)
    v3 = call(r3, x3, z2, z2)
    a2 = (v2 - v3) / (nll(r2, x2).sum() - nll(r3, x3).sum())
    ratio = a2 / a
    batch = "sum" if abs(ratio - 1) < 1e-3 else "mean" if abs(ratio - 0.5) < 1e-3 else None
    return {"name": name, "a": a, "c": c, "batch": batch, "resid": resid}


def _clipping(call: _Caller, shape, name: str, a: float) -> str:
    """How a probability of exactly 0 (x = 1) is treated: the NLL of that one pixel."""
    if not name.endswith("probs"):
        return "none"
    r = np.full((_B, *shape), 0.5)
    x = np.ones((_B, *shape))
    zeros = np.zeros((_B, _Z))
    base = call(r, x, zeros, zeros)
    r_flat = r.reshape(_B, -1)
    r_flat[0, 0] = 0.0
    try:
        hit = call(r_flat.reshape(r.shape), x, zeros, zeros)
    except Exception:
        return "none (an error at probability 0)"
    if not math.isfinite(hit):
        return "none (an infinite or NaN loss at probability 0)"
    nll = (hit - base) / a + math.log(2.0)
    if abs(nll - 100.0) < 1e-3:
        return "log-probabilities clamped at -100 (torch's binary_cross_entropy)"
    eps = math.exp(-nll)
    return f"probabilities clipped to [{eps:.3g}, 1 - {eps:.3g}]"


def _kl_analytic(mu, lv):
    return 0.5 * (np.expm1(lv) - lv + mu**2).sum()


def _kl(call: _Caller, shape) -> dict:
    rng = np.random.default_rng(2)
    r, x = _probe(rng, shape)
    zeros = np.zeros((_B, _Z))
    base = call(r, x, zeros, zeros)

    def K(mu, lv, seed=0, rr=r, xx=x, b=base):
        return call(rr, xx, mu, lv, seed) - b

    mu, lv = rng.normal(size=(_B, _Z)), rng.uniform(-1, 1, (_B, _Z))
    k1, k1_again, k2 = K(mu, lv, 1), K(mu, lv, 1), K(mu, lv, 2)
    tol = 1e-9 * (abs(k1) + 1)
    if abs(k1 - k2) <= tol:
        lats = [(rng.normal(size=(_B, _Z)), rng.uniform(-1.5, 1.5, (_B, _Z))) for _ in range(5)]
        ks = np.array([K(m, v) for m, v in lats])
        kl = np.array([_kl_analytic(m, v) for m, v in lats])
        b = float(ks @ kl / (kl @ kl))
        resid = float(np.abs(ks - b * kl).max() / (np.abs(ks).max() + 1e-300))
        form = "none" if np.abs(ks).max() < 1e-12 else "analytic" if resid < 1e-5 else "unknown"
        notes = [] if form != "unknown" else ["the KL term is not the closed-form Gaussian KL"]
        mu2, lv2 = np.concatenate([lats[0][0]] * 2), np.concatenate([lats[0][1]] * 2)
    else:
        form = "mc"
        m = rng.normal(size=(_B, _Z))
        lv0 = np.zeros((_B, _Z))
        if abs(k1 - k1_again) <= tol:
            # same seed, same eps: K(m) + K(-m) = b * sum m^2 exactly (lv = 0)
            b = (K(m, lv0, 3) + K(-m, lv0, 3)) / (m**2).sum()
            notes = ["the KL is a single-sample Monte Carlo estimate (exact weight: seeded)"]
        else:
            # its own RNG: average; the noise of a pair grows as |m| and its mean as m^2
            m = 20.0 * m
            pairs = [K(m, lv0, s) + K(-m, lv0, s) for s in range(64)]
            b = float(np.mean(pairs)) / (m**2).sum()
            notes = ["the KL is a Monte Carlo estimate with its own RNG: its weight is "
                     "estimated from 64 draws (to about 1%)"]  # fmt: skip
        mu2, lv2 = np.concatenate([m] * 2), np.concatenate([lv0] * 2)
        mu, lv = m, lv0
    if form == "none":
        return {"form": "none", "b": 0.0, "batch": "sum", "notes": []}
    # batch reduction of the KL: the same latents repeated twice, at a 2B probe
    r2, x2 = np.concatenate([r, r]), np.concatenate([x, x])
    z2 = np.zeros((2 * _B, _Z))
    base2 = call(r2, x2, z2, z2)
    if form == "mc" and abs(k1 - k1_again) > tol:
        return {"form": form, "b": b, "batch": "unknown", "notes": notes}
    if form == "mc":
        k_b = K(mu, lv, 3) + K(-mu, lv, 3)
        k_2b = (call(r2, x2, mu2, lv2, 3) - base2) + (call(r2, x2, -mu2, lv2, 3) - base2)
    else:
        k_b = K(mu2[:_B], lv2[:_B])
        k_2b = call(r2, x2, mu2, lv2) - base2
    ratio = k_2b / k_b if k_b else float("nan")
    batch = "sum" if abs(ratio - 2) < 1e-3 else "mean" if abs(ratio - 1) < 1e-3 else "unknown"
    return {"form": form, "b": b, "batch": batch, "notes": notes}


def _fmt(v) -> str:
    """A weight for people: 784, 1/784, 0.196 (six significant digits)."""
    if v is None:
        return "n/a"
    if v != 0 and abs(1 / v) >= 2 and abs(1 / v - round(1 / v)) < 1e-6 * abs(1 / v):
        return f"1/{round(1 / v)}" if v > 0 else f"-1/{round(-1 / v)}"
    return f"{v:.6g}"


def diagnose(fn: Callable, x_shape: tuple[int, ...] | None = None) -> Diagnosis:
    """Probe ``fn(recon_x, x, mu, logvar)`` and say what it computes against the exact -ELBO.

    Args:
        fn: the loss; returns a scalar (or a tuple/list whose first item is, or a dict
            with ``"loss"``). PyTorch first (float64 tensors), else NumPy arrays.
        x_shape: the shape of one example (default: MNIST, tried as (784,), then
            (1, 28, 28) for PyTorch and (28, 28, 1) for NumPy/JAX/Keras code, then the other).

    Returns:
        a :class:`Diagnosis`; ``str()`` of it is the report ``vaekit doctor`` prints.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable fn(recon_x, x, mu, logvar); received {fn!r}")
    shapes = (tuple(int(s) for s in x_shape),) if x_shape is not None else None
    call, shape = _setup(fn, shapes)
    d = int(np.prod(shape))
    rec = _reconstruction(call, shape)
    kl = _kl(call, shape)
    notes = list(kl["notes"])
    if rec["name"] is None:
        return Diagnosis(
            "unknown", "unknown", "unknown", "unknown", kl["form"],
            "flipped" if kl["b"] < 0 else "ok", kl["batch"], "none", None, None, kl["b"],
            None, 0.0, "none found: the reconstruction term is none of BCE (probabilities or "
            "logits), squared error, absolute error, continuous Bernoulli",
            "not a recognised VAE loss", list(shape), call.framework, notes,
        )  # fmt: skip
    likelihood, recon, _ = _CANDIDATES[rec["name"]]
    per_batch = _B if rec["batch"] == "mean" else 1
    w = rec["a"] * per_batch  # weight of one example's summed NLL
    pixel = "mean" if abs(w * d - 1) < 1e-6 else "sum"
    if pixel == "sum" and abs(w - 1) > 1e-6:
        notes.append(f"the summed reconstruction NLL is weighted by {_fmt(w)}")
    beta = kl["b"] / rec["a"]  # both per batch sum at batch size B
    if kl["batch"] not in (rec["batch"], "unknown") and kl["form"] != "none":
        notes.append(
            f"rec is {rec['batch']}med and KL {kl['batch']}med over the batch: the effective "
            f"beta depends on the batch size (value at B = {_B})"
        )
    sign = "flipped" if beta < 0 else "ok"
    red = rec["batch"] or "unknown"
    clip = _clipping(call, shape, rec["name"], rec["a"])
    args = {"bernoulli": f"probs={recon == 'probabilities'}", "gaussian":
            'likelihood="gaussian", scale=math.sqrt(0.5)'}.get(likelihood)  # fmt: skip
    shown_beta = abs(beta) if sign == "flipped" else beta  # the fix for a flipped KL
    if args is None:
        equivalent = (f"vaekit.VAE(..., likelihood=vaekit.likelihoods."
                      f"{'Laplace(scale=1.0)' if likelihood == 'laplace' else 'ContinuousBernoulli()'}"
                      f") with vaekit.ELBO(beta={shown_beta:.6g}, reduction={red!r})")  # fmt: skip
    else:
        extra = "" if abs(shown_beta - 1) < 1e-6 else f", beta={shown_beta:.6g}"
        equivalent = (f"vaekit.classic_loss(recon_x, x, mu, logvar, {args}, "
                      f"reduction={red!r}{extra})")  # fmt: skip
    if likelihood == "continuous_bernoulli" and recon == "probabilities":
        notes.append("recon_x is read as probabilities: pass logits = log p - log(1 - p)")
    if likelihood == "gaussian":
        notes.append(
            "squared error = Gaussian NLL with sigma^2 = 1/2 without its normaliser "
            f"(D/2) log(pi) = {0.5 * d * math.log(math.pi):.6g} nats per example"
        )
    batch_txt = {"sum": "summed over the batch", "mean": "averaged over the batch"}.get(
        red, "reduced over the batch in an unknown way"
    )
    scale = "" if abs(w - 1) < 1e-6 else f"{_fmt(w)} × "
    kind = {"gaussian": " (Gaussian, σ² = 1/2, up to a constant)"}.get(likelihood, "")
    if sign == "flipped":
        kl_txt = "KL" if abs(beta + 1) < 1e-6 else f"{_fmt(-beta)}·KL"
        verdict = (f"not −ELBO: the KL enters with the wrong sign: {scale}(rec − {kl_txt}); "
                   "the equivalent shows the fix")  # fmt: skip
    elif abs(beta - 1) < 1e-6:
        verdict = f"{scale}−ELBO{kind} {batch_txt}, β = 1"
    else:
        verdict = (f"{scale}(rec + β·KL){kind} {batch_txt}, effective β = {_fmt(beta)}: "
                   "−ELBO only at β = 1")  # fmt: skip
    if kl["form"] == "mc":
        verdict += "; KL: single-sample Monte Carlo (unbiased, noisier than the closed form)"
    elif kl["form"] in ("none", "unknown"):
        verdict += f"; KL: {kl['form']}"
    constant = rec["c"]

    def tidy(v: float) -> float:  # 784.000000000003 -> 784.0: float64 round-off of the fit
        return float(f"{v:.12g}")

    beta, w = tidy(beta), tidy(w)
    return Diagnosis(
        likelihood=likelihood, recon=recon, batch_reduction=red, pixel_reduction=pixel,
        kl=kl["form"], kl_sign=sign, kl_batch_reduction=kl["batch"], clipping=clip,
        effective_beta=abs(beta), rec_weight=w,
        kl_weight=tidy(kl["b"] * (_B if kl["batch"] == "mean" else 1)),
        factor=w, constant=constant, equivalent=equivalent, verdict=verdict,
        input_shape=list(shape), framework=call.framework, notes=notes,
    )  # fmt: skip


# ---------------------------------------------------------------- command line


def load(spec: str) -> Callable:
    """``MODULE:FUNCTION`` -> the function (the current directory is searched first)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"spec must be MODULE:FUNCTION (e.g. mymodel:loss_function); received {spec!r}"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: report any import failure as one line
        raise ValueError(
            f"could not import module {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            names = sorted(n for n in dir(module) if not n.startswith("_"))
            raise ValueError(
                f"module {module_name!r} has no attribute {attr!r}; it defines {names[:20]}"
            )
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(
            f"{spec} must be a function fn(recon_x, x, mu, logvar); received {type(fn).__name__}"
        )
    return fn


def main(spec: str, as_json: bool = False, shape: str | None = None) -> int:
    """``vaekit doctor``: print the diagnosis of ``MODULE:FUNCTION`` (one JSON object with --json)."""
    x_shape = None
    if shape is not None:
        try:
            x_shape = tuple(int(s) for s in shape.split(","))
        except ValueError:
            raise ValueError(
                f"--shape must be integers like 784 or 1,28,28; received {shape!r}"
            ) from None
    result = diagnose(load(spec), x_shape)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"vaekit doctor: {spec}")
        print(result)
    return 0
