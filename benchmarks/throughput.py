"""Training throughput of vaekit vs a plain loop and vs the matmul compute bound, in one process.

Model: the MLP VAE 784-300-300-(2x40) / 40-300-300-784 (tanh), Bernoulli likelihood,
standard-normal prior (``--prior vamp`` for the VampPrior variant), batch 100, Adam.

- ``samples_per_s``: vaekit's training step (``Trainer._step``: objective, backward, fused
  Adam, on-device metric sums) fed by ``Dataset.batches`` (dynamic binarisation).
- ``plain_samples_per_s``: a hand-written loop in this file: the same networks and
  optimizer, tensors in memory, no library code.
- ``bound_samples_per_s``: batch / (time of the step's matmuls alone, run with ``torch.mm``
  at the same shapes: forward, grad-input and grad-weight of every Linear layer).

Each figure is the median over ``--repeats`` interleaved timing rounds.

    python benchmarks/throughput.py --steps 200 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import environment
from torch import nn

import vaekit
from vaekit.config import RunConfig
from vaekit.data import from_tensor
from vaekit.models.build import build_model, build_objective
from vaekit.training.trainer import Trainer


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _mm_time(model: nn.Module, batch: int, steps: int, samples: int = 1) -> float:
    """Seconds per step of the forward and backward matmuls of every Linear layer."""
    shapes = []
    enc = {id(m) for m in _linears(model.encoder)}
    for m in _linears(model):
        rows = batch if id(m) in enc else batch * samples
        shapes.append((rows, m.in_features, m.out_features))
    pseudo = getattr(model.prior, "pseudo_inputs", None)
    if pseudo is not None:  # the VampPrior pushes its K pseudo-inputs through the encoder
        shapes += [
            (pseudo.shape[0], m.in_features, m.out_features) for m in _linears(model.encoder)
        ]
    mats = [
        (
            torch.randn(r, i),
            torch.randn(i, o),
            torch.randn(r, o),
            torch.randn(o, i),
            torch.randn(o, r),
        )
        for r, i, o in shapes
    ]

    def one():
        for x, w, gy, wt, gyt in mats:
            torch.mm(x, w)  # forward
            torch.mm(gy, wt)  # grad wrt input
            torch.mm(gyt, x)  # grad wrt weight

    for _ in range(5):
        one()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--prior", default="standard")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the library model")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RunConfig().replace(
        activation="tanh", prior=args.prior, batch_size=args.batch_size, tensorboard=False
    )
    n = args.batch_size * args.steps
    splits = from_tensor(torch.rand(n, 784), binarize="dynamic", image_shape=(1, 28, 28))
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    trained = torch.compile(model) if args.compile else model
    trainer = Trainer(
        trained, build_objective(cfg.objective, args.prior), splits, cfg, None, progress=False
    )
    generator = torch.Generator().manual_seed(0)

    def library() -> float:
        sums: dict = {}
        t = time.perf_counter()
        with vaekit.validation(False):
            for x, _ in splits.train.batches(args.batch_size, generator=generator):
                trainer._step(x, None, sums)
            float(sums["_n"])  # one sync, as at a logging point
        return n / (time.perf_counter() - t)

    # the plain loop: its own copy of the networks, written out by hand
    plain_model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    enc, dec = plain_model.encoder, plain_model.decoder
    opt = torch.optim.Adam(plain_model.parameters(), lr=1e-3, fused=True)
    data = splits.train.x

    def plain() -> float:
        t = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, args.batch_size):
            x = torch.bernoulli(data[perm[i : i + args.batch_size]])
            mu, logvar = enc(x).chunk(2, -1)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
            kl = 0.5 * (logvar.exp() + mu.square() - 1 - logvar).sum(1)
            loss = (rec + kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n / (time.perf_counter() - t)

    lib, ref, bound = [], [], []
    library()
    plain()  # warm-up
    for _ in range(args.repeats):
        lib.append(library())
        ref.append(plain())
        bound.append(args.batch_size / _mm_time(model, args.batch_size, 50))
    row = {
        "benchmark": "throughput",
        "prior": args.prior,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "samples_per_s": round(statistics.median(lib)),
        "plain_samples_per_s": round(statistics.median(ref)),
        "bound_samples_per_s": round(statistics.median(bound)),
        "ratio_to_plain": round(statistics.median(a / b for a, b in zip(lib, ref, strict=True)), 3),
        "fraction_of_bound": round(
            statistics.median(a / b for a, b in zip(lib, bound, strict=True)), 3
        ),
        "plain_fraction_of_bound": round(
            statistics.median(a / b for a, b in zip(ref, bound, strict=True)), 3
        ),
        **environment(),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
