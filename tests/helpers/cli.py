"""The smallest `vaekit train` command line: a 4x4 .npz data set, one epoch of seconds."""

from __future__ import annotations


def train_flags(npz, out, *extra: str) -> list[str]:
    """``vaekit train`` arguments for a tiny dense VAE on ``npz`` into ``out``, plus ``extra``."""
    return [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--hidden", "16", "--latent-dim", "3", "--epochs", "1", "--batch-size", "20",
        "--eval-samples", "4", "--no-tensorboard", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
