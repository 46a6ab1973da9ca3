"""Shared by the table benchmarks: evaluate a run folder on (a subset of) its test split."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from vaekit.evaluate import evaluate
from vaekit.models.build import input_shape, prepare_input
from vaekit.training.run import load_run


def evaluate_test(run, samples: int, examples: int, pick: str = "random") -> dict:
    """``vaekit.evaluate.evaluate`` of the best checkpoint on the fixed test draw.

    ``examples`` < the test size takes a seeded random subset (``pick="random"``; the first
    MNIST test images are its easier half), the rest of the test set after that subset
    (``pick="rest"``) or the first ones (``pick="first"``). The result
    gains ``eval_examples`` and ``eval_pick``.
    """
    model, cfg, splits = load_run(run, "best")
    test = splits.test.eval_view()
    n = test.x.shape[0]
    if examples >= n:
        idx, pick = torch.arange(n), "all"
    elif pick in ("random", "rest"):
        # "rest": the test images the seeded random pick of ``examples`` leaves out
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1234))
        idx = (perm[:examples] if pick == "random" else perm[examples:]).sort().values
    else:
        idx = torch.arange(examples)
    x = prepare_input(
        model, test.x[idx], input_shape(cfg.model, splits.image_shape, splits.event_shape)
    )
    labels = None if test.y is None else test.y[idx]  # used by conditional models only
    result = evaluate(model, x, samples=samples, batch_size=100, labels=labels)
    return {**result, "eval_examples": int(x.shape[0]), "eval_pick": pick}


def environment() -> dict:
    """Where a figure was measured: threads, torch, machine, date (for every JSON row)."""
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def emit(out: Path, row: dict) -> None:
    """Append ``row`` as one JSON line to ``out/results.jsonl`` and print it."""
    with open(Path(out) / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
