"""Parity cases shared by the JAX and Keras tests: random inputs and the PyTorch reference.

Each case names a function that exists under the same name and signature in
``vaekit.functional``, ``vaekit.interop.jax`` and ``vaekit.interop.keras``, builds its inputs
as NumPy arrays, and says which arguments to differentiate. The reference values and input
gradients come from ``vaekit.functional`` and ``torch.autograd``; the objective reference
from ``vaekit.objectives`` on a ``vaekit.VAE`` whose z draws are reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import vaekit
from vaekit import functional as VF
from vaekit import likelihoods, priors
from vaekit.objectives import ELBO, IWAE

SHAPE = (5, 3, 4)  # [B, ...]: every function sums over the last two axes
RTOL64 = ATOL64 = 1e-10
RTOL32, ATOL32 = 2e-5, 2e-4


@dataclass(frozen=True)
class Case:
    name: str
    fn: str
    make: object  # rng -> tuple of arrays
    kwargs: dict = field(default_factory=dict)
    diff: tuple[int, ...] = ()  # argument positions to differentiate


def _n(scale=1.0, shape=SHAPE):
    return lambda r: r.normal(size=shape) * scale


def _u(lo, hi, shape=SHAPE):
    return lambda r: r.uniform(lo, hi, size=shape)


def _levels(bins, shape=SHAPE):
    def make(r):
        x = r.integers(0, bins, size=shape) / (bins - 1) * 2 - 1
        x.reshape(-1)[:2] = (-1.0, 1.0)  # both edge bins, always
        return x

    return make


def _binary(r):
    return (r.uniform(size=SHAPE) < 0.5).astype(np.float64)


def _wide_logits(r):
    # |logits| from 1e-4 to 10: both branches of the continuous-Bernoulli normaliser
    return r.choice([-1.0, 1.0], size=SHAPE) * 10 ** r.uniform(-4, 1, size=SHAPE)


def _pm(value):
    return lambda r: r.choice([-value, value], size=SHAPE)


def _args(*makers):
    return lambda r: tuple(m(r) for m in makers)


CASES = [
    Case("kl_normal_std", "kl_normal_std", _args(_n(1.5), _n(2.0)), diff=(0, 1)),
    Case(
        "kl_normal/broadcast",
        "kl_normal",
        _args(_n(), _n(), _n(shape=(1, 3, 4)), _n(shape=(1, 3, 4))),
        diff=(0, 1, 2, 3),
    ),
    Case("bernoulli/binary", "bernoulli_log_prob", _args(_n(4.0), _binary), diff=(0, 1)),
    Case("bernoulli/gray", "bernoulli_log_prob", _args(_n(4.0), _u(0, 1)), diff=(0, 1)),
    Case("gaussian", "gaussian_log_prob", _args(_n(), _n(), _n()), diff=(0, 1, 2)),
    Case("laplace", "laplace_log_prob", _args(_n(), _n(), _n()), diff=(0, 1, 2)),
    Case(
        "continuous_bernoulli",
        "continuous_bernoulli_log_prob",
        _args(_wide_logits, _u(0, 1)),
        diff=(0, 1),
    ),
    Case(
        "continuous_bernoulli_log_norm",
        "continuous_bernoulli_log_norm",
        _args(_wide_logits),
        diff=(0,),
    ),
    Case(
        "discretized_logistic",
        "discretized_logistic_log_prob",
        _args(_levels(256), _u(-1, 1), _u(-7, 3)),
        diff=(0, 1, 2),
    ),
    Case(
        "discretized_logistic/bins16",
        "discretized_logistic_log_prob",
        _args(_levels(16), _u(-1, 1), _u(-4, 1)),
        kwargs={"bins": 16},
        diff=(1, 2),
    ),
    Case(
        "discretized_logistic_log_mass",
        "discretized_logistic_log_mass",
        _args(_levels(256), _u(-1, 1), _u(-7, 3)),
        diff=(1, 2),
    ),
    Case("log_mean_exp/dim0", "log_mean_exp", _args(_n(30.0)), diff=(0,)),
    Case("log_mean_exp/dim1", "log_mean_exp", _args(_n(30.0)), kwargs={"dim": 1}, diff=(0,)),
    Case("iwae_bound", "iwae_bound", lambda r: (-500 + 20 * r.normal(size=(7, 5)),), diff=(0,)),
    Case("sum_event", "sum_event", _args(_n()), diff=(0,)),
    # extreme but legal inputs (DESIGN.md principle 4): finite, and still equal
    Case("extreme/bernoulli", "bernoulli_log_prob", _args(_pm(1e4), _binary), diff=(0,)),
    Case("extreme/kl_normal_std", "kl_normal_std", _args(_n(1e3), _pm(30.0)), diff=(0, 1)),
    Case(
        "extreme/continuous_bernoulli",
        "continuous_bernoulli_log_prob",
        _args(_pm(1e4), _u(0, 1)),
        diff=(0,),
    ),
    Case(
        "extreme/discretized_logistic",
        "discretized_logistic_log_prob",
        _args(_levels(256), _u(-1, 1), _pm(7.0)),
        diff=(1, 2),
    ),
]
CASE_IDS = [c.name for c in CASES]


def inputs(case: Case, dtype=np.float64, seed: int = 0) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a, dtype=dtype) for a in case.make(np.random.default_rng(seed)))


def torch_reference(case: Case, args: tuple[np.ndarray, ...]):
    """``(value, {position: gradient})`` from vaekit.functional and torch.autograd."""
    ts = [torch.tensor(a, requires_grad=i in case.diff) for i, a in enumerate(args)]
    out = getattr(VF, case.fn)(*ts, **case.kwargs)
    out.sum().backward()
    return out.detach().numpy(), {i: ts[i].grad.numpy() for i in case.diff}


def tolerances(dtype) -> dict:
    if np.dtype(dtype) == np.float64:
        return {"rtol": RTOL64, "atol": ATOL64}
    return {"rtol": RTOL32, "atol": ATOL32}


# ---------------------------------------------------------------- objectives

B, D, Z = 6, 12, 3


@dataclass(frozen=True)
class ObjectiveReference:
    """A float64 torch VAE (linear encoder and decoder), its z draws and its outputs.

    ``weights`` = (We [2Z, D], be [2Z], Wd [D, Z], bd [D]); ``eps`` ``[S, B, Z]`` is the noise
    the torch posterior drew, so ``z = mu + exp(logvar / 2) * eps`` reproduces its samples.
    """

    x: np.ndarray
    weights: tuple[np.ndarray, ...]
    eps: np.ndarray
    per_example: dict[str, np.ndarray]
    loss: float
    grads: tuple[np.ndarray, ...]


OBJECTIVES = {
    "elbo": lambda: ELBO(beta=0.7),
    "elbo/samples3": lambda: ELBO(beta=0.7, samples=3),
    "iwae/k5": lambda: IWAE(k=5),
}


def objective_reference(name: str, seed: int = 0) -> ObjectiveReference:
    objective = OBJECTIVES[name]()
    samples = objective.k if isinstance(objective, IWAE) else objective.samples
    torch.manual_seed(seed)
    model = vaekit.VAE(
        nn.Linear(D, 2 * Z),
        nn.Linear(Z, D),
        prior=priors.StandardNormal(Z),
        likelihood=likelihoods.Bernoulli(),
    ).double()
    x = torch.bernoulli(torch.full((B, D), 0.5, dtype=torch.float64))
    torch.manual_seed(seed + 1)
    out = objective(model, x)
    out.loss.backward()
    torch.manual_seed(seed + 1)
    eps = torch.randn(samples, B, Z, dtype=torch.float64)  # the draws of q.rsample((samples,))
    params = (model.encoder.weight, model.encoder.bias, model.decoder.weight, model.decoder.bias)
    return ObjectiveReference(
        x=x.numpy(),
        weights=tuple(p.detach().numpy().copy() for p in params),
        eps=eps.numpy(),
        per_example={k: v.detach().numpy() for k, v in out.per_example.items()},
        loss=out.loss.item(),
        grads=tuple(p.grad.numpy().copy() for p in params),
    )
