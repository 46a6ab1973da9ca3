"""Checkpoints that survive crashes: atomic writes, safe loads, clear errors."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, unsafe or from another model."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A crash at any moment leaves either the previous checkpoint or the new one, never a
    partial file. On failure (full disk, read-only folder) the temp file is removed and
    the previous checkpoint is untouched; the error names the path.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)  # left by a process killed mid-write
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        previous = (
            "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        )
        raise OSError(
            e.errno, f"could not write checkpoint {path} ({e.strerror}); {previous}"
        ) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    Raises :class:`CheckpointError` (a ValueError) for a missing, truncated or corrupted
    file, or one that holds pickled objects (which are never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if zipfile.is_zipfile(path):
            _check_crc(path)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data and was "
            f"refused (weights_only=True): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever the unpickler raises on garbage bytes
        # first sentence only: torch goes on to suggest weights_only=False, which is unsafe
        reason = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        if not isinstance(e, RuntimeError | EOFError | zipfile.BadZipFile | OSError):
            reason = f"{type(e).__name__}: {reason}"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {reason}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a vaekit checkpoint (no 'model' entry)")
    return state


def _check_crc(path: Path) -> None:
    """Read every record of a torch zip checkpoint so zipfile checks its CRC-32.

    torch.load does not verify checksums: flipped bytes inside a tensor load as wrong
    weights. Records with CRC 0 are skipped (``torch.serialization.set_crc32_options(False)``).
    """
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.CRC == 0:
                continue
            with zf.open(info) as member:  # raises BadZipFile on a CRC mismatch at the end
                while member.read(1 << 20):
                    pass


def state_dict_mismatch(error: RuntimeError) -> str:
    """A one-line summary of ``load_state_dict``'s error: the keys and shapes that differ."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    summary = " ".join(lines) or str(error)
    return summary if len(summary) <= 400 else summary[:400] + " ..."
