"""The cyclical beta schedule, for the JAX and Keras interop (pure Python, no framework).

Same contract as :mod:`vaekit.schedules`: a frozen dataclass, a stateless callable
``step -> float``. :class:`vaekit.interop.keras.BetaSchedule` calls it with the epoch index.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cyclical"]


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

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0; received {step!r}")
        return float(self.value) * min(1.0, (step % self.period) / (self.ratio * self.period))
