"""How training and evaluation cost grow: batch size, latent size, importance samples, data size.

Prints one JSON line per point and writes a 4-panel figure (``--plot PATH``):

- training samples/s of the default MLP VAE vs batch size, and vs latent size (batch 100);
- evaluation (``vaekit.evaluate.log_likelihood``) seconds and peak memory vs K, each K in a
  fresh subprocess so ``ru_maxrss`` is that K's own peak (chunking keeps it flat in K);
- seconds per training epoch vs the number of training examples (linear: no per-sample
  Python on the hot path).

    python benchmarks/scaling.py --threads 1 --plot docs/scaling.png
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from _common import environment

from vaekit._checks import validation
from vaekit.config import RunConfig
from vaekit.models.build import build_model, build_objective


def _train_rate(batch: int, latent: int, steps: int) -> float:
    cfg = RunConfig().replace(latent_dim=latent)
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 28, 28), (784,))
    objective = build_objective(cfg.objective)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = torch.bernoulli(torch.rand(batch, 784))

    def step():
        loss = objective(model, x, beta=1.0).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with validation(False):
        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
    return batch * steps / (time.perf_counter() - t)


def _eval_point(k: int, examples: int) -> dict:
    """Run in a subprocess: seconds and peak RSS of log_likelihood with K = k."""
    from vaekit.evaluate import log_likelihood

    torch.manual_seed(0)
    model = build_model(RunConfig().model, (1, 28, 28), (784,)).eval()
    x = torch.bernoulli(torch.rand(examples, 784))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    log_likelihood(model, x, samples=k, batch_size=100)
    return {
        "seconds": time.perf_counter() - t,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": base,
    }


def _epoch_seconds(n: int) -> float:
    import vaekit
    from vaekit.data import from_tensor

    torch.manual_seed(0)
    train = torch.rand(n, 784)
    splits = from_tensor(train, train[:100], train[:100], binarize="dynamic", seed=0)
    cfg = RunConfig().replace(epochs=1, tensorboard=False, log_every=10**9)
    model = build_model(cfg.model, (1, 28, 28), (784,))
    from vaekit.training.trainer import Trainer

    trainer = Trainer(model, build_objective(cfg.objective), splits, cfg, None, progress=False)
    t = time.perf_counter()
    trainer.fit()
    del vaekit
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-examples", type=int, default=100)
    p.add_argument("--plot", default=None)
    p.add_argument("--eval-point", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_point:  # the subprocess of one K
        print(json.dumps(_eval_point(args.eval_point, args.eval_examples)))
        return
    rows = []

    def emit(row):
        row = {**row, **environment()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for b in (25, 50, 100, 200, 500, 1000):
        emit({"axis": "batch", "value": b, "samples_per_s": round(_train_rate(b, 40, args.steps))})
    for d in (10, 20, 40, 80, 160):
        emit(
            {"axis": "latent", "value": d, "samples_per_s": round(_train_rate(100, d, args.steps))}
        )
    for k in (100, 500, 1000, 5000, 10000):
        cmd = [sys.executable, __file__, "--eval-point", str(k), "--threads", str(args.threads)]
        cmd += ["--eval-examples", str(args.eval_examples)]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        emit({"axis": "samples", "value": k, **{a: round(b, 2) for a, b in r.items()}})
    for n in (2000, 5000, 10000, 20000, 50000):
        emit({"axis": "examples", "value": n, "epoch_seconds": round(_epoch_seconds(n), 2)})
    if args.plot:
        _plot(rows, args.plot)


def _plot(rows, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()

    def series(axis, key):
        pts = [(r["value"], r[key]) for r in rows if r["axis"] == axis]
        return [a for a, _ in pts], [b for _, b in pts]

    ax = axes[0]
    ax.plot(*series("batch", "samples_per_s"), "-o")
    ax.set(xscale="log", xlabel="batch size", ylabel="training samples/s", title="batch size")
    ax = axes[1]
    ax.plot(*series("latent", "samples_per_s"), "-o")
    ax.set(
        xscale="log", xlabel="latent dimensions", ylabel="training samples/s", title="latent size"
    )
    ax = axes[2]
    ks, secs = series("samples", "seconds")
    ax.plot(ks, secs, "-o", label="seconds")
    ax.set(xscale="log", yscale="log", xlabel="importance samples K", ylabel="seconds")
    ax2 = ax.twinx()
    ax2.plot(*series("samples", "peak_rss_mib"), "-s", color="C3", label="peak RSS (MiB)")
    ax2.set(ylabel="peak RSS (MiB)", ylim=(0, None))
    ax.set_title("evaluation: time linear in K, memory flat (chunked)")
    ax = axes[3]
    ax.plot(*series("examples", "epoch_seconds"), "-o")
    ax.set(xlabel="training examples", ylabel="seconds per epoch", title="data set size")
    for a in axes:
        a.grid(alpha=0.3)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
