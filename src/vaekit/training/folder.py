"""The run folder: config, metrics log, TensorBoard and checkpoints, written by rank 0 only.

One small class so the trainer is only the loop. Files: ``config.yaml`` (the resolved config,
written by rename), ``metrics.jsonl`` (one JSON object per line; non-finite numbers are written
as null with the key listed under ``"nonfinite"``), ``tb/`` (TensorBoard, when installed) and
the checkpoints (``checkpoint.pt``, ``best.pt``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from vaekit.training.checkpoint import save_checkpoint

__all__ = ["RunFolder", "json_row"]


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
        """Create the folder, write ``config.yaml`` (by rename), start a fresh log unless resuming."""
        if not self.writes:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        # a kill mid-write must not leave an empty config.yaml, which --resume would read as
        # "all defaults"
        tmp = self.path / ".config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.path / "config.yaml")
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
