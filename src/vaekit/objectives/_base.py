"""The objective contract: one base class, one call, one output type, one registry.

Every objective is an :class:`Objective` (an ``nn.Module``; a stateless one simply has no
parameters or buffers) called as ``objective(model, x, *, y=None, step=None) -> LossOutput``.
``step`` is the global optimizer step (None: evaluation, schedules at their final value), ``y``
the batch's labels (None when the data have none). A time-varying weight (beta, a capacity,
a temperature) is a schedule held by the objective (a plain number is a constant); the weights
in effect are reported in ``LossOutput.metrics``. Each objective registers its CLI name and
its hyperparameters (defaults, units, one line of help) with :func:`register`;
:func:`vaekit.models.build.build_objective` is a lookup in :data:`OBJECTIVES`.

Units (DESIGN.md): every per-example term is in nats, shape ``[B]``; ``reduction`` acts on the
batch axis only. ``bound`` is the lower bound on log p(x) that the objective estimates,
``rec = -E_q[log p(x|z)]`` (positive), ``kl = KL(q(z|x) || p(z))``, ``loss`` what is minimised.
"""

from __future__ import annotations

import functools
import inspect
import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution, Independent, kl_divergence

from vaekit._checks import check_choice, check_positive, short_repr
from vaekit.outputs import LossOutput

__all__ = [
    "LossOutput",
    "Objective",
    "Param",
    "ObjectiveSpec",
    "OBJECTIVES",
    "register",
    "weight_at",
    "analytic_kl",
    "log_weights",
    "rec_kl",
]

REDUCTIONS = ("mean", "sum", "none")


# -- weights that may be schedules ----------------------------------------------------------


def weight_at(value: float | Callable[[int], float], step: int | None) -> float:
    """A weight's value at ``step``: a number is a constant; a schedule ``step -> float`` is called.

    ``step=None`` (evaluation) takes a schedule's ``final`` value (every schedule of
    :mod:`vaekit.schedules` has one); a plain callable without ``final`` needs a step.
    """
    if not callable(value):
        return float(value)
    if step is not None:
        return float(value(step))
    final = getattr(value, "final", None)
    if final is None:
        raise ValueError(
            f"the schedule {value!r} has no 'final' value: pass step= to the objective's call"
        )
    return float(final)


def check_weight(name: str, value: Any) -> None:
    """A weight is a finite number >= 0, or a schedule (a callable ``step -> float``)."""
    if callable(value):
        return
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number or a schedule; received {value!r}")
    check_positive(name, value, allow_zero=True)


_STEP_TAKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def deliver_step(model, step: int | None) -> None:
    """Hand ``step`` to the model parts that hold a schedule of their own (a Gumbel-softmax
    temperature): every submodule with a ``set_step(step)`` method. Called by every
    objective's call, so the trainer passes the step once, to the objective.

    The parts are looked up once per model (on its first call, then remembered: a training
    step does not walk the module tree again) and again whenever its number of direct
    children changes."""
    if not isinstance(model, nn.Module):
        return
    known = _STEP_TAKERS.get(model)
    if known is None or known[0] != len(model._modules):
        takers = tuple(m for m in model.modules() if getattr(type(m), "set_step", None))
        known = (len(model._modules), takers)
        _STEP_TAKERS[model] = known
    for m in known[1]:
        type(m).set_step(m, step)


# -- the base class -------------------------------------------------------------------------


