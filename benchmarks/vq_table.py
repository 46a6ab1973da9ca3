"""VQ-VAE quantizers at one code budget on MNIST and Fashion-MNIST: MSE, bits/dim, perplexity.

For each data set and quantizer (``vq``: codebook loss; ``ema``; ``ema`` + dead-code
restarts; ``fsq``), a conv VQ-VAE (28x28 -> 7x7 codes, Bernoulli decoder on dynamically
binarised images, the same protocol as the continuous VAEs' tables) trains for ``--epochs`` on the first
``--train-examples`` images, then an autoregressive code prior is fitted for
``--prior-epochs`` and the test images are scored: reconstruction MSE per pixel, codebook
perplexity and usage, and the model's NLL bound in bits/dim (code prior + decoder).

    python benchmarks/vq_table.py --epochs 3 --prior-epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import emit, environment, evaluate_test

import vaekit
from vaekit.models.build import input_shape, prepare_input
from vaekit.training.run import evaluate_vq, load_run

QUANTIZERS = {
    "vq": dict(quantizer="vq"),
    "ema": dict(quantizer="ema"),
    "ema_restart": dict(quantizer="ema", restart_after=100),
    "fsq": dict(quantizer="fsq"),
}
DATA = {
    "mnist": dict(dataset="mnist", binarize="dynamic", likelihood="bernoulli"),
    "fashion_mnist": dict(dataset="fashion_mnist", binarize="dynamic", likelihood="bernoulli"),
}


def _vae_row(data: str, args, out: Path) -> None:
    """The default continuous VAE (MLP, 40 latents) on the same data and budget, for scale."""
    run = out / f"{data}-vae"
    train_s = _train(run, data, args)
    r = evaluate_test(run, samples=1000, examples=args.test_examples)
    row = {
        "data": data,
        "quantizer": "continuous VAE (MLP, 40 latents), NLL with K=1000",
        "bits_per_dim": round(r["bits_per_dim"], 4),
        "nll": round(r["nll"], 2),
        "rec": round(r["rec"], 2),
        "kl": round(r["kl"], 2),
        "epochs": args.epochs,
        "train_examples": args.train_examples,
        "test_examples": r["eval_examples"],
        "seconds": round(train_s, 1),
        **environment(),
    }
    emit(out, row)


def _train(run: Path, data: str, args, **overrides) -> float:
    """Train one run on the table's budget (``DATA[data]`` plus ``overrides``); seconds taken."""
    t0 = time.time()
    vaekit.train(
        out=run,
        epochs=args.epochs,
        max_train_examples=args.train_examples,
        batch_size=100,
        lr=1e-3,
        seed=0,
        tensorboard=False,
        progress=False,
        evaluate_after=False,
        **DATA[data],
        **overrides,
    )
    return time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATA))
    p.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS))
    p.add_argument("--num-codes", type=int, default=1024, help="K (FSQ: levels 8,5,5,5)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--prior-epochs", type=int, default=2)
    p.add_argument("--train-examples", type=int, default=20000)
    p.add_argument("--test-examples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--no-vae-baseline",
        dest="vae_baseline",
        action="store_false",
        help="skip the continuous VAE trained on the same budget",
    )
    p.add_argument("--out", default="benchmarks/out/vq")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for data in args.datasets:
        if args.vae_baseline:
            _vae_row(data, args, out)
        for name in args.quantizers:
            run = out / f"{data}-{name}"
            train_s = _train(
                run,
                data,
                args,
                model="vqvae",
                num_codes=args.num_codes,
                prior_epochs=args.prior_epochs,
                **QUANTIZERS[name],
            )
            model, cfg, splits = load_run(run)
            test = splits.test.eval_view()
            shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
            x = prepare_input(model, test.x[: args.test_examples], shape)
            r = evaluate_vq(model, x)
            row = {
                "data": data,
                "quantizer": name,
                "num_codes": r["num_codes"],
                "mse": round(r["mse"], 5),
                "bits_per_dim": round(r["bits_per_dim"], 4),
                "nll": round(r["nll"], 2),
                "rec": round(r["rec"], 2),
                "prior_nats": round(r["kl"], 2),
                "perplexity": round(r["perplexity"], 1),
                "codes_used": r["codes_used"],
                "epochs": args.epochs,
                "prior_epochs": args.prior_epochs,
                "train_examples": args.train_examples,
                "test_examples": r["examples"],
                "seconds": round(train_s, 1),
                **environment(),
            }
            emit(out, row)


if __name__ == "__main__":
    main()
