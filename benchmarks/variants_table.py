"""The VAE variants of the literature on one budget: test NLL on dynamically binarised MNIST.

Every variant is the default MLP VAE (784-300-300-40, Adam 1e-3, batch 100) changed by the
flags in VARIANTS, trained for ``--epochs`` epochs and scored with K = ``--samples``
importance samples on a seeded random subset of ``--examples`` test images (the CVAE row is
log p(x | y), a different quantity). The schedule rows (warm-up, cyclical, free bits) answer
how they change the active units. For the CVAE, ``label_accuracy`` is the accuracy of a small
MLP classifier (trained here on MNIST) on 1000 conditional samples, 100 per label.

    python benchmarks/variants_table.py --epochs 10 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import emit, environment, evaluate_test
from torch import nn

import vaekit
from vaekit.training.run import load_run

VARIANTS = {
    "vae": {},
    "vae_warmup": dict(warmup_epochs=5.0),
    "vae_cyclical": dict(schedule="cyclical", cycles=4, cycle_ratio=0.5),
    "vae_free_bits": dict(free_bits=0.25),
    "vamp": dict(prior="vamp", components=500),
    "flow_prior": dict(prior="flow", flow_layers=4),
    "iaf_posterior": dict(posterior="iaf", iaf_steps=2),
    "hvae": dict(model="hvae", network="gated"),
    "hvae_vamp": dict(model="hvae", network="gated", prior="vamp", components=500),
    "iwae_k5": dict(objective="iwae", k=5),
    "miwae_m2_k5": dict(objective="miwae", m=2, k=5),
    "ciwae_0.5_k5": dict(objective="ciwae", beta=0.5, k=5),
    "piwae_m2_k5": dict(objective="piwae", m=2, k=5),
    "info_vae": dict(objective="info_vae", alpha=0.0),
    "wae": dict(objective="wae"),
    "triplet": dict(objective="triplet", margin=1.0),
    "perceptual": dict(objective="perceptual"),
    "cvae": dict(model="cvae", conditional_prior=True),
}


@torch.enable_grad()
def _classifier(splits, epochs: int = 3) -> nn.Module:
    """A 784-256-10 MLP on the binarised training images (for the CVAE label accuracy)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    train = splits.train
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for x, y in train.batches(100, shuffle=True, generator=g):
            loss = nn.functional.cross_entropy(net(x.reshape(x.shape[0], -1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def _label_accuracy(run: Path) -> dict:
    model, cfg, splits = load_run(run)
    net = _classifier(splits)
    test = splits.test.eval_view()
    test_acc = (net(test.x.reshape(test.x.shape[0], -1)).argmax(1) == test.y).float().mean()
    torch.manual_seed(1)
    labels = torch.arange(10).repeat_interleave(100)
    x = model.sample(1000, label=labels, mean=False).reshape(1000, -1)
    acc = (net(x).argmax(1) == labels).float().mean()
    return {
        "label_accuracy": round(float(acc), 4),
        "classifier_test_accuracy": round(float(test_acc), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/variants")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        run = out / name
        t0 = time.time()
        vaekit.train(
            out=run,
            dataset="mnist",
            binarize="dynamic",
            epochs=args.epochs,
            seed=0,
            tensorboard=False,
            progress=False,
            evaluate_after=False,
            **VARIANTS[name],
        )
        train_s = time.time() - t0
        r = evaluate_test(run, args.samples, args.examples)
        row = {
            "variant": name,
            "flags": VARIANTS[name],
            "nll": round(r["nll"], 2),
            "elbo": round(r["elbo"], 2),
            "kl": round(r["kl"], 2),
            "active_units": r["active_units"],
            "epochs": args.epochs,
            "eval_samples": args.samples,
            "eval_examples": r["eval_examples"],
            "train_seconds": round(train_s, 1),
            **environment(),
        }
        if name == "cvae":
            row.update(_label_accuracy(run))
        emit(out, row)


if __name__ == "__main__":
    main()
