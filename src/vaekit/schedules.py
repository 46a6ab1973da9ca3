"""beta schedules: stateless callables ``step -> float``, kept outside the model.

``step`` counts optimizer steps from 0; a schedule given in epochs needs the number of
steps per epoch. Any of them can be used by the trainer or by a hand-written loop:
``objective(model, x, beta=schedule(step))``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Constant", "LinearWarmup"]


@dataclass(frozen=True)
class Constant:
    """beta(step) = value."""

    value: float = 1.0

    def __call__(self, step: int) -> float:
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

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return float(self.value)
        return float(self.value) * min(1.0, step / self.steps)
