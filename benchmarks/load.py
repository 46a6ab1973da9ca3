"""Load check (not run in CI): wall time and peak memory of the two heaviest everyday jobs.

1. ``train``: one epoch of the default model (MLP 784-300-300, 40 latents, Bernoulli,
   dynamic binarisation) on the 50000 MNIST training images with batch size 1000, then the
   validation pass and the checkpoint writes, as ``vaekit train`` does.
2. ``eval``: the importance-sampled NLL with K = 5000 on the first 1000 test images (fixed
   binarisation), with the checkpoint of step 1, as ``vaekit eval`` does.

Each phase runs in a fresh process so its peak RSS (``resource.getrusage``) is its own; the
peak after imports and data loading is reported beside it. Needs MNIST in the cache
(``vaekit data fetch mnist``). Prints one JSON object.

    VAEKIT_DATA=/work/data_cache python benchmarks/load.py --out benchmarks/out/load
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _train(run_dir: Path, batch_size: int) -> dict:
    import torch

    from vaekit.config import RunConfig
    from vaekit.models.build import build_model, build_objective, input_shape
    from vaekit.training.run import load_data
    from vaekit.training.trainer import Trainer

    cfg = RunConfig().replace(
        dataset="mnist", epochs=1, batch_size=batch_size, tensorboard=False, log_every=10**9
    )
    splits = load_data(cfg.train)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    objective = build_objective(cfg.objective, cfg.model.prior)
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    trainer = Trainer(model, objective, splits, cfg, run_dir, input_shape=shape, progress=False)
    setup_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    summary = trainer.fit()
    wall = time.perf_counter() - t0
    return {
        "phase": "train",
        "examples": len(splits.train),
        "batch_size": batch_size,
        "steps": summary["steps"],
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_after_setup_mb": round(setup_rss, 1),
        "valid_elbo": round(summary["best_valid_elbo"], 2),
    }


def _eval(run_dir: Path, examples: int, samples: int, batch_size: int) -> dict:
    from vaekit.evaluate import evaluate
    from vaekit.models.build import input_shape, prepare_input
    from vaekit.training.run import load_run

    model, cfg, splits = load_run(run_dir, "last")
    view = splits.test.eval_view()
    x = prepare_input(model, view.x[:examples], input_shape(cfg.model, splits.image_shape, (784,)))
    setup_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    result = evaluate(model, x, samples=samples, batch_size=batch_size)
    wall = time.perf_counter() - t0
    return {
        "phase": "eval",
        "examples": examples,
        "samples": samples,
        "batch_size": batch_size,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_after_setup_mb": round(setup_rss, 1),
        "nll": round(result["nll"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=["all", "train", "eval"], default="all")
    p.add_argument("--out", default="benchmarks/out/load", help="run folder of the train phase")
    p.add_argument("--train-batch-size", type=int, default=1000)
    p.add_argument("--eval-examples", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--eval-batch-size", type=int, default=100)
    args = p.parse_args()
    out = Path(args.out)
    if args.phase == "train":
        print(json.dumps(_train(out, args.train_batch_size)))
        return
    if args.phase == "eval":
        print(json.dumps(_eval(out, args.eval_examples, args.eval_samples, args.eval_batch_size)))
        return
    import torch

    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    for phase in ("train", "eval"):
        cmd = [
            sys.executable, __file__, "--phase", phase, "--out", str(out),
            "--train-batch-size", str(args.train_batch_size),
            "--eval-examples", str(args.eval_examples),
            "--eval-samples", str(args.eval_samples),
            "--eval-batch-size", str(args.eval_batch_size),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
