"""Progress bars that also behave in logs: live on a terminal, a line every 30 s otherwise."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm`` with vaekit's defaults; ``enabled=False`` gives a silent bar."""
    tty = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if tty else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)