class Objective(nn.Module):
    """Base of every objective: ``objective(model, x, *, y=None, step=None) -> LossOutput``.

    Subclasses implement :meth:`forward` with exactly that signature and list in ``weights``
    the names of their hyperparameters that may be schedules; :meth:`weights_at` evaluates
    them and the shared :meth:`_output` reports them in ``metrics``. The constructor's
    arguments are recorded (``hparams``) for ``repr``, :meth:`replace` and the run config.
    """

    name: ClassVar[str] = ""  # the CLI name, set by register()
    weights: ClassVar[tuple[str, ...]] = ()  # hyperparameters that may be schedules
    min_batch: ClassVar[int] = 1  # examples a training call needs (batch statistics need 2)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if "_hparams" not in self.__dict__:  # the outermost constructor records its call
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                args_ = dict(bound.arguments)
                args_.pop("self", None)
                self.__dict__["_hparams"] = args_
            init(self, *args, **kw)

        cls.__init__ = recording_init

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments, defaults filled in."""
        return dict(self.__dict__.get("_hparams", {}))

    def replace(self, **changes: Any) -> Objective:
        """A new objective of the same class with some hyperparameters changed."""
        return type(self)(**{**self.hparams, **changes})

    def __call__(self, model, *args, **kwargs) -> LossOutput:
        deliver_step(model, kwargs.get("step"))
        return super().__call__(model, *args, **kwargs)

    def forward(
        self, model, x: torch.Tensor, *, y: torch.Tensor | None = None, step: int | None = None
    ) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights_at(self, step: int | None) -> dict[str, float]:
        """Every weight in effect at ``step`` (schedules evaluated), by name."""
        return {name: weight_at(getattr(self, name), step) for name in self.weights}

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.hparams.items() if not isinstance(v, nn.Module)}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())

    def _output(
        self,
        per_example_loss: torch.Tensor,
        *,
        bound: torch.Tensor,
        rec: torch.Tensor,
        kl: torch.Tensor,
        bound_name: str = "elbo",
        terms: Mapping[str, torch.Tensor] | None = None,
        metrics: Mapping[str, Any] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> LossOutput:
        """The one ``LossOutput`` builder of every family (nats, ``[B]`` each).

        ``per_example``: ``bound``, ``rec``, ``kl``, ``loss`` and the extra ``terms``; a sampled
        bound (``bound_name`` other than ``"elbo"``) also reports ``elbo = -rec - kl`` over the
        same draws. ``metrics``: batch means of those (the bound under ``bound_name``), the
        extra scalar ``metrics`` and the ``weights`` in effect.
        """
        terms = dict(terms or {})
        per_example = {"bound": bound, "rec": rec, "kl": kl}
        elbo = bound if bound_name == "elbo" else -rec - kl
        if bound_name != "elbo":
            per_example["elbo"] = elbo
        per_example["loss"] = per_example_loss
        per_example.update(terms)
        names = ["loss", bound_name, *(["elbo"] if bound_name != "elbo" else []), "rec", "kl"]
        names += list(terms)
        values = [per_example_loss, bound, *([elbo] if bound_name != "elbo" else []), rec, kl]
        values += list(terms.values())
        means = _batch_means(names, values)
        means.update({k: torch.as_tensor(v).detach() for k, v in (metrics or {}).items()})
        means.update({k: self._weight_tensor(k, v) for k, v in (weights or {}).items()})
        return LossOutput(_reduce(per_example_loss, self.reduction), per_example, means)

    def _weight_tensor(self, name: str, value: float) -> torch.Tensor:
        """``value`` as a 0-dim tensor, reused while the weight stays the same (read-only)."""
        cache = self.__dict__.setdefault("_weight_tensors", {})
        value = float(value)
        hit = cache.get(name)
        if hit is None or hit[0] != value:
            hit = cache[name] = (value, torch.tensor(value))
        return hit[1]


def _batch_means(names: list[str], values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached batch means of per-example tensors, by name: one stacked reduction when the
    tensors share shape and dtype (the training step's common case), else one mean each."""
    first = values[0]
    if first.dim() > 0 and all(v.shape == first.shape and v.dtype == first.dtype for v in values):
        with torch.no_grad():
            stacked = torch.stack(values).flatten(1).mean(1)
        return dict(zip(names, stacked.unbind(0), strict=True))
    return {k: v.detach().mean() for k, v in zip(names, values, strict=True)}


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


