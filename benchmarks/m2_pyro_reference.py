"""Pyro's own ss-vae M2 on vaekit's split and labelled draw: the reference trajectory, per epoch.

The same protocol as ``benchmarks/m2_table.py`` (grey MNIST 50k / 10k / 10k, N labels drawn by
``vaekit.models.m2.balanced_labels`` with ``--seed``, MLPs with one hidden layer of 500
softplus units, z of 50, batch 200, Adam 4.2e-4 with beta1 0.95, aux_loss_multiplier 46, Pyro's
interleaving of labelled batches), trained by Pyro itself as its ``examples/vae/ss_vae_M2.py``
does: one ``SVI(model, config_enumerate(guide), TraceEnum_ELBO)`` and one ``SVI`` of the
auxiliary classification loss, both stepped on every batch with one optimiser. Prints (and
appends to ``--out``) one JSON line per epoch: validation and test accuracy of argmax q(y|x).

Needs ``pyro-ppl`` (the ``test`` extra). A run of this file and one of ``m2_table.py`` with the
same ``--labels`` and ``--seed`` see the same data and labels; their networks are initialised
independently.

    python benchmarks/m2_pyro_reference.py --labels 3000 --seed 0 --epochs 20 --out pyro.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import environment
from torch import nn

from vaekit.data import mnist
from vaekit.models.m2 import balanced_labels

EPS = 1e-7  # Pyro's ClippedSoftmax / ClippedSigmoid epsilon


class _MLP(nn.Module):
    """One hidden layer of softplus units on the concatenated (broadcast) inputs."""

    def __init__(self, n_in: int, n_out: int, out=None):
        super().__init__()
        self.hidden, self.last, self.out = nn.Linear(n_in, 500), nn.Linear(500, n_out), out

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        lead = torch.broadcast_shapes(*(t.shape[:-1] for t in parts))
        h = torch.cat([t.expand(*lead, t.shape[-1]) for t in parts], -1)
        y = self.last(nn.functional.softplus(self.hidden(h)))
        return y if self.out is None else self.out(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="m2_pyro.jsonl")
    args = p.parse_args()

    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.optim import Adam

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    pyro.set_rng_seed(args.seed)
    enc_y = _MLP(784, 10, lambda v: torch.softmax(v, -1).clamp(EPS, 1 - EPS))
    enc_z = _MLP(784 + 10, 100)
    dec = _MLP(50 + 10, 784, lambda v: torch.sigmoid(v).clamp(EPS, 1 - EPS))
    nets = nn.ModuleList([enc_y, enc_z, dec])

    def model(xs, ys=None):
        pyro.module("ss_vae", nets)
        n = xs.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(xs.new_zeros(n, 50), xs.new_ones(n, 50)).to_event(1))
            ys = pyro.sample("y", dist.OneHotCategorical(xs.new_ones(n, 10) / 10), obs=ys)
            pyro.sample("x", dist.Bernoulli(dec(z, ys), validate_args=False).to_event(1), obs=xs)

    def guide(xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(enc_y(xs)))
            o = enc_z(xs, ys)
            pyro.sample("z", dist.Normal(o[..., :50], torch.exp(o[..., 50:])).to_event(1))

    def model_classify(xs, ys=None):
        pyro.module("ss_vae", nets)
        with pyro.plate("data", xs.shape[0]):
            if ys is not None:
                with pyro.poutine.scale(scale=46.0):
                    pyro.sample("y_aux", dist.OneHotCategorical(enc_y(xs)), obs=ys)

    def guide_classify(xs, ys=None):
        pass

    optim = Adam({"lr": 4.2e-4, "betas": (0.95, 0.999)})
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    losses = [
        SVI(model, config_enumerate(guide, "parallel"), optim, loss=elbo),
        SVI(model_classify, guide_classify, optim, loss=Trace_ELBO()),
    ]

    splits = mnist(binarize=None)
    x_tr, y_tr = splits.train.x.reshape(-1, 784), splits.train.y
    mask = torch.zeros(len(y_tr), dtype=torch.bool)
    mask[balanced_labels(y_tr, args.labels, seed=args.seed, num_classes=10)] = True
    x_l, y_l, x_u = x_tr[mask], nn.functional.one_hot(y_tr[mask], 10).float(), x_tr[~mask]
    x_va, y_va = splits.valid.x.reshape(-1, 784), splits.valid.y
    x_te, y_te = splits.test.x.reshape(-1, 784), splits.test.y
    gen = torch.Generator().manual_seed(args.seed + 1)
    period = int(50000 / args.labels)
    base = {"impl": "pyro", "labels": args.labels, "seed": args.seed, **environment()}
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        lab = torch.randperm(len(x_l), generator=gen).split(200)
        unlab = torch.randperm(len(x_u), generator=gen).split(200)
        used_l = used_u = 0
        for i in range(len(lab) + len(unlab)):
            labelled = (i % period == 1 and used_l < len(lab)) or used_u == len(unlab)
            if labelled:
                b, used_l = lab[used_l], used_l + 1
                for svi in losses:
                    svi.step(x_l[b], y_l[b])
            else:
                b, used_u = unlab[used_u], used_u + 1
                for svi in losses:
                    svi.step(x_u[b])
        with torch.no_grad():
            valid = float((enc_y(x_va).argmax(-1) == y_va).float().mean())
            test = float((enc_y(x_te).argmax(-1) == y_te).float().mean())
        row = {
            **base,
            "epoch": epoch,
            "valid_accuracy": valid,
            "test_accuracy": test,
            "epoch_seconds": time.perf_counter() - t0,
        }
        with open(Path(args.out), "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
