"""Where data lives: the cache directory, safe path joins, checksums, the missing-data error."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk; the message names the command that fetches it."""


def data_dir() -> Path:
    """The data cache directory (not created).

    Returns:
        ``$VAEKIT_DATA`` if set, else the platform cache directory: ``$XDG_CACHE_HOME/vaekit``
        or ``~/.cache/vaekit`` on Linux, ``~/Library/Caches/vaekit`` on macOS,
        ``%LOCALAPPDATA%\\vaekit`` on Windows.
    """
    if os.environ.get("VAEKIT_DATA"):
        return Path(os.environ["VAEKIT_DATA"]).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaekit"


def resolve_data_path(
    root: str | os.PathLike, name: str | os.PathLike, *, what: str = "name"
) -> Path:
    """Join a data file name onto ``root``, refusing relative names that climb out of it.

    Args:
        root: the data directory.
        name: a file or folder name, e.g. from a config file. Absolute names are taken as
            they are (the user chose them); relative names must stay inside ``root``.
        what: how the error message calls ``name`` (e.g. ``"data_root"``).

    Returns:
        The joined, normalised path.

    Raises:
        ValueError: a relative ``name`` escapes ``root`` through ``..``.
    """
    root = Path(os.path.normpath(root))
    if Path(name).is_absolute():
        return Path(os.path.normpath(name))
    # Lexical check on purpose: resolving symlinks would reject a data dir that is itself a
    # link to another disk, and ``..`` is the escape a config file can actually express.
    path = Path(os.path.normpath(root / name))
    # Compared as absolute paths: a relative root ("." or "..", e.g. VAEKIT_DATA=.) has no
    # leading parts to compare, so "../x" would pass a purely relative comparison.
    if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        raise ValueError(
            f"{what} must be a path inside the data directory {str(root)!r}; "
            f"received {str(name)!r}, which resolves to {str(path)!r}"
        )
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_hint(name: str) -> str:
    """The sentence every missing-data error ends with."""
    return f"Fetch it with: vaekit data fetch {name}  (or vaekit.data.fetch({name!r}) in Python)"