# -- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One hyperparameter of an objective as the CLI and ``config.yaml`` spell it.

    ``name``: the config key / flag (``--name-with-dashes``); ``arg``: the constructor's
    argument when it differs; ``type``: ``int | float | str``; ``units``: stated in the help;
    ``choices``: the allowed strings; ``optional``: None is allowed (means what ``help`` says).
    """

    name: str
    default: Any
    help: str
    type: type = float
    units: str = ""
    choices: tuple[str, ...] | None = None
    arg: str | None = None
    optional: bool = False
    low: float | None = None  # the smallest value allowed (checked in the config)

    @property
    def argument(self) -> str:
        return self.arg or self.name

    def coerce(self, value: Any, objective: str) -> Any:
        """``value`` as this parameter's type; ValueError naming the objective and the key."""
        if value is None and self.optional:
            return None
        try:
            if value is None or isinstance(value, bool) or isinstance(value, list | dict):
                raise TypeError
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise TypeError
                value = int(value)
            elif self.type is float:
                value = float(value)
                if not math.isfinite(value):
                    raise TypeError
            else:
                value = str(value)
        except (TypeError, ValueError, OverflowError):
            want = "a finite number" if self.type is float else self.type.__name__
            raise ValueError(
                f"objective {objective!r}: config key {self.name!r} expects {want}"
                f"{' or null' if self.optional else ''}; received {short_repr(value)}"
            ) from None
        if self.low is not None and not value >= self.low:
            what = (
                f"{self.name} must be an integer >= {self.low}"
                if self.type is int
                else f"config key {self.name!r} must be >= {self.low}"
            )
            raise ValueError(f"objective {objective!r}: {what}; received {value!r}")
        if self.choices is not None:
            check_choice(self.name, value, self.choices)
        return value

    def describe(self) -> str:
        units = f" [{self.units}]" if self.units else ""
        return f"--{self.name.replace('_', '-')} {self.default!r}{units}: {self.help}"


# beta schedules, for objectives whose beta may vary with the step (ELBO-type KL weights)
SCHEDULE_PARAMS = (
    Param(
        "schedule",
        "warmup",
        "beta schedule: warmup (linear 0 -> beta over warmup_epochs) | constant | cyclical",
        type=str,
        choices=("warmup", "constant", "cyclical"),
    ),
    Param(
        "warmup_epochs", 0.0, "linear warm-up of beta over this many epochs", units="epochs", low=0
    ),
    Param("cycles", 4, "cyclical: cycles over the whole run", type=int, low=1),
    Param("cycle_ratio", 0.5, "cyclical: share of each cycle spent rising 0 -> beta"),
)

# KL estimator of the ELBO-based objectives: auto = analytic where the pair has a closed form
KL_PARAM = Param(
    "kl",
    "auto",
    "auto (analytic where the kl_divergence registry has a closed form) | analytic | mc",
    type=str,
    choices=("auto", "analytic", "mc"),
)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its CLI name, class, hyperparameters and what the builder supplies.

    ``context``: constructor arguments that come from the run, not from the config
    (``dataset_size``, ``latent_dim``, ``features``); ``schedule``: the name of the weight that
    the beta-schedule keys (``SCHEDULE_PARAMS``) drive, if any; ``models``: the model kinds it
    trains (None: every kind with q(z|x) and p(z)).
    """

    name: str
    cls: type
    summary: str
    params: tuple[Param, ...]
    context: tuple[str, ...] = ()
    schedule: str | None = None
    models: tuple[str, ...] | None = None
    required: tuple[str, ...] = ()

    @property
    def all_params(self) -> tuple[Param, ...]:
        return self.params + (SCHEDULE_PARAMS if self.schedule else ())

    def param(self, name: str) -> Param:
        for p in self.all_params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.all_params}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``given``; a key this objective does not take is a ValueError."""
        names = [p.name for p in self.all_params]
        unknown = [k for k in given if k not in names]
        if unknown:
            raise ValueError(
                f"objective {self.name!r} does not use {', '.join(repr(k) for k in unknown)}; "
                f"its fields are: {', '.join(names) or '(none)'}"
            )
        out = self.defaults()
        for k, v in given.items():
            out[k] = self.param(k).coerce(v, self.name)
        for k in self.required:
            if out[k] is None:
                p = self.param(k)
                raise ValueError(
                    f"objective {self.name!r} needs --{k.replace('_', '-')}: {p.help}"
                    f"{f' ({p.units})' if p.units else ''}"
                )
        return out


OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register(
    name: str,
    *,
    summary: str,
    params: tuple[Param, ...] = (),
    context: tuple[str, ...] = (),
    schedule: str | None = None,
    models: tuple[str, ...] | None = None,
    required: tuple[str, ...] = (),
):
    """Class decorator: register an :class:`Objective` under its CLI ``name``.

    ``params`` are its config/CLI hyperparameters with defaults (see :class:`Param`); the
    builder calls ``cls(**params, **context)`` (:func:`build_from_spec`).
    """

    def decorate(cls: type) -> type:
        if name in OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        cls.name = name
        OBJECTIVES[name] = ObjectiveSpec(
            name, cls, summary, tuple(params), tuple(context), schedule, models, required
        )
        return cls

    return decorate


# -- the shared pass: log-densities of S draws z ~ q(z|x) --------------------------------------


def describe(d: Distribution) -> str:
    """``Independent(Normal, 1)``-style name of a distribution, for error messages."""
    if isinstance(d, Independent):
        return f"Independent({describe(d.base_dist)}, {d.reinterpreted_batch_ndims})"
    return type(d).__name__


def analytic_kl(q: Distribution, p: Distribution, per_dim: bool = False) -> torch.Tensor:
    """KL(q || p) from the ``torch.distributions`` registry, nats ``[B]`` (``[B, D]`` with ``per_dim``).

    ``per_dim`` returns the terms of a factorised pair before the sum over latents (both
    ``Independent``); a pair without a registered closed form raises ``ValueError``.
    """
    try:
        if per_dim:
            if not (isinstance(q, Independent) and isinstance(p, Independent)):
                raise NotImplementedError
            return kl_divergence(q.base_dist, p.base_dist)
        return kl_divergence(q, p)
    except NotImplementedError:
        what = "per-dimension" if per_dim else "analytic"
        raise ValueError(
            f"there is no {what} KL for the pair ({describe(q)}, {describe(p)}) in the "
            "torch.distributions kl_divergence registry; use kl='mc' (a Monte Carlo estimate) "
            "or register a closed form with torch.distributions.kl.register_kl"
        ) from None


class Terms:
    """Log-densities of S samples z_s ~ q(z|x), each ``[S, B]`` nats, computed on first use.

    Lazy, so an analytic-KL ELBO never pays for log q and log p of the samples.
    """

    def __init__(self, model, x: torch.Tensor, out, stop_q: bool):
        self._model, self._x, self.out, self._stop_q = model, x, out, stop_q

    @functools.cached_property
    def log_px(self) -> torch.Tensor:
        """log p(x | z_s)."""
        return self.out.likelihood.log_prob(self._x)

    @functools.cached_property
    def log_pz(self) -> torch.Tensor:
        """log p(z_s)."""
        return self.out.prior.log_prob(self.out.z)

    @functools.cached_property
    def log_qz(self) -> torch.Tensor:
        """log q(z_s | x), with q's parameters detached when ``stop_q``."""
        q = self.out.posterior
        if self._stop_q:
            detached = getattr(self._model, "detached_posterior", None)
            q = (
                detached(self.out)
                if detached is not None
                else self._model.posterior(self.out.encoder_out.detach())
            )
        return q.log_prob(self.out.z)

    @property
    def log_w(self) -> torch.Tensor:
        """Log importance weights ``log p(x, z_s) - log q(z_s | x)``, ``[S, B]``."""
        return self.log_px + self.log_pz - self.log_qz


def log_weights(
    model, x: torch.Tensor, samples: int, stop_q: bool = False, prior: Distribution | None = None
) -> Terms:
    """One pass of ``model`` and the log-densities that every sampled bound is built from.

    ``stop_q=True`` evaluates log q(z|x) with q's parameters detached (z keeps its
    reparameterisation path): the "sticking the landing" form (Roeder et al. 2017).
    ``prior``: a p(z) built once by the caller (see :meth:`vaekit.VAE.forward`).
    """
    _check_vaekit_model(type(model))
    out = model(x, samples=samples) if prior is None else model(x, samples=samples, prior=prior)
    return Terms(model, x, out, stop_q)


