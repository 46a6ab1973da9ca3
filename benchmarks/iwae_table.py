"""Reproduce the IWAE paper's MNIST table (Burda et al. 2015, Table 1) within a CPU budget.

Protocol: dynamic binarisation, encoder and decoder 784-200-200-50 with tanh, one stochastic
layer, batch 20 in the paper (``--batch-size``), Adam; the VAE is trained on the k-sample
ELBO, the IWAE on IWAE_k, for k in 1, 5, 50; test NLL with 5000 importance samples.
The paper trained for 3280 passes; the epochs used here are in the JSON.

    python benchmarks/iwae_table.py --ks 1 5 50 --epochs 10 --out benchmarks/out/iwae
    python benchmarks/iwae_table.py --ks 1 5 --epochs 100 --milestones 3 10 30 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import emit, environment, evaluate_test

import vaekit

PUBLISHED = {("vae", 1): 86.76, ("iwae", 1): 86.76, ("vae", 5): 86.47, ("iwae", 5): 85.54,
             ("vae", 50): 86.35, ("iwae", 50): 84.78}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5, 50])
    p.add_argument("--models", nargs="+", default=["vae", "iwae"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--milestones",
        nargs="*",
        type=int,
        default=[],
        help="also evaluate after these epochs (< --epochs), continuing the same run, to show "
        "how the gap shrinks with training",
    )
    p.add_argument(
        "--milestone-samples", type=int, default=1000, help="importance samples at milestones"
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--eval-examples", type=int, default=10000)
    p.add_argument("--eval-pick", default="random", choices=["random", "first"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue runs that have a checkpoint (e.g. a 10-epoch run to --epochs 30)",
    )
    p.add_argument("--out", default="benchmarks/out/iwae")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stops = sorted({m for m in args.milestones if 0 < m < args.epochs}) + [args.epochs]
    for k in args.ks:
        for name in args.models:
            if k == 1 and name == "iwae" and "vae" in args.models:
                continue  # IWAE_1 is the ELBO: the same model as the k=1 VAE
            objective = (
                dict(objective="iwae", k=k)
                if name == "iwae"
                else dict(objective="elbo", samples=k, kl="mc")
            )
            run, train_s = out / f"{name}-k{k}", 0.0
            for i, epochs in enumerate(stops):
                t0 = time.time()
                vaekit.train(
                    out=run,
                    resume=i > 0 or (args.resume and (run / "checkpoint.pt").exists()),
                    dataset="mnist",
                    binarize="dynamic",
                    network="mlp",
                    hidden=(200, 200),
                    activation="tanh",
                    latent_dim=50,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    epochs=epochs,
                    progress=False,
                    evaluate_after=False,
                    tensorboard=False,
                    **objective,
                )
                train_s += time.time() - t0
                samples = args.eval_samples if epochs == args.epochs else args.milestone_samples
                t1 = time.time()
                r = evaluate_test(run, samples, args.eval_examples, args.eval_pick)
                row = {
                    "model": name,
                    "k": k,
                    "published_nll": PUBLISHED[(name, k)],
                    "nll": round(r["nll"], 3),
                    "elbo": round(r["elbo"], 3),
                    "active_units": r["active_units"],
                    "epochs": epochs,
                    "eval_samples": samples,
                    "eval_examples": r["eval_examples"],
                    "eval_pick": r["eval_pick"],
                    "train_seconds": round(train_s, 1),
                    "eval_seconds": round(time.time() - t1, 1),
                    **environment(),
                }
                emit(out, row)


if __name__ == "__main__":
    main()
