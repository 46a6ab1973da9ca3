"""Post-hoc samplers vs the prior: Fréchet distance and label entropy in vaekit's classifier space.

For each data set: train a VAE (``vaekit.train``), fit the three post-hoc samplers
(``vaekit.samplers``: gmm, flow, two_stage) on its training posterior means, draw
``--samples`` images ``E[x|z]`` from each and from the prior N(0, I), and compare them with
the test images in the hidden-layer features of vaekit's own MLP classifier
(:func:`vaekit.models.perceptual.classifier`, trained on the grey training images): NOT the
Inception FID, comparable only within one data set. Also the classifier's label entropies
(nats). A "validation images" row is the floor: real images against real images.

    python benchmarks/samplers_table.py --dataset mnist --out /work/runs-i19-export/mnist

prints one JSON line per row and appends it to ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment  # noqa: E402

from vaekit.metrics.sample_quality import sample_quality  # noqa: E402
from vaekit.models.perceptual import classifier  # noqa: E402
from vaekit.samplers import fit_run_sampler, load_sampler  # noqa: E402
from vaekit.training.run import load_run, train  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--out", required=True, help="folder for the run and results.jsonl")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--time-limit", type=float, default=8.0, help="minutes of VAE training")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--flow-epochs", type=int, default=30)
    p.add_argument(
        "--two-stage-epochs",
        default="30",
        help="comma list: one second stage per budget (the first is named two_stage, the others "
        "two_stage_eE)",
    )
    p.add_argument("--max-codes", type=int, default=10000, help="training codes per sampler fit")
    p.add_argument("--two-stage-hidden", default="1024,1024", help="second-stage widths")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = out / "run"
    env = environment()
    base = {"dataset": args.dataset, "latent_dim": args.latent_dim, **env}

    t0 = time.time()
    if not (run / "train_summary.json").exists():
        train(
            None,
            out=run,
            overwrite=True,
            progress=False,
            evaluate_after=False,  # the test NLL is not this table's subject (and costs minutes)
            dataset=args.dataset,
            epochs=args.epochs,
            time_limit=args.time_limit,
            latent_dim=args.latent_dim,
            tensorboard=False,
            seed=args.seed,
        )
    summary = json.loads((run / "train_summary.json").read_text())
    emit(out, {**base, "row": "vae", "train_s": round(time.time() - t0, 1),
               "epochs": summary["epochs"], "best_valid_elbo": summary["best_valid_elbo"]})  # fmt: skip

    budgets = [int(e) for e in args.two_stage_epochs.split(",")]
    fits = [("gmm", "gmm", None), ("flow", "flow", args.flow_epochs)]
    fits += [("two_stage", "two_stage" if i == 0 else f"two_stage_e{e}", e) for i, e in enumerate(budgets)]  # fmt: skip
    widths = [int(w) for w in args.two_stage_hidden.split(",")]
    fit_s = {}
    for kind, name, epochs in fits:
        t = time.time()
        if not (run / "samplers" / f"{name}.json").exists():
            fit_run_sampler(
                run, kind, name=name, epochs=epochs, seed=args.seed, max_examples=args.max_codes,
                hidden=widths if kind == "two_stage" else None,
            )  # fmt: skip
            fit_s[name] = round(time.time() - t, 1)

    model, cfg, splits = load_run(run, "best")
    train_x, train_y = splits.train.x, splits.train.y  # grey images in [0, 1]
    torch.manual_seed(args.seed)
    clf = classifier(train_x, train_y, seed=args.seed)
    test_x = splits.test.x
    with torch.no_grad():
        accuracy = float((clf(test_x).argmax(1) == splits.test.y).double().mean())
    common = {**base, "classifier_test_accuracy": accuracy, "reference": "test images (grey)"}

    rows = {"validation images (floor)": lambda n: splits.valid.x[:n]}

    def decoded(z: torch.Tensor) -> torch.Tensor:  # E[x|z]: Bernoulli means, grey values
        with torch.no_grad():
            return model.decode(z).mean.reshape(len(z), -1)

    rows["prior N(0, I)"] = lambda n: decoded(model.prior().sample((n,)))
    for _, name, _ in fits:
        sampler = load_sampler(run, name)
        rows[name] = lambda n, s=sampler: decoded(s.latents(n))
    for name, draw in rows.items():
        torch.manual_seed(args.seed + 1)
        x = draw(args.samples)
        info = {}
        if (run / "samplers" / f"{name}.json").exists():
            info = json.loads((run / "samplers" / f"{name}.json").read_text())["info"]
            info = {k: v for k, v in info.items() if k != "history"}
            info["fit_s"] = fit_s.get(name)  # None: fitted by an earlier call
        emit(out, {**common, "row": name, "n": len(x), **sample_quality(clf, x, test_x), **info})


if __name__ == "__main__":
    main()
