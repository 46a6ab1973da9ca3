"""Importance-sampled log-likelihood: vaekit vs a plain estimator vs the matmul bound, one process.

Model: the default MLP VAE (784-300-300-(2x40), tanh), untrained weights (speed does not
depend on them), on the first ``--examples`` MNIST-sized examples, K = ``--samples``.

- ``samples_per_s``: examples x importance samples per second of ``vaekit.evaluate.log_likelihood``.
- ``plain_samples_per_s``: a hand-written estimator in this file (encoder once, K samples at
  a time through the decoder, logsumexp), the same networks, ``torch.no_grad``.
- ``bound_samples_per_s``: examples x samples / time of the decoder matmuls alone
  (``torch.mm`` at the same shapes) plus the encoder's once per example.
- ``peak_rss_mib``: peak resident memory of the process (ru_maxrss).

    python benchmarks/nll_eval.py --examples 1000 --samples 5000
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from _common import environment
from torch import nn

from vaekit.config import RunConfig
from vaekit.evaluate import log_likelihood
from vaekit.models.build import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RunConfig().replace(activation="tanh")
    model = build_model(cfg.model, (1, 28, 28), (784,)).eval()
    x = torch.bernoulli(torch.rand(args.examples, 784))
    K, B = args.samples, args.batch_size
    work = args.examples * K

    def library() -> float:
        t = time.perf_counter()
        log_likelihood(model, x, samples=K, batch_size=B)
        return work / (time.perf_counter() - t)

    chunk = 100  # samples per decoder call in the plain estimator

    @torch.no_grad()
    def plain() -> float:
        t = time.perf_counter()
        for i in range(0, args.examples, B):
            xb = x[i : i + B]
            mu, logvar = model.encoder(xb).chunk(2, -1)
            std = torch.exp(0.5 * logvar)
            parts = []
            for _ in range(0, K, chunk):
                eps = torch.randn(chunk, *mu.shape)
                z = mu + std * eps
                logits = model.decoder(z.reshape(-1, mu.shape[-1])).reshape(chunk, xb.shape[0], -1)
                log_px = -F.binary_cross_entropy_with_logits(
                    logits, xb.expand_as(logits), reduction="none"
                ).sum(-1)
                log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
                log_qz = -0.5 * (eps.square() + math.log(2 * math.pi)).sum(-1) - torch.log(std).sum(
                    -1
                )
                parts.append(torch.logsumexp(log_px + log_pz - log_qz, 0))
            torch.logsumexp(torch.stack(parts), 0) - math.log(K)
        return work / (time.perf_counter() - t)

    def bound() -> float:
        dec = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)]
        enc = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
        rows = 20 * B  # a representative chunk of rows
        mats = [(torch.randn(rows, m.in_features), m.weight.detach().T.contiguous()) for m in dec]
        emats = [(torch.randn(B, m.in_features), m.weight.detach().T.contiguous()) for m in enc]
        t = time.perf_counter()
        for _ in range(20):
            for a, w in mats:
                torch.mm(a, w)
        per_row = (time.perf_counter() - t) / (20 * rows)
        t = time.perf_counter()
        for _ in range(20):
            for a, w in emats:
                torch.mm(a, w)
        per_example = (time.perf_counter() - t) / (20 * B)
        return work / (work * per_row + args.examples * per_example)

    lib, ref, bnd = [], [], []
    for _ in range(args.repeats):
        lib.append(library())
        ref.append(plain())
        bnd.append(bound())
    row = {
        "benchmark": "nll_eval",
        "examples": args.examples,
        "samples": K,
        "samples_per_s": round(statistics.median(lib)),
        "plain_samples_per_s": round(statistics.median(ref)),
        "bound_samples_per_s": round(statistics.median(bnd)),
        "ratio_to_plain": round(statistics.median(a / b for a, b in zip(lib, ref, strict=True)), 3),
        "fraction_of_bound": round(
            statistics.median(a / b for a, b in zip(lib, bnd, strict=True)), 3
        ),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **environment(),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
