"""Discrete latents: Gumbel-softmax (concrete) categorical posteriors, their uniform prior,
and the joint continuous + discrete latent of JointVAE (Dupont 2018).

A categorical latent of M independent variables with C categories each is one
:class:`GumbelSoftmaxCategorical` with a flat event ``[M * C]`` (one-hot blocks), so the
decoder takes it like any code vector. It *is* the categorical distribution: ``log_prob`` is
the exact log-pmf of a one-hot value and the registered KL is the categorical KL. Only its
``rsample`` is relaxed while training (Jang et al. 2017, "Categorical reparameterization with
Gumbel-softmax"; Maddison et al. 2017, "The concrete distribution"):
``y = softmax((logits + g) / tau)``, g ~ Gumbel(0, 1), optionally made one-hot with a
straight-through gradient. In evaluation (``model.eval()``) the posterior draws exact one-hot
codes, so every sampled bound (ELBO, IWAE_K) is a bound on log p(x) of the discrete model.

KL registry (decided here): ``kl_divergence(GumbelSoftmaxCategorical, GumbelSoftmaxCategorical)``
is the KL between the categorical distributions, ``sum_m sum_c q log(q / p)`` nats (closed
form; ``sum_m [sum_c q log q + log C]`` to the uniform prior). It is *not* the KL between two
concrete densities (which has no closed form); a relaxed sample is trained with this KL of its
probabilities, as Jang et al. and Dupont do. No KL is registered for
``RelaxedOneHotCategorical``, whose densities are a different object.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, RelaxedOneHotCategorical
from torch.distributions.kl import kl_divergence, register_kl

from vaekit import functional as VF
from vaekit._checks import check_finite, full_precision, validation_enabled
from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import StandardNormal

__all__ = [
    "GumbelSoftmaxCategorical",
    "JointLatent",
    "GumbelSoftmax",
    "JointPosterior",
    "UniformCategorical",
    "JointPrior",
    "categorical_part",
    "has_categorical_latent",
    "cluster_accuracy",
    "category_codes",
    "category_rows",
    "evaluate_discrete",
]

Temperature = float | Callable[[int], float]
# joint codes (C ** M) up to which evaluate_discrete sums a discrete-only model out exactly
MAX_ENUMERATED = 1024


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}")
    return value


def _check_temperature(value: object) -> None:
    if callable(value):
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"temperature must be a finite number > 0 or a schedule step -> tau; received {value!r}"
        )


class GumbelSoftmaxCategorical(Distribution):
    """M independent categoricals over C categories, as one-hot blocks: event ``[M * C]``.

    ``log_prob(v) = sum_m log q_m(c_m)`` nats for a one-hot ``v`` (exact; a relaxed,
    non-one-hot value is a ValueError). ``rsample``: with ``relaxed`` the Gumbel-softmax sample
    ``softmax((logits + g) / temperature)`` (:class:`torch.distributions.RelaxedOneHotCategorical`),
    with ``hard`` also made one-hot by a straight-through estimator (the forward value
    ``one_hot(argmax y)``, the gradient of y); without ``relaxed`` an exact categorical draw
    (no gradient). ``mean``: the probabilities; ``mode``: the one-hot argmax.

    Args:
        logits: ``[..., M, C]`` unnormalised log-probabilities (batch shape ``[...]``).
        temperature: tau > 0 of the relaxation (unitless).
        hard: straight-through one-hot samples.
        relaxed: relaxed samples (training) or exact categorical draws (evaluation).
        uniform: the logits are all equal (the KL then uses the closed form to Uniform(C)).
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: float = 1.0,
        hard: bool = False,
        relaxed: bool = True,
        uniform: bool = False,
    ):
        if logits.dim() < 2 or logits.shape[-1] < 2:
            raise ValueError(
                "logits must have shape [..., M, C] with C >= 2 categories; received shape "
                f"{tuple(logits.shape)}"
            )
        _check_temperature(float(temperature))
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.variables, self.categories = int(logits.shape[-2]), int(logits.shape[-1])
        self.temperature, self.hard, self.relaxed = float(temperature), hard, relaxed
        self.uniform = uniform
        super().__init__(
            logits.shape[:-2], torch.Size([self.variables * self.categories]), validate_args=False
        )

    @property
    def probs(self) -> torch.Tensor:
        """q_mc, ``[..., M, C]``."""
        return self.logits.exp()

    @property
    def max_kl(self) -> float:
        """The largest KL to the uniform categorical: ``M log C`` nats (one-hot q)."""
        return self.variables * math.log(self.categories)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs.flatten(-2)

    @property
    def mode(self) -> torch.Tensor:
        index = self.logits.argmax(-1)
        return F.one_hot(index, self.categories).to(self.logits.dtype).flatten(-2)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        """``[*sample_shape, *batch, M * C]`` one-hot blocks (relaxed, straight-through or exact)."""
        sample_shape = torch.Size(sample_shape)
        if not self.relaxed:
            index = Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
            return F.one_hot(index, self.categories).to(self.logits.dtype).flatten(-2)
        tau = torch.tensor(self.temperature, dtype=self.logits.dtype, device=self.logits.device)
        y = RelaxedOneHotCategorical(tau, logits=self.logits, validate_args=False).rsample(
            sample_shape
        )
        if self.hard:
            hard = F.one_hot(y.argmax(-1), self.categories).to(y.dtype)
            y = hard - y.detach() + y  # forward: one-hot; backward: the relaxed sample's gradient
        return y.flatten(-2)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        v = value.unflatten(-1, (self.variables, self.categories))
        rounded = v.round()
        if bool(((v - rounded).abs() > 1e-4).any() | (rounded.sum(-1) != 1).any()):
            raise ValueError(
                "log_prob of a categorical latent needs one-hot codes; received a relaxed "
                "(Gumbel-softmax) sample, whose categorical probability is not defined. Train "
                "with the analytic KL (kl='analytic', the default for --posterior gumbel) or "
                "with hard=True; evaluation (model.eval()) draws exact one-hot codes"
            )
        return (v * self.logits).sum((-2, -1))

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum((-2, -1))