@functools.lru_cache(maxsize=64)
def _check_vaekit_model(kind: type) -> None:
    """A model whose ``forward`` takes no ``samples=`` (a user's own VAE) is refused with the fix."""
    try:
        params = inspect.signature(kind.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return
    if "samples" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    raise ValueError(
        f"model must be a vaekit model, whose forward(x, samples=S) returns a VAEOutput; received "
        f"a {kind.__name__} whose forward{inspect.signature(kind.forward)} has no samples=. Wrap "
        "your parts: vaekit.VAE(model.encode, model.decode, prior=StandardNormal(D), "
        "posterior=DiagonalGaussian(param='logvar' or 'scale'), likelihood=Bernoulli(probs=True) "
        "for a decoder ending in a sigmoid)"
    )


def rec_kl(t: Terms, kl: str = "analytic") -> tuple[torch.Tensor, torch.Tensor]:
    """The two ELBO terms of one pass, nats ``[B]``: ``rec = -mean_s log p(x | z_s)`` and the KL.

    ``kl="analytic"``: KL(q(z|x) || p(z)) from the registry (:func:`analytic_kl`);
    ``kl="mc"``: ``mean_s [log q(z_s|x) - log p(z_s)]`` over the same draws. Every
    ELBO-based objective starts here.
    """
    rec = -t.log_px.mean(0)
    if kl == "analytic":
        return rec, analytic_kl(t.out.posterior, t.out.prior)
    return rec, (t.log_qz - t.log_pz).mean(0)


# -- from a config section to an objective ----------------------------------------------------


def beta_schedule(value: float, values: Mapping[str, Any], context: Mapping[str, Any]):
    """The schedule ``step -> weight`` that the ``SCHEDULE_PARAMS`` keys of ``values`` describe.

    ``warmup``: linear from 0 to ``value`` over ``warmup_epochs`` epochs (0 epochs: constant);
    ``constant``; ``cyclical``: ``cycles`` cycles over the whole run (Fu et al. 2019). Epochs are
    converted with the run's ``steps_per_epoch`` (and ``epochs``) from ``context``.
    """
    from vaekit.schedules import Constant, Cyclical, LinearWarmup

    kind = values["schedule"]
    if kind == "constant" or (kind == "warmup" and not values["warmup_epochs"]):
        return Constant(value) if kind == "constant" else value
    steps_per_epoch = context.get("steps_per_epoch")
    if not steps_per_epoch:
        raise ValueError(
            f"schedule {kind!r} is given in epochs: the builder needs steps_per_epoch "
            "(build_objective(..., steps_per_epoch=N, epochs=E))"
        )
    if kind == "cyclical":
        epochs = context.get("epochs")
        if not epochs:
            raise ValueError("schedule 'cyclical' spans the run: the builder needs epochs")
        total = int(epochs) * int(steps_per_epoch)
        return Cyclical(
            value, period=max(1, total // values["cycles"]), ratio=values["cycle_ratio"]
        )
    return LinearWarmup(value, round(values["warmup_epochs"] * steps_per_epoch))


def build_from_spec(
    spec: ObjectiveSpec, values: Mapping[str, Any], context: Mapping[str, Any]
) -> Objective:
    """``spec.cls`` built from resolved config ``values`` and the run's ``context``.

    ``kl="auto"`` becomes ``"analytic"`` when ``context["analytic_kl"]`` (the pair of q and p
    has a closed form) and ``"mc"`` otherwise; the schedule keys become a schedule of
    ``spec.schedule``; ``spec.context`` arguments come from ``context`` (a missing one is an
    error naming it).
    """
    kwargs: dict[str, Any] = {}
    for p in spec.params:
        value = values[p.name]
        if p.name == "kl" and value == "auto":
            value = "analytic" if context.get("analytic_kl", True) else "mc"
        kwargs[p.argument] = value
    if spec.schedule:
        kwargs[spec.schedule] = beta_schedule(kwargs[spec.schedule], values, context)
    for name in spec.context:
        if context.get(name) is None:
            raise ValueError(f"objective {spec.name!r} needs {name}; received None")
        kwargs[name] = context[name]
    return spec.cls(**kwargs)
