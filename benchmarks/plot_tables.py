"""Figures for docs/RESULTS.md from the tables' ``results.jsonl`` files.

    python benchmarks/plot_tables.py --disentangle benchmarks/out/disentangle/results.jsonl \\
        --variants benchmarks/out/variants/results.jsonl --vq benchmarks/out/vq/results.jsonl \\
        --iwae benchmarks/out/iwae/results.jsonl --out docs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure


def _rows(path: str | None) -> list[dict]:
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def disentangle(rows: list[dict], path: Path) -> None:
    """MIG and FactorVAE score per objective: one dot per seed, a bar at the median."""
    names = list(dict.fromkeys(r["objective"] for r in rows))
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("mig", "factor_vae"), strict=True):
        for i, name in enumerate(names):
            vals = sorted(r[key] for r in rows if r["objective"] == name)
            ax.bar(i, vals[len(vals) // 2], color="C0", alpha=0.35)
            ax.plot([i] * len(vals), vals, "o", color="C0")
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"{key} (dSprites, one dot per seed, bar = median)")
        ax.set_ylim(0, 1 if key == "factor_vae" else None)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=90)


def variants(rows: list[dict], path: Path) -> None:
    """Test NLL and active units of every variant on the same budget."""
    rows = [r for r in rows if r["variant"] != "cvae"]  # log p(x|y): another quantity
    names = [r["variant"] for r in rows]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    nll = [r["nll"] for r in rows]
    lo = min(nll)
    cap = min(max(nll), lo + 30)  # a far-off row (WAE: no KL in its loss) is cut and labelled
    a.barh(names, [min(v, cap) for v in nll], color="C0")
    for i, v in enumerate(nll):
        a.text(min(v, cap), i, f" {v:.1f}", va="center", fontsize=7)
    a.set_xlim(lo - 5, cap + 6)
    a.set_xlabel("test NLL (nats), lower is better")
    a.invert_yaxis()
    b.barh(names, [r["active_units"] for r in rows], color="C2")
    b.set_xlabel("active units")
    b.invert_yaxis()
    for ax in (a, b):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("MNIST (dynamic), one budget for every variant")
    fig.savefig(path, dpi=90)


def vq(rows: list[dict], path: Path) -> None:
    """Bits/dim and perplexity of each quantizer, per data set."""
    rows = [r for r in rows if "perplexity" in r]
    data = list(dict.fromkeys(r["data"] for r in rows))
    names = list(dict.fromkeys(r["quantizer"] for r in rows))
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("bits_per_dim", "perplexity"), strict=True):
        width = 0.8 / max(1, len(data))
        for j, d in enumerate(data):
            vals = [next((r[key] for r in rows if r["data"] == d and r["quantizer"] == n), 0)
                    for n in names]  # fmt: skip
            ax.bar([i + j * width for i in range(len(names))], vals, width, label=d)
        ax.set_xticks([i + width * (len(data) - 1) / 2 for i in range(len(names))], names)
        ax.set_title(key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=90)


def iwae(rows: list[dict], path: Path) -> None:
    """Test NLL against epochs (log axis) for each model and k, the published values dashed."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    keys = list(dict.fromkeys((r["model"], r["k"]) for r in rows))
    for i, (model, k) in enumerate(keys):
        pts = sorted((r["epochs"], r["nll"]) for r in rows if (r["model"], r["k"]) == (model, k))
        ax.plot(*zip(*pts, strict=True), "o-", color=f"C{i}", label=f"{model} k={k}")
        ax.axhline(rows[[(r["model"], r["k"]) for r in rows].index((model, k))]["published_nll"],
                   color=f"C{i}", ls="--", lw=0.8)  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted({r["epochs"] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("epochs")
    ax.set_ylabel("test NLL (nats); dashed: published (3280 passes)")
    ax.set_title("IWAE-paper protocol (MNIST, dynamic): the gap against epochs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--disentangle")
    p.add_argument("--variants")
    p.add_argument("--vq")
    p.add_argument("--iwae")
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    out = Path(args.out)
    for rows, fn, name in (
        (_rows(args.disentangle), disentangle, "disentangle.png"),
        (_rows(args.variants), variants, "variants.png"),
        (_rows(args.vq), vq, "vq.png"),
        (_rows(args.iwae), iwae, "iwae_epochs.png"),
    ):
        if rows:
            fn(rows, out / name)
            print(out / name)


if __name__ == "__main__":
    main()