@register_kl(GumbelSoftmaxCategorical, GumbelSoftmaxCategorical)
def _kl_categorical(q: GumbelSoftmaxCategorical, p: GumbelSoftmaxCategorical) -> torch.Tensor:
    """KL between the categoricals, ``sum_m sum_c q_mc log(q_mc / p_mc)`` nats (see the module)."""
    if (q.variables, q.categories) != (p.variables, p.categories):
        raise ValueError(
            f"categorical latents of different shapes: q has {q.variables} x {q.categories}, "
            f"p has {p.variables} x {p.categories} (variables x categories)"
        )
    if p.uniform:
        return VF.kl_categorical_uniform(q.logits.reshape(-1, q.variables, q.categories)).reshape(
            q.batch_shape
        )
    qc = Categorical(logits=q.logits, validate_args=False)
    pc = Categorical(logits=p.logits, validate_args=False)
    return kl_divergence(qc, pc).sum(-1)


class JointLatent(Distribution):
    """q(z, c) = q(z) q(c): a continuous part (event ``[D]``) and a categorical part
    (:class:`GumbelSoftmaxCategorical`, event ``[M * C]``), concatenated: event ``[D + M * C]``.

    ``log_prob`` and ``entropy`` add the two parts' values (nats); the registered KL is
    ``KL(q(z) || p(z)) + KL(q(c) || p(c))``.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, continuous: Distribution, discrete: GumbelSoftmaxCategorical):
        if len(continuous.event_shape) != 1:
            raise ValueError(
                f"the continuous part must have a flat event [D]; received {tuple(continuous.event_shape)}"
            )
        self.continuous, self.discrete = continuous, discrete
        self.dim = int(continuous.event_shape[0])
        batch = torch.broadcast_shapes(continuous.batch_shape, discrete.batch_shape)
        event = torch.Size([self.dim + discrete.event_shape[0]])
        super().__init__(batch, event, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([self.continuous.mean, self.discrete.mean], -1)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        return torch.cat(
            [self.continuous.rsample(sample_shape), self.discrete.rsample(sample_shape)], -1
        )

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.continuous.log_prob(value[..., : self.dim]) + self.discrete.log_prob(
            value[..., self.dim :]
        )

    def entropy(self) -> torch.Tensor:
        return self.continuous.entropy() + self.discrete.entropy()


@register_kl(JointLatent, JointLatent)
def _kl_joint(q: JointLatent, p: JointLatent) -> torch.Tensor:
    """``KL(q(z) || p(z)) + KL(q(c) || p(c))`` nats: independent parts."""
    return kl_divergence(q.continuous, p.continuous) + kl_divergence(q.discrete, p.discrete)


class GumbelSoftmax(nn.Module):
    """q(c | x): ``variables`` independent categoricals over ``categories``, from an encoder
    output ``[..., M * C]`` of logits, as a :class:`GumbelSoftmaxCategorical`.

    ``temperature``: tau > 0, a number or a schedule ``step -> tau``
    (e.g. :class:`vaekit.schedules.Geometric`); the objective hands the optimizer step to
    :meth:`set_step` at every call (without a step, the schedule's ``final`` value). Training
    mode samples the relaxation (``hard``: straight-through one-hot); evaluation mode draws
    exact one-hot codes. Jang et al. (2017); Maddison et al. (2017).
    """

    def __init__(
        self,
        categories: int,
        variables: int = 1,
        temperature: Temperature = 0.67,
        hard: bool = False,
    ):
        super().__init__()
        self.categories = _count("categories", categories, 2)
        self.variables = _count("variables", variables, 1)
        _check_temperature(temperature)
        if not isinstance(hard, bool):
            raise ValueError(f"hard must be True or False; received {hard!r}")
        self.temperature, self.hard = temperature, hard
        self.step: int | None = None

    @property
    def features(self) -> int:
        """Encoder features it reads: ``M * C`` logits."""
        return self.variables * self.categories

    def set_step(self, step: int | None) -> None:
        """The optimizer step at which the temperature schedule is evaluated (None: its end)."""
        self.step = step

    def temperature_at(self, step: int | None = None) -> float:
        """tau at ``step`` (a schedule's ``final`` value for None)."""
        t = self.temperature
        if not callable(t):
            return float(t)
        return float(t(step) if step is not None else t.final)

    def forward(self, h: torch.Tensor) -> GumbelSoftmaxCategorical:
        if h.dim() < 1 or h.shape[-1] != self.features:
            raise ValueError(
                f"encoder output must have {self.features} = variables x categories "
                f"({self.variables} x {self.categories}) logits on its last axis; received shape "
                f"{tuple(h.shape)}"
            )
        if validation_enabled():
            check_finite("encoder output", h)
        h = full_precision(h)
        return GumbelSoftmaxCategorical(
            h.unflatten(-1, (self.variables, self.categories)),
            self.temperature_at(self.step),
            hard=self.hard,
            relaxed=self.training,
        )

    def extra_repr(self) -> str:
        return (
            f"categories={self.categories}, variables={self.variables}, "
            f"temperature={self.temperature!r}, hard={self.hard}"
        )


class JointPosterior(nn.Module):
    """q(z, c | x) = N(z; mean, diag e^logvar) q(c | x): JointVAE's posterior (Dupont 2018).

    Reads an encoder output ``[..., 2D + M * C]`` = ``[mean | logvar | logits]`` and returns
    a :class:`JointLatent` (event ``[D + M * C]``); the categorical part is a
    :class:`GumbelSoftmax` (temperature, ``hard``, training vs evaluation as there).
    """

    def __init__(
        self,
        latent_dim: int,
        categories: int,
        variables: int = 1,
        temperature: Temperature = 0.67,
        hard: bool = False,
    ):
        super().__init__()
        self.latent_dim = _count("latent_dim", latent_dim, 1)
        self.continuous = DiagonalGaussian()
        self.discrete = GumbelSoftmax(categories, variables, temperature, hard)

    @property
    def features(self) -> int:
        """Encoder features it reads: ``2D + M * C``."""
        return 2 * self.latent_dim + self.discrete.features

    def forward(self, h: torch.Tensor) -> JointLatent:
        if h.dim() < 1 or h.shape[-1] != self.features:
            raise ValueError(
                f"encoder output must have {self.features} = 2 x latent_dim + variables x "
                f"categories features [mean | logvar | logits]; received shape {tuple(h.shape)}"
            )
        d = 2 * self.latent_dim
        return JointLatent(self.continuous(h[..., :d]), self.discrete(h[..., d:]))


class UniformCategorical(nn.Module):
    """p(c) = prod_m Uniform(C): ``log p(c) = -M log C`` nats; samples are exact one-hot codes."""

    def __init__(self, categories: int, variables: int = 1):
        super().__init__()
        self.categories = _count("categories", categories, 2)
        self.variables = _count("variables", variables, 1)
        self.register_buffer("logits", torch.zeros(variables, categories), persistent=False)

    def forward(self) -> GumbelSoftmaxCategorical:
        return GumbelSoftmaxCategorical(self.logits, hard=True, relaxed=False, uniform=True)


class JointPrior(nn.Module):
    """p(z, c) = N(0, I_D) prod_m Uniform(C): JointVAE's prior, a :class:`JointLatent`."""

    def __init__(self, latent_dim: int, categories: int, variables: int = 1):
        super().__init__()
        self.continuous = StandardNormal(latent_dim)
        self.discrete = UniformCategorical(categories, variables)

    def forward(self) -> JointLatent:
        return JointLatent(self.continuous(), self.discrete())


# -- evaluation and figures --------------------------------------------------------------------


def categorical_part(d: Distribution) -> GumbelSoftmaxCategorical | None:
    """The categorical part of a latent distribution (itself, a joint latent's), else None."""
    if isinstance(d, GumbelSoftmaxCategorical):
        return d
    if isinstance(d, JointLatent):
        return d.discrete
    return None


def has_categorical_latent(model) -> bool:
    """Whether ``model.posterior`` is a :class:`GumbelSoftmax` or a :class:`JointPosterior`."""
    return isinstance(getattr(model, "posterior", None), GumbelSoftmax | JointPosterior)


def cluster_accuracy(codes, labels) -> float:
    """Unsupervised clustering accuracy, a fraction in [0, 1].

    ``max over one-to-one maps m of (1/N) sum_i [m(code_i) = label_i]``, the best matching of
    codes to labels by :func:`scipy.optimize.linear_sum_assignment` on the contingency table
    (with more codes than labels, the unmatched codes count as errors).
    """
    from scipy.optimize import linear_sum_assignment

    codes = torch.as_tensor(codes).long().reshape(-1)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if codes.shape != labels.shape or codes.numel() == 0:
        raise ValueError(
            f"codes and labels must be non-empty and of one length; received {codes.numel()} "
            f"and {labels.numel()}"
        )
    if int(codes.min()) < 0 or int(labels.min()) < 0:
        raise ValueError("codes and labels must be integers >= 0")
    table = torch.zeros(int(codes.max()) + 1, int(labels.max()) + 1, dtype=torch.long)
    table.index_put_((codes, labels), torch.ones_like(codes), accumulate=True)
    rows, cols = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table.numpy()[rows, cols].sum()) / codes.numel()


@torch.inference_mode()
def category_codes(model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """argmax_c q(c_m | x) of every example and categorical variable: ``[N, M]`` integers."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, x.shape[0], batch_size):
        q = categorical_part(model.encode(x[i : i + batch_size].to(device)))
        out.append(q.logits.argmax(-1).cpu())
    return torch.cat(out)


def _offset(prior: Distribution) -> int:
    return prior.dim if isinstance(prior, JointLatent) else 0


@torch.inference_mode()
def category_rows(model, n: int = 8) -> torch.Tensor:
    """E[x | z, c] for every category of the first categorical variable: ``[C, n, *x_shape]``.

    Row c sets variable 0 to category c; column j shares one draw of the rest of the code (the
    continuous z ~ N(0, I) of a joint latent, the other variables ~ uniform; seed with
    ``torch.manual_seed``) across rows, so a row shows what category c does to the same codes.
    With nothing else in the code (one variable, no continuous part) each row is one image.
    """
    was_training = model.training
    model.eval()
    try:
        prior = model.prior()
        cat = categorical_part(prior)
        if cat is None:
            raise ValueError("category_rows needs a model with a categorical latent")
        off, c = _offset(prior), cat.categories
        if off == 0 and cat.variables == 1:
            n = 1
        device = next(model.parameters()).device
        z = prior.sample((n,)).to(device)
        rows = z.repeat(c, 1)  # [C * n, dim]
        rows[:, off : off + c] = torch.eye(c, dtype=z.dtype, device=device).repeat_interleave(n, 0)
        x = model.decode(rows).mean
        return x.reshape(c, n, *x.shape[1:])
    finally:
        model.train(was_training)


@torch.inference_mode()
def _enumerated(model, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Exact ``-mean log p(x)`` and ELBO (nats) of a discrete-only model: every code summed out."""
    prior = model.prior()
    m, c = prior.variables, prior.categories
    grid = torch.cartesian_prod(*[torch.arange(c)] * m).reshape(-1, m)  # [K, M]
    device = next(model.parameters()).device
    codes = F.one_hot(grid, c).to(x.dtype).flatten(-2).to(device)  # [K, M * C]
    log_pc = prior.log_prob(codes)  # [K]
    log_px, elbo = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device)
        k = codes.shape[0]
        px = model.decode(codes.unsqueeze(1).expand(k, xb.shape[0], -1))
        log_lik = px.log_prob(xb)  # [K, B]
        q = model.encode(xb)
        log_q = q.log_prob(codes.unsqueeze(1))  # [K, B]
        log_px.append(torch.logsumexp(log_lik + log_pc.unsqueeze(1), 0).cpu())
        weights = log_q.exp()
        elbo.append((weights * (log_lik + log_pc.unsqueeze(1) - log_q)).sum(0).cpu())
    return -torch.cat(log_px).mean().item(), torch.cat(elbo).mean().item()


@torch.inference_mode()
def evaluate_discrete(
    model, x: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 100
) -> dict:
    """The categorical code's numbers for ``eval.json`` (floats; nats where stated).

    ``categories``, ``discrete_variables``, ``category_counts`` (how many examples have each
    argmax category of variable 0); with ``labels``, ``cluster_accuracy`` of that argmax
    (:func:`cluster_accuracy`); for a discrete-only model with at most ``MAX_ENUMERATED``
    joint codes, ``nll_enumerated`` = ``-mean log sum_c p(x|c) p(c)`` and ``elbo_enumerated``
    = ``mean sum_c q(c|x) [log p(x|c) p(c) - log q(c|x)]``, both exact (no sampling).
    """
    was_training = model.training
    model.eval()
    try:
        codes = category_codes(model, x)
        prior = model.prior()
        cat = categorical_part(prior)
        out = {
            "categories": cat.categories,
            "discrete_variables": cat.variables,
            "category_counts": torch.bincount(codes[:, 0], minlength=cat.categories).tolist(),
        }
        if labels is not None:
            out["cluster_accuracy"] = cluster_accuracy(codes[:, 0], labels)
        if isinstance(prior, GumbelSoftmaxCategorical) and cat.categories**cat.variables <= (
            MAX_ENUMERATED
        ):
            out["nll_enumerated"], out["elbo_enumerated"] = _enumerated(model, x, batch_size)
        return out
    finally:
        model.train(was_training)
