"""Writing files so that a reader, a crash or a full disk never leaves half of one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_text", "atomic_path"]


def atomic_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before its rename to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary name and a rename: a reader (or a crash)
    never sees half a file; the temporary is removed if the write fails (a full disk)."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
