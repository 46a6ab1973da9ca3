"""Schedules: stateless callables ``step -> float`` for a weight that varies with training.

``step`` counts optimizer steps from 0; a schedule given in epochs needs the number of
steps per epoch. An objective holds its schedules (``ELBO(beta=LinearWarmup(1.0, 5000))``)
and evaluates them at the ``step`` of its call: ``objective(model, x, step=step)``; without
a step (evaluation) it uses each schedule's ``final`` value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Constant", "LinearWarmup", "Cyclical", "Capacity", "Geometric"]


@dataclass(frozen=True)
class Constant:
    """beta(step) = value."""

    value: float = 1.0

    def __call__(self, step: int) -> float:
        return float(self.value)

    @property
    def final(self) -> float:
        """The value the schedule ends at (used when no step is given)."""
        return float(self.value)


@dataclass(frozen=True)
class LinearWarmup:
    """beta(step) = value * min(1, step / steps): linear KL warm-up (Bowman et al. 2016).

    The VampPrior paper (Tomczak & Welling 2018) warms up over 100 epochs:
    ``LinearWarmup(1.0, steps=100 * steps_per_epoch)``. ``steps=0`` means no warm-up.
    """

    value: float = 1.0
    steps: int = 0

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0; received {self.steps}")

    @property
    def final(self) -> float:
        """The value the schedule ends at (used when no step is given)."""
        return float(self.value)

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return float(self.value)
        return float(self.value) * min(1.0, step / self.steps)


@dataclass(frozen=True)
class Cyclical:
    """beta(step) = value * min(1, (step mod period) / (ratio * period)): cyclical annealing.

    Each period starts at beta = 0, rises linearly to ``value`` over its first
    ``ratio * period`` steps and stays there for the rest (Fu et al. 2019, "Cyclical
    annealing schedule", with M cycles of T steps in all: ``period = T / M``, ``ratio = R``).
    ``Cyclical(1.0, period=n, ratio=1.0)`` is a saw-tooth; ``LinearWarmup(1.0, steps=r * n)``
    is its first cycle.
    """

    value: float = 1.0
    period: int = 1
    ratio: float = 0.5

    def __post_init__(self):
        if isinstance(self.period, bool) or not isinstance(self.period, int) or self.period < 1:
            raise ValueError(f"period must be an integer >= 1; received {self.period!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1]; received {self.ratio!r}")
        if self.value < 0:
            raise ValueError(f"value must be >= 0; received {self.value!r}")

    @property
    def final(self) -> float:
        """The value the schedule ends at (used when no step is given)."""
        return float(self.value)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0; received {step!r}")
        return float(self.value) * min(1.0, (step % self.period) / (self.ratio * self.period))


@dataclass(frozen=True)
class Capacity:
    """C(step) = c_max * min(1, step / steps) nats: the KL target of capacity annealing.

    Burgess et al. (2018), "Understanding disentangling in beta-VAE": the KL is pulled
    towards C, raised linearly from 0 to ``c_max`` over ``steps`` optimizer steps (25 nats
    over 100,000 iterations for dSprites). ``steps=0`` means C = ``c_max`` from the start.
    Used by :class:`vaekit.objectives.CapacityELBO`.
    """

    c_max: float = 25.0
    steps: int = 100_000

    def __post_init__(self):
        if not (
            isinstance(self.c_max, int | float) and math.isfinite(self.c_max) and self.c_max >= 0
        ):
            raise ValueError(f"c_max must be a finite number of nats >= 0; received {self.c_max!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0; received {self.steps!r}")

    @property
    def final(self) -> float:
        """C_max, nats (used when no step is given)."""
        return float(self.c_max)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0; received {step!r}")
        if self.steps == 0:
            return float(self.c_max)
        return float(self.c_max) * min(1.0, step / self.steps)


@dataclass(frozen=True)
class Geometric:
    """tau(step) = start * (end / start) ** min(1, step / steps): geometric (exponential) annealing.

    The Gumbel-softmax temperature schedule of Jang et al. (2017), ``tau = max(end,
    start * exp(-r step))`` with ``r = ln(start / end) / steps``: from ``start`` at step 0 to
    ``end`` at ``steps`` and after. ``steps=0`` means ``end`` from the start. Unitless.
    """

    start: float = 1.0
    end: float = 0.5
    steps: int = 0

    def __post_init__(self):
        for name in ("start", "end"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0; received {v!r}")
            if v <= 0:
                raise ValueError(f"{name} must be a finite number > 0; received {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0; received {self.steps!r}")

    @property
    def final(self) -> float:
        """The value at the end of the annealing (used when no step is given)."""
        return float(self.end)

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0; received {step!r}")
        if self.steps == 0:
            return float(self.end)
        frac = min(1.0, step / self.steps)
        return float(self.start) * (float(self.end) / float(self.start)) ** frac
