"""Reproduce the VampPrior MNIST table (Tomczak & Welling 2018) within a CPU budget.

Protocol (as in the paper, where CPU time allows): static binarisation, GatedDense 300-300
encoder and decoder, 40 latents, batch 100, Adam 5e-4, linear KL warm-up, 500 pseudo-inputs
(VampPrior) and 500 MoG components with the paper's fixed 1/K weights, test NLL with 5000
importance samples, the best-validation-ELBO checkpoint.
Differences are flags, printed in the JSON: epochs (and warm-up) fit the budget, and the
5000-sample NLL may be computed on the first ``--eval-examples`` test images.

Each variant writes ``OUT/<variant>/`` (a normal run folder) and the script appends one JSON
line per finished variant to ``OUT/results.jsonl`` and prints it:

    python benchmarks/vampprior_table.py --variants standard mog vamp --epochs 200 \\
        --warmup-epochs 40 --time-limit 75 --threads 1 --out benchmarks/out/vampprior
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import emit, environment, evaluate_test

import vaekit
from vaekit.config import load_config

PUBLISHED = {"standard": 88.56, "mog": 86.55, "vamp": 85.57, "hvae_vamp": 83.19}
# variant -> (model, prior): hvae_vamp is the paper's HVAE (two stochastic layers of 40
# latents, GatedDense 300-300) with a VampPrior over its top layer
MODELS = {
    "standard": ("vae", "standard"),
    "mog": ("vae", "mog"),
    "vamp": ("vae", "vamp"),
    "hvae_vamp": ("hvae", "vamp"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["standard", "mog", "vamp"], choices=MODELS)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--warmup-epochs", type=float, default=40)
    p.add_argument("--time-limit", type=float, default=0, help="minutes of training per variant")
    p.add_argument(
        "--components",
        type=int,
        default=500,
        help="pseudo-inputs (vamp) and mixture components (mog); the paper uses 500 for both",
    )
    p.add_argument(
        "--mog-weights",
        default="uniform",
        choices=["uniform", "learned"],
        help="mog: the paper's fixed 1/K weights or learnable ones",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after this many epochs without a better validation ELBO (the paper: 50; "
        "0 = train for --epochs / --time-limit)",
    )
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--eval-examples", type=int, default=10000, help="test images for the NLL")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/vampprior")
    p.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate existing runs, no training")
    p.add_argument(
        "--eval-pick",
        default="random",
        choices=["random", "rest", "first"],
        help="which test images when --eval-examples < 10000: a seeded random subset (the first "
        "ones are the easier half of MNIST's test set), the rest after that subset, or the "
        "first ones",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        t0 = time.time()
        resume = args.resume and (out / variant / "checkpoint.pt").exists()
        run = out / variant
        if not args.eval_only:
            vaekit.train(
                out=out / variant,
                resume=resume,
                dataset="mnist",
                binarize="static",
                network="gated",
                hidden=(300, 300),
                latent_dim=40,
                model=MODELS[variant][0],
                prior=MODELS[variant][1],
                components=args.components if MODELS[variant][1] in ("mog", "vamp") else 0,
                mog_weights=args.mog_weights,
                batch_size=100,
                lr=5e-4,
                warmup_epochs=args.warmup_epochs,
                epochs=args.epochs,
                time_limit=args.time_limit,
                patience=args.patience,
                seed=args.seed,
                progress=False,
                evaluate_after=False,
                tensorboard=False,
            )
        train_s = time.time() - t0
        t1 = time.time()
        result = evaluate_test(run, args.eval_samples, args.eval_examples, args.eval_pick)
        summary = json.loads((run / "train_summary.json").read_text())
        saved = load_config(run / "config.yaml")  # the run's own settings, also with --eval-only
        train_s = None if args.eval_only else round(train_s, 1)
        row = {
            "variant": variant,
            "components": saved.model.components or None,
            "mog_weights": saved.model.mog_weights if saved.model.prior == "mog" else None,
            "published_nll": PUBLISHED.get(variant),
            "nll": round(result["nll"], 3),
            "elbo": round(result["elbo"], 3),
            "kl": round(result["kl"], 3),
            "active_units": result["active_units"],
            "eval_samples": args.eval_samples,
            "eval_examples": result["eval_examples"],
            "eval_pick": result["eval_pick"],
            "epochs_trained": summary["epochs"],
            "best_epoch": summary["best_epoch"],
            "best_valid_elbo": round(summary["best_valid_elbo"], 3),
            "warmup_epochs": saved.objective.warmup_epochs,
            "patience": saved.train.patience,
            "train_seconds": train_s,
            "eval_seconds": round(time.time() - t1, 1),
            **environment(),
        }
        emit(out, row)


if __name__ == "__main__":
    main()
