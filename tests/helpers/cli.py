"""The smallest `vaekit train` command line: a 4x4 .npz data set, one epoch of seconds."""

from __future__ import annotations


def train_flags(npz, out, *extra: str) -> list[str]:
    """``vaekit train`` arguments for a tiny dense VAE on ``npz`` into ``out``, plus ``extra``."""
    return [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--hidden", "16", "--latent-dim", "3", "--epochs", "1", "--batch-size", "20",
        "--eval-samples", "4", "--no-tensorboard", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def tiny_npz(path):
    """Write a 4x4 .npz data set (three noisy prototypes; train 60, valid 20, test 20) at ``path``."""
    import numpy as np

    g = np.random.default_rng(0)
    protos = g.random((3, 16))

    def make(n):
        return np.clip(protos[g.integers(0, 3, n)] + 0.1 * g.normal(size=(n, 16)), 0, 1)

    sizes = (("train", 60), ("valid", 20), ("test", 20))
    np.savez(path, **{s: make(n).astype(np.float32).reshape(-1, 4, 4) for s, n in sizes})
    return path
