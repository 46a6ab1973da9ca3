"""Disentangling objectives on dSprites: MIG and FactorVAE score (and DCI, SAP, beta-VAE), seeds.

Each run: a conv VAE with 10 latents and a Bernoulli decoder trained with one objective for a
wall-clock budget (the last step's weights when the budget ends inside the first epoch), then ``vaekit eval --metrics disentanglement`` on the posterior means
(10,000 rendered factor draws, seeded). One JSON line per run, appended to
``OUT/results.jsonl``; a summary (median and range over seeds) printed at the end.

    python benchmarks/disentangle_table.py --minutes 3 --seeds 0 1 2 --threads 1

``--train-only`` trains and writes the run folders (one line per run, without scores);
``--score-only`` scores run folders trained before (the checkpoint is in each), so the
metrics can be recomputed without retraining.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import emit, environment

import vaekit
from vaekit.models.build import input_shape
from vaekit.training.run import disentanglement_scores, load_run

# name -> config overrides (Locatello et al. 2019 hyperparameters where they fit the budget)
OBJECTIVES = {
    "vae": dict(objective="elbo", beta=1.0),
    "beta_vae_4": dict(objective="elbo", beta=4.0),
    "beta_tcvae_6": dict(objective="beta_tcvae", beta=6.0),
    "factor_vae_35": dict(objective="factor_vae", gamma=35.0),
    "dip_vae_ii": dict(objective="dip_vae", dip="ii", lambda_od=1.0),
}


def _train(run: Path, name: str, seed: int, args: argparse.Namespace) -> None:
    """Train one objective for ``args.minutes`` into the run folder ``run``."""
    vaekit.train(
        out=run,
        dataset="dsprites",
        network="conv",
        latent_dim=10,
        likelihood="bernoulli",
        batch_size=args.batch_size,
        lr=args.lr,
        # --steps: one pass over the first steps x batch examples, whatever the machine's load
        epochs=1 if args.steps else 1000,
        max_train_examples=args.steps * args.batch_size,
        time_limit=0 if args.steps else args.minutes,
        seed=seed,
        tensorboard=False,
        progress=False,
        evaluate_after=False,
        **OBJECTIVES[name],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per run")
    p.add_argument(
        "--steps", type=int, default=0, help="train this many steps instead of --minutes"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/disentangle")
    p.add_argument("--n", type=int, default=10000, help="factor draws for the scores")
    p.add_argument("--n-dci", type=int, default=None, help="draws for DCI's trees (default n)")
    p.add_argument(
        "--observational-only",
        action="store_true",
        help="leave out the FactorVAE and beta-VAE scores (they encode ~30x more images)",
    )
    phase = p.add_mutually_exclusive_group()
    phase.add_argument("--train-only", action="store_true", help="train, do not score")
    phase.add_argument("--score-only", action="store_true", help="score existing run folders")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:  # seed-major: an unfinished table still covers every objective
        for name in args.objectives:
            run = out / f"{name}-s{seed}"
            t0 = time.time()
            if not args.score_only:
                _train(run, name, seed, args)
            train_s = time.time() - t0
            row = {"objective": name, "seed": seed}
            if not args.train_only:
                model, cfg, splits = load_run(run)
                shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
                t1 = time.time()
                scores = disentanglement_scores(
                    model,
                    cfg,
                    shape,
                    n=args.n,
                    n_dci=args.n_dci,
                    fast_variants=True,  # fast_* keys: vaekit's old forms, for comparison
                    interventional=not args.observational_only,
                )
                row.update({k: round(v, 4) for k, v in scores.items()})
                row["metric_seconds"] = round(time.time() - t1, 1)
            summary = json.loads((run / "train_summary.json").read_text())
            row.update(
                steps=summary["steps"],
                images_seen=summary["steps"] * args.batch_size,
                # None when the budget ended inside the first epoch (no validation yet)
                best_valid_elbo=(
                    round(summary["best_valid_elbo"], 2)
                    if summary["best_valid_elbo"] > float("-inf")
                    else None
                ),
                **({} if args.score_only else {"train_seconds": round(train_s, 1)}),
                **environment(),
            )
            rows.append(row)
            if args.train_only:  # no scores: kept out of results.jsonl (the table's input)
                with open(out / "train.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
            else:
                emit(out, row)
    if args.train_only:
        return
    for name in args.objectives:
        mine = [r for r in rows if r["objective"] == name]
        summary = {"objective": name, "seeds": len(mine)}
        for key in ("mig", "factor_vae", "dci_disentanglement", "sap", "beta_vae"):
            vals = [r[key] for r in mine if key in r]
            if not vals:
                continue
            summary[key] = {
                "median": round(statistics.median(vals), 3),
                "min": min(vals),
                "max": max(vals),
            }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
