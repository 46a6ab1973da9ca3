"""The run folder: config, metrics log, TensorBoard and checkpoints, written by rank 0 only.

One small class so the trainer is only the loop. Files: ``config.yaml`` (the resolved config,
written by rename), ``metrics.jsonl`` (one JSON object per line; non-finite numbers are written
as null with the key listed under ``"nonfinite"``), ``tb/`` (TensorBoard, when installed) and
the checkpoints (``checkpoint.pt``, ``best.pt``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from vaekit._files import atomic_write_text
from vaekit.training.checkpoint import save_checkpoint

__all__ = [
    "RunFolder",
    "RunFolderInUse",
    "json_row",
    "atomic_write_text",
    "run_lock",
    "check_fresh",
    "RUN_FILES",
]

# what a run writes into its folder (checked by --out without --resume, removed by --overwrite)
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "checkpoint.pt",
    "best.pt",
    "eval.json",
    "train_summary.json",
    "report.html",
    "code_prior.pt",
    "command.json",  # the `vaekit train` command lines (vaekit.export.record_command)
)
STALE_AFTER_TRAINING = ("eval.json",)  # results of an older checkpoint than the next one


class RunFolderInUse(ValueError):
    """Another live process holds the run folder's lock."""


def _lock_owner(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None  # unreadable or cut short: treated as stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


_HELD: dict[Path, int] = {}  # locks this process holds, with their depth (re-entrant)


@contextlib.contextmanager
def run_lock(path: str | os.PathLike) -> Iterator[None]:
    """Own the run folder ``path`` while the block runs: ``path/.lock`` holds this process's
    pid and host, created exclusively. A lock of a process that no longer runs (same host) is
    stale and taken over; a live owner is a :class:`RunFolderInUse` error naming it.
    Re-entrant within one process (``vaekit train`` evaluates under its own lock)."""
    folder = Path(path).resolve()
    if folder in _HELD:
        _HELD[folder] += 1
        try:
            yield
        finally:
            _HELD[folder] -= 1
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    host = socket.gethostname()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and (owner[1] != host or _alive(owner[0])):
                raise RunFolderInUse(
                    f"run folder {str(path)!r} is in use by process {owner[0]} on {owner[1]} "
                    f"(lock file {lock}); wait for it to finish, or use another --out"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        break
    else:
        raise RunFolderInUse(f"could not take the lock of run folder {str(path)!r} ({lock})")
    _HELD[folder] = 1
    _remove_stale_temporaries(folder)
    try:
        yield
    finally:
        del _HELD[folder]
        lock.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a run that failed before writing anything leaves no folder


_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp(\.[^.]+)?$")


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the hidden temporaries (``.NAME.PID.tmp.EXT``, see :func:`vaekit._files.atomic_path`)
    of writers that no longer run: a process killed (SIGKILL) mid-write leaves one behind."""
    for p in folder.iterdir():
        m = _TEMPORARY.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)


def check_fresh(path: str | os.PathLike, overwrite: bool = False) -> None:
    """A new run may go into ``path`` only if it is empty or absent; with ``overwrite`` the
    files of an earlier run (:data:`RUN_FILES`, its figures and ``tb/``) are removed first.
    A folder holding anything else is refused either way (it is not a run folder)."""
    folder = Path(path)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"--out must name a folder; {str(path)!r} is a file")
    entries = [p for p in folder.iterdir() if p.name != ".lock"]
    if not entries:
        return
    if not overwrite:
        held = ", ".join(sorted(p.name for p in entries)[:5])
        raise ValueError(
            f"run folder {str(path)!r} is not empty (it holds {held}"
            f"{', ...' if len(entries) > 5 else ''}); continue that run with --resume, replace "
            "it with --overwrite, or choose another --out"
        )
    ours = [p for p in entries if _is_run_file(p)]
    others = sorted(p.name for p in entries if p not in ours)
    if others:
        raise ValueError(
            f"--overwrite removes only a run's own files; {str(path)!r} also holds "
            f"{', '.join(others[:5])}: choose another --out"
        )
    for p in ours:
        if p.is_dir():
            for sub in sorted(p.rglob("*"), reverse=True):
                sub.rmdir() if sub.is_dir() else sub.unlink()
            p.rmdir()
        else:
            p.unlink()


def _is_run_file(p: Path) -> bool:
    if p.is_dir():
        return p.name in ("tb", "samplers")  # samplers: vaekit fit-sampler
    return p.name in RUN_FILES or p.suffix == ".png" or p.name.endswith(".tmp")


def json_row(row: dict[str, Any]) -> str:
    """``row`` as one line of strict JSON: NaN and +-inf become null, their keys listed in
    ``"nonfinite"`` (``json.dumps`` would write the invalid tokens ``NaN`` / ``Infinity``)."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: (None if k in bad else v) for k, v in row.items()}, "nonfinite": bad}
    return json.dumps(row, allow_nan=False)


class RunFolder:
    """Where a run keeps its files; every write is a no-op off rank 0 or without a path.

    Args:
        path: the folder, or None to keep nothing on disk.
        rank: this process's rank (only rank 0 writes).
    """

    def __init__(self, path: str | os.PathLike | None, rank: int = 0):
        self.path = Path(path) if path is not None else None
        self.writes = path is not None and rank == 0
        self._tb = None

    def file(self, name: str) -> Path | None:
        """``path / name``, or None without a folder."""
        return self.path / name if self.path is not None else None

    def prepare(self, config: dict[str, Any], resume: bool) -> None:
        """Create the folder, write ``config.yaml`` (by rename), remove results that training makes
        stale (``eval.json``), start a fresh log unless resuming."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        # a kill mid-write must not leave an empty config.yaml, which --resume would read as
        # "all defaults"
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        # results of an older checkpoint would be shown as this run's: training makes them stale
        for name in STALE_AFTER_TRAINING:
            (self.path / name).unlink(missing_ok=True)
        if not resume:
            (self.path / "metrics.jsonl").unlink(missing_ok=True)

    def open_tensorboard(self) -> None:
        """Start ``tb/`` (a no-op when tensorboard is not installed)."""
        if self.writes:
            self._tb = _summary_writer(self.path / "tb")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` to ``metrics.jsonl`` (strict JSON) and its numbers to TensorBoard."""
        if not self.writes:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json_row(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k not in ("epoch", "step") and math.isfinite(v):
                    self._tb.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def save(self, name: str, state: dict) -> Path | None:
        """Write a checkpoint atomically (:func:`~vaekit.training.checkpoint.save_checkpoint`)."""
        if not self.writes:
            return None
        return save_checkpoint(state, self.path / name)

    def truncate_log(self, step: int) -> None:
        """Drop log rows written after ``step`` (and a row cut by a crash), on resume."""
        path = self.file("metrics.jsonl")
        if not self.writes or path is None or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        path.write_text("".join(line + "\n" for line in kept))


def _summary_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: pip install "vaekit[tensorboard]"
        return None
    return SummaryWriter(str(path))
