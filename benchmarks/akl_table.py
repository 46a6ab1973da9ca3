"""AutoencoderKL / VQGAN / plain VAE on skimage_rgb, and quantizers on Fashion-MNIST.

Prints (and appends to ``--out``) one JSON line per logged step and one per finished run.

    python benchmarks/akl_table.py --part rgb --steps 400 --out /work/runs-i18/rgb.jsonl
    python benchmarks/akl_table.py --part codebook --steps 500 --out /work/runs-i18/cb.jsonl

``--part rgb``: on 64x64 RGB crops (``skimage_rgb``, seed 0), for f = 4 and 8 with the same
conv widths, batch and steps: ``vae`` (the AutoencoderKL networks, Gaussian likelihood with
the sigma-VAE's optimal shared sigma, the ELBO), ``akl_l1`` (the LDM loss without perceptual
and adversarial terms), ``akl_full`` (random-conv perceptual weight 1, hinge PatchGAN from
half-way, disc_weight 0.5) and ``vqgan`` (256-code EMA codebook, k-means initialised from the
first batch, code size 4, the same loss as akl_full). Test PSNR
(dB) and SSIM on the 500 test crops; KL per latent value, the learned log-variance and the
adaptive weight over training.

``--part codebook``: conv VQ-VAEs on Fashion-MNIST (grayscale in [0, 1], Bernoulli
likelihood): vq and ema codebooks with straight-through or the rotation trick, residual VQ
with 1 / 2 / 4 EMA codebooks, LFQ. Codes used on the test set (of K), perplexity, rec (nats),
PSNR.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch


def _emit(row: dict, out) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        with open(out, "a") as f:
            f.write(line + "\n")


def _batches(x: torch.Tensor, batch: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        for idx in torch.randperm(x.shape[0], generator=g).split(batch):
            if len(idx) < batch:
                continue
            yield done, x[idx]
            done += 1
            if done >= steps:
                return


def _train(model, objective, x, args, name, out, extra_log=None):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for step, xb in _batches(x, args.batch, args.steps, args.seed):
        res = objective(model, xb, step=step)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            row = {"run": name, "step": step, "seconds": round(time.time() - start, 1)}
            row.update({k: float(v) for k, v in res.metrics.items() if v.numel() == 1})
            if extra_log:
                row.update(extra_log(model, res))
            _emit(row, out)
    return time.time() - start


def _rgb(args, out):
    from vaekit import likelihoods as L
    from vaekit.data._skimage_rgb import skimage_rgb
    from vaekit.metrics.image import reconstruction_quality
    from vaekit.models.autoencoders import AutoencoderKL, SharedScaleLaplace, level_channels
    from vaekit.models.vqvae import build_vqvae
    from vaekit.objectives import ELBO, AutoencoderKLLoss, VQGANLoss

    data = skimage_rgb(seed=0)
    x = data.train.x.reshape(-1, 3, 64, 64)
    xt = data.test.x.reshape(-1, 3, 64, 64)
    half = args.steps // 2
    gan = dict(perceptual_weight=1.0, disc_start=half, disc_weight=0.5, disc_channels=16,
               disc_layers=2, image_channels=3)  # fmt: skip
    for f in args.factors:
        for kind in args.runs:
            torch.manual_seed(args.seed)
            name = f"{kind}_f{f}"
            if kind == "vqgan":
                model = build_vqvae((3, 64, 64), SharedScaleLaplace(), quantizer="ema",
                                    num_codes=256, code_dim=args.latent_channels, kmeans_init=True,
                                    channels=level_channels(args.channels, f))  # fmt: skip
                obj = VQGANLoss(**gan)
                latent = None
            else:
                lik = L.Gaussian(scale="optimal") if kind == "vae" else None
                model = AutoencoderKL((3, 64, 64), downsample=f, latent_channels=args.latent_channels,
                                      channels=args.channels, likelihood=lik)  # fmt: skip
                latent = math.prod(model.latent_shape)
                if kind == "vae":
                    obj = ELBO()
                elif kind == "akl_l1":
                    obj = AutoencoderKLLoss(perceptual_weight=0.0, disc_start=10**9,
                                            disc_channels=16, disc_layers=2, image_channels=3)  # fmt: skip
                else:
                    obj = AutoencoderKLLoss(**gan)

            def log(model, res, latent=latent):
                row = {}
                if latent is not None and "kl" in res.metrics:
                    row["kl_per_latent"] = float(res.metrics["kl"]) / latent
                return row

            seconds = _train(model, obj, x, args, name, out, log)
            q = reconstruction_quality(model, xt)
            params = sum(p.numel() for p in model.parameters())
            _emit({"run": name, "final": True, "psnr": q["psnr"], "ssim": q["ssim"],
                   "train_seconds": round(seconds, 1), "steps": args.steps, "batch": args.batch,
                   "params": params, "latent_values": latent}, out)  # fmt: skip


def _codebook(args, out):
    from vaekit.data import fashion_mnist
    from vaekit.metrics.image import reconstruction_quality
    from vaekit.models.vqvae import build_vqvae
    from vaekit.objectives import VQObjective
    from vaekit.quantizers import code_statistics

    if args.dataset == "skimage_rgb":
        from vaekit.data._skimage_rgb import skimage_rgb

        data, shape = skimage_rgb(seed=0), (3, 64, 64)
    else:
        data, shape = fashion_mnist(binarize=None, seed=0), (1, 28, 28)
    x = data.train.x[: args.train_examples].reshape(-1, *shape)
    xt = data.test.x[:2000].reshape(-1, *shape)
    k = 64
    variants = {
        "vq_st": dict(quantizer="vq"),
        "vq_rotation": dict(quantizer="vq", rotation_trick=True),
        "ema_st": dict(quantizer="ema"),
        "ema_rotation": dict(quantizer="ema", rotation_trick=True),
        "residual_1": dict(quantizer="residual", num_quantizers=1),
        "residual_2": dict(quantizer="residual", num_quantizers=2),
        "residual_4": dict(quantizer="residual", num_quantizers=4),
        "lfq": dict(quantizer="lfq"),
    }
    for name in args.runs:
        torch.manual_seed(args.seed)
        kw = dict(variants[name])
        code_dim = None if kw["quantizer"] == "lfq" else 16
        model = build_vqvae(shape, quantizer=kw.pop("quantizer"), num_codes=k,
                            code_dim=code_dim, channels=(16, 32), res_blocks=1, **kw)  # fmt: skip
        seconds = _train(model, VQObjective(), x, args, name, out)
        model.eval()
        with torch.no_grad():
            out_t = model(xt)
            idx = out_t.quantized.indices
            rec = -out_t.likelihood.log_prob(xt).mean().item()
        levels = (
            idx.movedim(1, -1).reshape(-1, idx.shape[1]) if idx.dim() == 4 else idx.reshape(-1, 1)
        )
        used = [
            int((torch.bincount(levels[:, i], minlength=k) > 0).sum())
            for i in range(levels.shape[1])
        ]
        perp = [code_statistics(levels[:, i], k)[0].item() for i in range(levels.shape[1])]
        q = reconstruction_quality(model, xt)
        _emit({"run": name, "final": True, "codes_used": used, "num_codes": k,
               "perplexity": perp, "rec_nats": rec, "psnr": q["psnr"], "ssim": q["ssim"],
               "train_seconds": round(seconds, 1), "steps": args.steps, "batch": args.batch}, out)  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("rgb", "codebook"), required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--factors", type=int, nargs="+", default=[4, 8])
    p.add_argument("--train-examples", type=int, default=10000)
    p.add_argument("--runs", nargs="+", default=None)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--dataset",
        default="fashion_mnist",
        choices=("fashion_mnist", "skimage_rgb"),
        help="--part codebook: the data set (skimage_rgb: 64x64 RGB crops)",
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.part == "rgb":
        args.runs = args.runs or ["vae", "akl_l1", "akl_full", "vqgan"]
        _rgb(args, args.out)
    else:
        args.runs = args.runs or ["vq_st", "vq_rotation", "ema_st", "ema_rotation",
                                  "residual_1", "residual_2", "residual_4", "lfq"]  # fmt: skip
        _codebook(args, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
