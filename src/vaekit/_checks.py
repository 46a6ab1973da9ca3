"""Argument checks shared by every module: one switch, clear messages.

Checks that look at tensor *values* (NaN, support) cost a device-to-host sync, so they
can be switched off in hot loops with :func:`validation` (the trainer validates its data
once at load time and then turns them off). Shape checks are free and always on.
"""

from __future__ import annotations

import contextlib
import difflib
import reprlib
from collections.abc import Iterable, Iterator

import torch

_ENABLED = True


def validation_enabled() -> bool:
    """Whether value checks (finite, support) run; shape checks always run."""
    return _ENABLED


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that turns value checks on or off (restored on exit).

    It also sets ``torch.distributions.Distribution``'s default ``validate_args``.
    """
    global _ENABLED
    old, old_torch = _ENABLED, torch.distributions.Distribution._validate_args
    _ENABLED = enabled
    torch.distributions.Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        _ENABLED = old
        torch.distributions.Distribution.set_default_validate_args(old_torch)


def _describe(t: torch.Tensor) -> str:
    finite = t[torch.isfinite(t)]
    rng = f"[{finite.min().item():.4g}, {finite.max().item():.4g}]" if finite.numel() else "none"
    return f"shape {tuple(t.shape)}, finite range {rng}"


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError if ``t`` holds NaN or Inf (when validation is on)."""
    if _ENABLED and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(
            f"{name} must be finite; received {n_nan} NaN and {n_inf} Inf values ({_describe(t)})"
        )


def check_range(name: str, t: torch.Tensor, low: float, high: float, hint: str = "") -> None:
    """Raise ValueError if ``t`` has values outside ``[low, high]`` or non-finite values."""
    if not _ENABLED:
        return
    check_finite(name, t)
    if t.numel() and bool(((t < low) | (t > high)).any()):
        msg = f"{name} must lie in [{low}, {high}]; received values in {_describe(t)}"
        raise ValueError(msg + (f". {hint}" if hint else ""))


def broadcast(**tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Broadcast named tensors together; a mismatch names the arguments and shapes."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    try:
        return tuple(torch.broadcast_tensors(*tensors.values()))
    except RuntimeError:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother = 60, 60


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a line: an error message never prints a huge (or alias-bombed
    YAML) value in full."""
    return _SHORT.repr(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    """Raise ValueError for a value not in ``choices``, with a "did you mean" suggestion."""
    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name} must be one of {choices}; received {short_repr(value)}{hint}")


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """Raise ValueError unless ``value`` is an integer >= ``minimum`` (bools refused); returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}")
    return value


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value > 0`` (or ``>= 0`` with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; received {value!r}")


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (``torch.autocast`` outputs) as float32; others unchanged.

    Log-densities, quantiser lookups and rounding run on the result: sums over hundreds of
    values and nearest-code distances are where bfloat16's 8-bit mantissa would show.
    """
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
