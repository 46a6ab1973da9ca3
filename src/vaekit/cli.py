"""Command line: ``vaekit train | eval | sample | export | fit-sampler | report | explore |
doctor | data fetch``.

Every config field is a flag (``latent_dim`` -> ``--latent-dim``); flags override
``--config FILE.yaml``, which overrides the defaults. ``vaekit train`` with no arguments
trains the default model (standard-prior VAE, dynamically binarised MNIST) for a short
budget, evaluates it and writes the report.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import fields
from pathlib import Path

from vaekit.config import ModelConfig, TrainConfig, field_sections

__all__ = ["main"]

_HELP = {
    "dataset": "mnist | fashion_mnist | dsprites | file | folder | skimage_rgb (RGB 64x64 crops "
    "of scikit-image's bundled photos; never binarised)",
    "binarize": "dynamic (fresh draw per batch, IWAE protocol) | static (one seeded draw) | none",
    "epochs": "number of passes over the training set",
    "latent_dim": "size of z",
    "model": "vae | hvae (two stochastic layers) | cvae (conditioned on labels) | vqvae | m2 "
    "(semi-supervised, Kingma et al. 2014; needs --labels) | autoencoder_kl (latent diffusion's "
    "VAE) | vqgan | jointvae (Gaussian + categorical latents)",
    "downsample": "autoencoder_kl/vqgan: spatial downsampling factor f: 2 | 4 | 8 | 16",
    "latent_channels": "autoencoder_kl: channels C of the latent map (latent C x H/f x W/f)",
    "channels": "autoencoder_kl/vqgan: width of the first conv level (then x2, x4, x4)",
    "labels": "m2: labelled training examples N, balanced over classes (C <= N <= train size); "
    "the others are trained on unlabelled",
    "label_seed": "m2: seed of the draw of the --labels N labelled examples",
    "prior": "standard | learnable | mog | vamp | flow",
    "posterior": "diagonal | iaf (inverse autoregressive flow steps) | gumbel (categorical latent)",
    "categories": "gumbel / jointvae: categories C of each categorical variable (>= 2)",
    "discrete_variables": "gumbel / jointvae: independent categorical variables M",
    "temperature": "gumbel / jointvae: Gumbel-softmax temperature (start value when annealed)",
    "temperature_end": "gumbel / jointvae: temperature reached after --temperature-steps",
    "temperature_steps": "gumbel / jointvae: optimizer steps of geometric annealing (0 = constant)",
    "hard": "gumbel / jointvae: one-hot samples with a straight-through gradient",
    "iaf_steps": "IAF steps of --posterior iaf",
    "flow_layers": "RealNVP coupling layers of --prior flow",
    "conditional_prior": "cvae: a learned p(z|y) instead of N(0, I)",
    "label_embedding": "cvae: onehot | embedding",
    "quantizer": "vqvae/vqgan: vq (codebook loss) | ema | fsq | residual | lfq",
    "rotation_trick": "vq/ema/residual: rotation trick (Fifty et al. 2024) for the gradient",
    "kmeans_init": "vq/ema/residual: initialise the codebook by k-means of the first batch",
    "num_quantizers": "residual: number of codebooks in sequence",
    "num_codes": "vqvae: codebook size K (0 = 512 for vq/ema, 1024 for fsq)",
    "code_dim": "vqvae: code size (0 = 64; fsq: its number of levels)",
    "commitment": "vqvae: commitment weight beta",
    "restart_after": "vqvae: re-initialise codes unused for this many steps (0 = off)",
    "prior_epochs": "vqvae: epochs of the autoregressive code prior fitted after training",
    "scale": "gaussian/laplace scale: a number, learned, optimal (sigma-VAE) or running (gaussian)",
    "likelihood": "bernoulli | continuous_bernoulli | gaussian | laplace | discretized_logistic | "
    "discretized_logistic_mixture | categorical",
    "time_limit": "minutes of training (checked every step; resumable)",
    "network": "mlp | gated | conv",
    "hidden": "hidden widths, e.g. 300,300",
    "mog_weights": "mog: learned | uniform (1/K fixed, the VampPrior paper's MoG)",
    "components": "mixture components / VampPrior pseudo-inputs (0 = 10 / 500)",
    "eval_samples": "importance samples for the test NLL written after training",
    "patience": "early stopping after this many epochs without a better validation ELBO (0 = off)",
    "on_nan": "stop | skip: what a non-finite loss does",
    "device": "auto | cpu | cuda | cuda:N | mps",
    "precision": "fp32 | bf16 (networks under torch.autocast; log-densities stay float32)",
}


def _objective_help() -> tuple[dict[str, str], str]:
    """Per-flag help for the objectives' fields and the epilog listing every objective."""
    from vaekit.objectives import OBJECTIVES

    per_flag: dict[str, list[str]] = {}
    lines = ["objectives (--objective NAME) and the fields each one takes, with defaults:"]
    for name, spec in OBJECTIVES.items():
        lines.append(f"  {name}: {spec.summary}")
        for param in spec.all_params:
            lines.append(f"      {param.describe()}")
            per_flag.setdefault(param.name, []).append(f"{name} {param.default!r}")
    flags = {k: "used by (default): " + ", ".join(v) for k, v in per_flag.items()}
    lines.append(
        "A flag the chosen objective does not use is an error (exit 2) naming the fields it takes."
    )
    return flags, "\n".join(lines)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from vaekit.objectives import OBJECTIVES

    obj_help, _ = _objective_help()
    objective = p.add_argument_group("objective")
    objective.add_argument(
        "--objective",
        dest="objective",
        default=None,
        metavar="NAME",
        help=" | ".join(OBJECTIVES) + " (default: elbo; vqvae for --model vqvae)",
    )
    for name in sorted(obj_help):
        objective.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=obj_help[name],
        )
    for section in (ModelConfig, TrainConfig):
        group = p.add_argument_group(section.__name__.replace("Config", "").lower())
        for f in fields(section):
            flag = "--" + f.name.replace("_", "-")
            help_text = _HELP.get(f.name, "")
            default = f.default
            help_text = f"{help_text} (default: {default!r})".strip()
            if isinstance(default, bool):
                group.add_argument(
                    flag,
                    dest=f.name,
                    default=None,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
            else:
                group.add_argument(
                    flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text
                )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vaekit", description="The VAE objective, with explicit units."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train (and evaluate) a VAE; writes a run folder",
        epilog=_objective_help()[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--out", default="runs/default", help="run folder (default: runs/default)")
    t.add_argument("--config", default=None, help="YAML file of config fields (flat or by section)")
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty --out (without it, or --resume, a non-empty --out "
        "is refused)",
    )
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_flags(t)

    e = sub.add_parser(
        "eval", help="importance-sampled test NLL and bound terms -> RUN_DIR/eval.json"
    )
    e.add_argument("run_dir")
    e.add_argument("--samples", type=int, default=5000, help="importance samples K (default 5000)")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--split", default="test", choices=["test", "valid"])
    e.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        choices=["disentanglement"],
        help="extra metrics: disentanglement (MIG, DCI, SAP, modularity, explicitness as "
        "disentanglement_lib computes them; FactorVAE, beta-VAE; dSprites runs; needs "
        'scikit-learn: pip install "vaekit[metrics]")',
    )
    e.add_argument("--quiet", action="store_true")

    s = sub.add_parser("sample", help="draw samples from a trained run into a PNG grid")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default=None, help="PNG path (default RUN_DIR/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label", type=int, default=None, help="class to condition on (cvae runs)")
    s.add_argument(
        "--draw", action="store_true", help="sample x ~ p(x|z) instead of showing E[x|z]"
    )
    s.add_argument(
        "--sampler",
        default=None,
        help="draw z from RUN_DIR/samplers/NAME (vaekit fit-sampler) instead of the prior; "
        "default --out RUN_DIR/samples_NAME.png",
    )

    x = sub.add_parser(
        "export", help="a shareable folder: model.safetensors, config.json, README.md"
    )
    x.add_argument("run_dir")
    x.add_argument("--format", default="safetensors", choices=["safetensors", "onnx"],
                   help="onnx: also decoder.onnx and encoder.onnx (model vae)")  # fmt: skip
    x.add_argument("--out", required=True, help="new or empty folder")

    fs = sub.add_parser("fit-sampler", help="fit p(z) on the codes after training")
    fs.add_argument("run_dir")
    fs.add_argument("--kind", required=True, choices=["gmm", "two_stage", "flow"])
    fs.add_argument("--name", default=None, help="saved as RUN_DIR/samplers/NAME (default KIND)")
    fs.add_argument("--epochs", type=int, default=None, help="two_stage/flow training epochs")
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--max-examples", type=int, default=None, help="fit on the first N (all)")

    r = sub.add_parser("report", help="write RUN_DIR/report.html")
    r.add_argument("run_dir")

    x = sub.add_parser(
        "explore",
        help="write RUN_DIR/explore.html: latent sliders, interpolation and attribute vectors, "
        "decoded in the page (self-contained, no network)",
    )
    x.add_argument("run_dir")
    x.add_argument("--out", default=None, help="HTML path (default RUN_DIR/explore.html)")
    x.add_argument(
        "--images", type=int, default=24, help="test images to pick A and B from (default 24)"
    )
    x.add_argument(
        "--examples",
        type=int,
        default=2000,
        help="test images for the KL ranking and attributes (default 2000)",
    )
    x.add_argument(
        "--labels-from",
        default=None,
        metavar="DIR",
        help="attributes from a folder of labelled sub-folders (DIR/<label>/*.png)",
    )
    x.add_argument(
        "--runtime",
        default="js",
        choices=["js", "onnxruntime-web"],
        help="js: the decoder as a small program in the page (default); onnxruntime-web: an ONNX "
        "export run by onnxruntime-web inlined from --ort-dir (~18 MB page for MNIST)",
    )
    x.add_argument(
        "--ort-dir", default=None, metavar="DIR", help="onnxruntime-web's dist folder (npm)"
    )
    doc = sub.add_parser(
        "doctor", help="diagnose a loss_function(recon_x, x, mu, logvar) against the exact -ELBO"
    )
    doc.add_argument("spec", metavar="MODULE:FUNCTION", help="e.g. mymodel:loss_function")
    doc.add_argument("--json", action="store_true", help="print one JSON object")
    doc.add_argument("--shape", default=None, help="one example's shape, e.g. 784 or 1,28,28")

    d = sub.add_parser("data", help="data sets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="put a data set in the cache (mnist | fashion_mnist)")
    f.add_argument("name")
    f.add_argument("--root", default=None, help="destination folder (default: the cache dir)")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    names = list(field_sections())
    flat = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "data_root" in flat:
        # typed by the user: relative to the working directory. (A relative data_root from a
        # config file is read from the data directory and may not climb out of it.)
        flat["data_root"] = str(Path(flat["data_root"]).absolute())
    return flat


def _run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if args.command == "train":
        from vaekit.training.run import train

        run = train(
            args.config,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
            evaluate_after=not args.no_eval,
            **_overrides(args),
        )
        from vaekit.export import record_command

        record_command(run, sys.argv[1:] if argv is None else argv)
        _print_eval(run)
        print(f"run folder: {run}  (report: {run / 'report.html'})")
    elif args.command == "eval":
        from vaekit.training.run import evaluate_run

        evaluate_run(
            args.run_dir,
            samples=args.samples,
            batch_size=args.batch_size,
            split=args.split,
            progress=not args.quiet,
            metrics=args.metrics,
        )
        _print_eval(Path(args.run_dir))
    elif args.command == "sample":
        from vaekit.training.run import sample_run

        print(
            sample_run(
                args.run_dir,
                n=args.n,
                out=args.out,
                seed=args.seed,
                mean=not args.draw,
                label=args.label,
                sampler=args.sampler,
            )
        )
    elif args.command == "export":
        from vaekit.export import export_run

        print(export_run(args.run_dir, args.out, format=args.format))
    elif args.command == "fit-sampler":
        from vaekit.samplers import fit_run_sampler

        print(fit_run_sampler(args.run_dir, args.kind, name=args.name, epochs=args.epochs,
                              seed=args.seed, max_examples=args.max_examples))  # fmt: skip
    elif args.command == "report":
        from vaekit.report import write_report

        print(write_report(args.run_dir))
    elif args.command == "explore":
        from vaekit.explore import explore_run

        print(
            explore_run(
                args.run_dir,
                out=args.out,
                n_images=args.images,
                max_examples=args.examples,
                labels_from=args.labels_from,
                runtime=args.runtime,
                ort_dir=args.ort_dir,
            )
        )
    elif args.command == "doctor":
        from vaekit.doctor import main as doctor

        return doctor(args.spec, as_json=args.json, shape=args.shape)
    elif args.command == "data":
        from vaekit.data import fetch

        print(fetch(args.name, root=args.root))
    return 0


def _print_eval(run: Path) -> None:
    import json

    path = run / "eval.json"
    if not path.exists():
        return
    r = json.loads(path.read_text())
    print(
        f"{r['split']} ({r['examples']} examples, K={r.get('samples', '-')}): NLL {r['nll']:.2f} nats  "
        f"ELBO {r['elbo']:.2f}  rec {r['rec']:.2f}  KL {r['kl']:.2f}  "
        f"{r['bits_per_dim']:.4f} bits/dim  active units {r['active_units']}"
    )
    if "accuracy" in r:  # M2: classification by q(y|x)
        print(f"test accuracy {r['accuracy']:.4f} (argmax q(y|x); confusion matrix in eval.json)")
    if "perplexity" in r:
        print(f"codes: {r['codes_used']}/{r['num_codes']} used, perplexity {r['perplexity']:.1f}")
    if "category_counts" in r:
        acc = r.get("cluster_accuracy")
        exact = r.get("nll_enumerated")
        print(
            f"categorical code: counts {r['category_counts']}"
            + (f"  cluster accuracy {acc:.4f}" if acc is not None else "")
            + (f"  NLL (codes summed out) {exact:.2f} nats" if exact is not None else "")
        )
    if "disentanglement" in r:
        print(
            "disentanglement: " + "  ".join(f"{k} {v:.3f}" for k, v in r["disentanglement"].items())
        )


def _options(parser: argparse.ArgumentParser, command: list[str]) -> list[str]:
    """The ``--long`` options of ``parser`` and of the sub-command path ``command``."""
    opts = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command and command[0]:
            sub = action.choices.get(command[0])
            if sub is not None:
                opts += _options(sub, command[1:])
    return opts


def _unrecognized(parser: argparse.ArgumentParser, args, unknown: list[str]) -> str:
    """argparse's message, plus "did you mean" for each misspelt ``--flag``."""
    options = _options(
        parser, [getattr(args, "command", None), getattr(args, "data_command", None)]
    )
    hints = []
    for arg in unknown:
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, options, n=1) if name.startswith("--") else []
        if close:
            hints.append(close[0])
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return f"unrecognized arguments: {' '.join(unknown)}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaekit`` command; returns the exit status."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(_unrecognized(parser, args, unknown))  # exits with status 2
    from vaekit.training.checkpoint import CheckpointError
    from vaekit.training.trainer import TrainingError, TrainingInterrupted

    try:
        return _run(args, argv)
    except TrainingInterrupted as e:
        print(
            f"\nvaekit: interrupted at step {e.step}; checkpoint saved to {e.path}. "
            f"Resume with: vaekit train --out {getattr(args, 'out', 'RUN_DIR')} --resume",
            file=sys.stderr,
        )
        return 130
    except TrainingError as e:
        print(f"vaekit: training stopped: {e}", file=sys.stderr)
        return 1
    except (ValueError, CheckpointError, FileNotFoundError, OSError, ImportError) as e:
        print(f"vaekit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
