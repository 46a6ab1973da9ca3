"""M2 semi-supervised MNIST on the protocol of Pyro's ss-vae table; one JSON line per epoch.

Protocol (Pyro's ``examples/vae/ss_vae_M2.py`` as its tutorial runs it; Kingma et al. 2014):
grey MNIST in [0, 1] (50k train / 10k validation / 10k test), N labelled training examples
balanced over classes (``--labels``, drawn with ``--seed``), the other 50k - N unlabelled;
MLPs with one hidden layer of 500 softplus units, z of 50, batch 200, Adam lr 4.2e-4 with
beta1 0.95, alpha' = 46 on the summed ``-log q(y|x)``, 50 epochs. Each epoch interleaves the
labelled batches into the unlabelled ones as Pyro does (batch i is labelled when
``i % int(50000 / N) == 1``, until the labelled batches run out), losses summed over the batch
(``reduction="sum"``, as Pyro's SVI). After each epoch: validation and test accuracy of
``argmax q(y|x)``; the reported figure is the test accuracy at the epoch of best validation
accuracy (Pyro's "corresponding test accuracy").

``--estimator enumerate`` sums y out exactly; ``relaxed`` draws one Gumbel-softmax y
(temperature ``--temperature``); ``baseline`` trains only the classifier q(y|x) on the N
labelled examples (cross-entropy; the same network, optimiser and epochs, one labelled batch
at every step: an epoch is as many steps as M2's epoch, over the labelled set reshuffled).
``--schedule paired`` replaces Pyro's interleaving by Kingma et al.'s mixed minibatches: every
step one unlabelled batch and one labelled batch of ``--labelled-batch`` (losses summed).
``benchmarks/m2_pyro_reference.py`` trains Pyro's own implementation on the same split.

    python benchmarks/m2_table.py --labels 100 --seed 0 --out /work/runs-i17-m2/m2.jsonl
    python benchmarks/m2_table.py --summarize /work/runs-i17-m2/m2.jsonl   # the RESULTS table
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _common import environment

from vaekit._checks import validation
from vaekit.data import mnist
from vaekit.models.m2 import balanced_labels, build_m2, class_accuracy
from vaekit.objectives import M2Objective

# Pyro's tutorial (ss-vae, Table 1): mean test accuracy (95% half-width) over 5 labelled draws
PYRO = {
    100: (0.9319, 0.0060, 0.7712),
    600: (0.9437, 0.0070, 0.8716),
    1000: (0.9487, 0.0038, 0.8863),
    3000: (0.9582, 0.0012, 0.9108),
}


def _batches(n_lab: int, n_unlab: int, batch: int, gen: torch.Generator):
    """Pyro's interleaving: ``(labelled?, indices)`` per step, labelled batches at
    ``i % int(50000 / N) == 1``; both index sets reshuffled every epoch."""
    lab = torch.randperm(n_lab, generator=gen).split(batch)
    unlab = torch.randperm(n_unlab, generator=gen).split(batch)
    period = int(50000 / n_lab)
    ul, uu = 0, 0
    for i in range(len(lab) + len(unlab)):
        if i % period == 1 and ul < len(lab):
            yield True, lab[ul]
            ul += 1
        elif uu < len(unlab):
            yield False, unlab[uu]
            uu += 1
        else:  # what Pyro's loop would take next: the labelled batches left over
            yield True, lab[ul]
            ul += 1


def _paired_batches(n_lab: int, n_unlab: int, batch: int, lab_batch: int, gen: torch.Generator):
    """Every step an unlabelled batch and a labelled one (Kingma et al.'s mixed minibatches):
    ``(unlabelled indices, labelled indices)``; the labelled set reshuffled whenever it runs out."""
    pool: list[torch.Tensor] = []
    for b in torch.randperm(n_unlab, generator=gen).split(batch):
        if not pool:
            pool = list(torch.randperm(n_lab, generator=gen).split(lab_batch))
        yield b, pool.pop(0)


def _baseline_batches(n_lab: int, n_unlab: int, batch: int, gen: torch.Generator):
    """As many steps as an M2 epoch takes, each a batch of labelled examples (the labelled
    set reshuffled whenever it runs out): the classifier gets M2's optimiser budget."""
    steps = math.ceil(n_lab / batch) + math.ceil(n_unlab / batch)
    pool: list[torch.Tensor] = []
    for _ in range(steps):
        if not pool:
            pool = list(torch.randperm(n_lab, generator=gen).split(batch))
        yield True, pool.pop(0)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = mnist(binarize=None)
    x_tr, y_tr = splits.train.x, splits.train.y
    x_va, y_va = splits.valid.x, splits.valid.y
    x_te, y_te = splits.test.x, splits.test.y
    idx = balanced_labels(y_tr, args.labels, seed=args.seed, num_classes=10)
    mask = torch.zeros(len(y_tr), dtype=torch.bool)
    mask[idx] = True
    x_l, y_l, x_u = x_tr[mask], y_tr[mask], x_tr[~mask]
    model = build_m2((784,), 10, latent_dim=50, hidden=(500,), activation="softplus")
    objective = M2Objective(
        alpha=args.alpha,
        estimator="relaxed" if args.estimator == "relaxed" else "enumerate",
        relaxed_temperature=args.temperature,
        reduction="sum",
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    gen = torch.Generator().manual_seed(args.seed + 1)
    base = {
        "estimator": args.estimator,
        "labels": args.labels,
        "seed": args.seed,
        "epochs": args.epochs,
        "alpha": args.alpha,
        "lr": args.lr,
        "beta1": args.beta1,
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "labelled_batch": args.labelled_batch if args.schedule == "paired" else None,
        **environment(),
    }
    best = (-1.0, 0.0, -1)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        if args.estimator == "baseline":
            idx = _baseline_batches(len(y_l), len(x_u), args.batch_size, gen)
            batches = ((x_l[b], y_l[b]) for _, b in idx)
        elif args.schedule == "paired":
            lab_batch = min(len(y_l), args.labelled_batch)
            idx = _paired_batches(len(y_l), len(x_u), args.batch_size, lab_batch, gen)
            unlabelled = torch.full((args.batch_size,), -1, dtype=y_l.dtype)
            batches = (
                (torch.cat([x_u[bu], x_l[bl]]), torch.cat([unlabelled[: len(bu)], y_l[bl]]))
                for bu, bl in idx
            )
        else:
            idx = _batches(len(y_l), len(x_u), args.batch_size, gen)
            batches = ((x_l[b], y_l[b]) if lab else (x_u[b], None) for lab, b in idx)
        with validation(False):
            for x, y in batches:
                if args.estimator == "baseline":
                    loss = torch.nn.functional.cross_entropy(model.classify(x), y, reduction="sum")
                else:
                    loss = objective(model, x, y=y).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                count += len(x)
        model.eval()
        valid_acc, _ = class_accuracy(model, x_va, y_va)
        test_acc, _ = class_accuracy(model, x_te, y_te)
        if valid_acc > best[0]:
            best = (valid_acc, test_acc, epoch)
        row = {
            **base,
            "epoch": epoch,
            "train_loss_per_example": total / max(count, 1),
            "valid_accuracy": valid_acc,
            "test_accuracy": test_acc,
            "best_valid_accuracy": best[0],
            "test_accuracy_at_best_valid": best[1],
            "best_epoch": best[2],
            "epoch_seconds": time.perf_counter() - t0,
            "elapsed_seconds": time.perf_counter() - t_start,
            "final": epoch == args.epochs,
        }
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarize(path: str, at_epoch: int | None = None) -> None:
    """The RESULTS table from the per-epoch JSON lines: one row per (estimator, labels);
    each run contributes its test accuracy at best validation accuracy over the epochs it
    completed, or over its first ``at_epoch`` epochs (``s<seed>:<epochs>`` in the table)."""
    last: dict[tuple, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if at_epoch is None or r["epoch"] <= at_epoch:
                key = (r["estimator"], r.get("schedule", "pyro"), r["labels"], r["seed"])
                last[key] = r
    groups: dict[tuple, list[dict]] = {}
    for (est, schedule, n, _), r in sorted(last.items()):
        groups.setdefault((est, schedule, n), []).append(r)
    print(
        "| estimator | schedule | labels | runs (epochs done) | test accuracy, mean (95% half-width) "
        "| Pyro M2 | Pyro baseline |"
    )
    print("|---|---|---|---|---|---|---|")
    for (est, schedule, n), rows in sorted(groups.items()):
        accs = torch.tensor([r["test_accuracy_at_best_valid"] for r in rows], dtype=torch.float64)
        k = len(rows)
        half = _t95(k) * float(accs.std()) / math.sqrt(k) if k > 1 else float("nan")
        done = ", ".join(f"s{r['seed']}:{r['epoch']}" for r in rows)
        ref = PYRO.get(n, (float("nan"),) * 3)
        print(
            f"| {est} | {schedule} | {n} | {k} ({done}) | {float(accs.mean()):.4f} ({half:.4f}) "
            f"| {ref[0]:.4f} ({ref[1]:.4f}) | {ref[2]:.4f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="labelled draw and initialisation")
    p.add_argument("--estimator", default="enumerate", choices=("enumerate", "relaxed", "baseline"))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument(
        "--schedule",
        default="pyro",
        choices=("pyro", "paired"),
        help="pyro: a labelled batch every int(50000/N) steps (Pyro's loop); paired: every step "
        "one unlabelled batch plus one labelled batch of --labelled-batch (Kingma's mixed batches)",
    )
    p.add_argument("--labelled-batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=4.2e-4)
    p.add_argument("--beta1", type=float, default=0.95)
    p.add_argument("--alpha", type=float, default=46.0)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="/work/runs-i17-m2/m2.jsonl")
    p.add_argument("--summarize", default=None, metavar="JSONL", help="print the table and exit")
    p.add_argument(
        "--at-epoch", type=int, default=None, help="--summarize: over the first E epochs only"
    )
    args = p.parse_args()
    if args.summarize:
        summarize(args.summarize, args.at_epoch)
    else:
        run(args)


if __name__ == "__main__":
    main()
