"""A run folder from start to finish: the Python API behind ``vaekit train | eval | sample``.

>>> import vaekit
>>> run = vaekit.train(out="runs/quick", epochs=2)          # doctest: +SKIP
>>> vaekit.evaluate_run(run, samples=5000)["nll"]            # doctest: +SKIP

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoint.pt`` (latest), ``best.pt`` (best validation ELBO), ``eval.json``, PNG
figures and ``report.html``.

This module only sequences the steps; the work lives where its subject does: the data set
in :func:`vaekit.data.load_data`, the numbers in :mod:`vaekit.evaluate` (``evaluate``,
``evaluate_vq``, ``disentanglement_scores``), the figures in :mod:`vaekit.plots`
(``draw_run_figures``, ``draw_loss_curves``), the training loop in
:class:`~vaekit.training.trainer.Trainer`. ``load_data``, ``DATASETS``, ``evaluate_vq`` and
``disentanglement_scores`` stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vaekit import plots
from vaekit._checks import check_choice
from vaekit.config import RunConfig, config_from_dict, load_config
from vaekit.data.load import DATASETS, load_data
from vaekit.discrete import evaluate_discrete, has_categorical_latent
from vaekit.evaluate import _to_unit, disentanglement_scores, evaluate, evaluate_vq
from vaekit.models.build import build_model, build_objective, input_shape, model_kind, prepare_input
from vaekit.report import write_report
from vaekit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_dict_mismatch,
)
from vaekit.training.folder import atomic_write_text, check_fresh, run_lock
from vaekit.training.trainer import Trainer, resolve_device, wrap_distributed

__all__ = ["train", "evaluate_run", "sample_run", "load_run", "load_data", "DATASETS"]


def _init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _resolve(config, out, resume: bool, overrides: dict[str, Any]) -> RunConfig:
    run_dir = Path(out)
    if not resume:
        return (
            load_config(config, overrides)
            if not isinstance(config, RunConfig)
            else config.replace(**overrides)
        )
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise ValueError(f"--resume: {run_dir} has no config.yaml; is it a run folder?")
    saved = load_config(saved_path)  # a damaged config.yaml is a ValueError, like any config
    name = overrides.get("objective")
    if name is not None and name != saved.objective.objective:
        raise ValueError(
            f"--resume with a changed objective: {saved.objective.objective!r} in the run, "
            f"{name!r} requested; resuming would mix two trainings in one run folder. Start a "
            "new run folder instead"
        )
    if isinstance(config, RunConfig):
        wanted = config.replace(**overrides)
    elif config is not None:
        wanted = load_config(config, overrides)
    else:
        wanted = saved.replace(**overrides)
    if wanted.model != saved.model:
        changed = {
            k: (getattr(saved.model, k), getattr(wanted.model, k))
            for k in vars(saved.model)
            if getattr(saved.model, k) != getattr(wanted.model, k)
        }
        raise ValueError(
            f"--resume with a different architecture: {changed} (saved -> requested); "
            "start a new run folder instead"
        )
    return wanted


def train(
    config: str | os.PathLike | RunConfig | None = None,
    out: str | os.PathLike = "runs/default",
    resume: bool = False,
    progress: bool = True,
    evaluate_after: bool = True,
    overwrite: bool = False,
    **overrides: Any,
) -> Path:
    """Train a VAE as ``config`` (a YAML path or RunConfig) and flat ``overrides`` say.

    Then evaluate it on the test split (``eval_samples`` importance samples), draw the
    figures and write ``report.html``. Returns the run folder. Under ``torchrun`` every
    process trains its shard of each batch; only rank 0 writes files.

    ``out`` must be empty or absent unless ``resume`` (continue the run in it) or
    ``overwrite`` (remove its run files first); the folder is locked for the whole call, so a
    second training or evaluation into it is refused while this one runs.
    """
    cfg = _resolve(config, out, resume, overrides)
    run_dir = Path(out)
    _init_distributed()
    rank = dist.get_rank() if dist.is_initialized() else 0
    splits = load_data(cfg.train)
    if cfg.model.model == "m2":  # semi-supervised: all but --labels N training labels withheld
        from vaekit.models.m2 import withhold_labels

        used = cfg.train.max_train_examples or None
        splits = withhold_labels(splits, cfg.model.labels, cfg.model.label_seed, used)
    if evaluate_after and getattr(splits, "test", None) is None:
        raise ValueError(
            "the data set has no test split, which the evaluation after training needs: add "
            "one (a 'test' array) or pass --no-eval"
        )
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    model = _build(cfg, splits).to(device)
    n_train = len(splits.train)
    if cfg.train.max_train_examples:
        n_train = min(n_train, cfg.train.max_train_examples)
    features = None
    if cfg.objective.objective == "perceptual":  # vaekit's own small classifier's features
        features = _perceptual_features(model, splits, shape, cfg).to(device)
    objective = build_objective(
        cfg.objective,
        cfg.model.prior,
        dataset_size=n_train,
        latent_dim=cfg.model.latent_dim,
        model=cfg.model,
        features=features,
        steps_per_epoch=math.ceil(n_train / cfg.train.batch_size),
        epochs=cfg.train.epochs,
        image_channels=splits.image_shape[0] if len(splits.image_shape) == 3 else None,
    )
    trained = wrap_distributed(model)
    if cfg.train.compile:
        trained = torch.compile(trained)
    trainer = Trainer(
        trained, objective, splits, cfg, run_dir, input_shape=shape, progress=progress
    )
    # every check above ran before the folder is touched; from here on it is this run's alone
    with run_lock(run_dir) if rank == 0 else contextlib.nullcontext():
        if rank == 0 and not resume:
            check_fresh(run_dir, overwrite)
        summary = trainer.fit(resume=resume)
        if rank != 0:
            return run_dir
        atomic_write_text(run_dir / "train_summary.json", json.dumps(summary, indent=2))
        if model_kind(cfg.model).quantized and cfg.model.prior_epochs:
            fit_run_code_prior(run_dir, progress=progress)
        if evaluate_after:
            evaluate_run(run_dir, samples=cfg.train.eval_samples, progress=progress)
        else:  # every run folder gets its report; the evaluation figures come with `vaekit eval`
            plots.draw_loss_curves(run_dir)
            write_report(run_dir)
        return run_dir


def load_run(run_dir: str | os.PathLike, which: str = "best", device: str = "cpu"):
    """``(model, config, splits)`` of a run folder; ``which`` = ``"best"`` or ``"last"``."""
    run_dir = Path(run_dir)
    check_choice("which", which, ("best", "last"))
    path = run_dir / ("best.pt" if which == "best" else "checkpoint.pt")
    if which == "best" and not path.exists():
        path = run_dir / "checkpoint.pt"
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {path} has no 'config' entry (not written by vaekit?)")
    cfg = config_from_dict(state["config"])
    splits = load_data(cfg.train)
    torch.manual_seed(cfg.train.seed)
    model = _build(cfg, splits)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint {path} does not match its own config: {state_dict_mismatch(e)}"
        ) from None
    if model_kind(cfg.model).quantized and (run_dir / _CODE_PRIOR).exists():
        model.prior = _load_code_prior(run_dir / _CODE_PRIOR, device)
    return model.to(device).eval(), cfg, splits


def _perceptual_features(model, splits, shape, cfg: RunConfig):
    """Hidden features of a small classifier trained on (a fixed draw of) the training set."""
    from vaekit.models.perceptual import feature_classifier

    train = splits.train.eval_view()
    if train.y is None:
        raise ValueError(
            "objective 'perceptual' trains its feature network on the training labels; this "
            "data set has none"
        )
    n = min(len(train), 20000)
    x = prepare_input(model, train.x[:n], shape)
    return feature_classifier(x, train.y[:n], seed=cfg.train.seed)


def _build(cfg: RunConfig, splits):
    """The run's model for its data (VampPrior init data, a CVAE's number of classes)."""
    y = getattr(splits.train, "y", None)
    classes = None if y is None or len(y) == 0 else int(y.max()) + 1
    return build_model(
        cfg.model,
        splits.image_shape,
        splits.event_shape,
        init_data=splits.train.x,
        num_classes=classes,
    )


_CODE_PRIOR = "code_prior.pt"
MAX_SAMPLES = 4096  # images in one sample grid (64 x 64)


def _load_code_prior(path: Path, device="cpu"):
    from vaekit.models.vqvae import CodePrior

    state = load_checkpoint(path, map_location=device)
    prior = CodePrior(int(state["num_codes"]), tuple(state["grid"]))
    prior.load_state_dict(state["model"])
    return prior.eval()


def fit_run_code_prior(
    run_dir: str | os.PathLike, max_examples: int = 60000, progress: bool = True
) -> Path:
    """Fit the autoregressive prior over a VQ-VAE run's codes; write ``RUN_DIR/code_prior.pt``.

    The best checkpoint's encoder codes the training images (a fixed draw, at most
    ``max_examples``); :class:`~vaekit.models.vqvae.CodePrior` is trained for
    ``model.prior_epochs`` epochs by maximum likelihood, ``-log p(codes)`` in nats.
    """
    from vaekit.models.vqvae import CodePrior, encode_dataset, fit_code_prior

    run_dir = Path(run_dir)
    model, cfg, splits = load_run(run_dir, "best")
    model.prior = None  # refit from scratch
    device = resolve_device(cfg.train.device)
    model.to(device)
    train = splits.train.eval_view()
    n = min(len(train), max_examples)
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    x = prepare_input(model, train.x[:n], shape)
    idx = encode_dataset(model, x.to(device))
    torch.manual_seed(cfg.train.seed)
    prior = CodePrior(model.num_codes, tuple(idx.shape[1:])).to(device)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    history = fit_code_prior(
        prior,
        idx.to(device),
        epochs=cfg.model.prior_epochs,
        batch_size=cfg.train.batch_size,
        lr=cfg.train.lr,
        generator=generator,
        progress=progress,
    )
    state = {
        "model": prior.state_dict(),  # the code prior (load_checkpoint's "model" entry)
        "num_codes": model.num_codes,
        "grid": list(idx.shape[1:]),
        "nll_per_epoch": [float(v) for v in history],
    }
    return save_checkpoint(state, run_dir / _CODE_PRIOR)


def evaluate_run(
    run_dir: str | os.PathLike,
    samples: int = 5000,
    batch_size: int = 100,
    split: str = "test",
    progress: bool = True,
    figures: bool = True,
    metrics: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate the best checkpoint on a fixed seeded draw of ``split``; write ``eval.json``.

    Also redraws the figures and the report (``figures=True``). ``metrics=("disentanglement",)``
    adds MIG, DCI, SAP, FactorVAE and beta-VAE scores of the posterior means (dSprites runs;
    see :func:`vaekit.metrics.evaluate_disentanglement`). Returns the eval dict.
    """
    for m in metrics:
        check_choice("metrics", m, ("disentanglement",))
    run_dir = Path(run_dir)
    check_choice("split", split, ("test", "valid"))
    model, cfg, splits = load_run(run_dir, "best")
    model.to(resolve_device(cfg.train.device))
    data = getattr(splits, split)
    if data is None:
        raise ValueError(f"the data set has no {split!r} split")
    view = data.eval_view()
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    x = prepare_input(model, view.x, shape)
    if model_kind(cfg.model).quantized:
        result = evaluate_vq(model, x, batch_size=batch_size)
    elif cfg.model.model == "m2":  # y summed out; test accuracy of q(y|x)
        from vaekit.models.m2 import evaluate_m2

        result = evaluate_m2(model, x, view.y, samples=samples, batch_size=batch_size)
    else:
        result = evaluate(
            model, x, samples=samples, batch_size=batch_size, progress=progress, labels=view.y
        )
    if has_categorical_latent(model):  # the code's numbers (and an exact NLL when enumerable)
        result.update(evaluate_discrete(model, x, view.y, batch_size=batch_size))
    result = {
        "split": split,
        "checkpoint": "best.pt" if (run_dir / "best.pt").exists() else "checkpoint.pt",
        **result,
    }
    if cfg.model.model in ("autoencoder_kl", "vqgan", "vqvae"):  # image models: PSNR, SSIM
        from vaekit.metrics.image import reconstruction_quality

        result.update(reconstruction_quality(model, x, batch_size=batch_size))
    if "disentanglement" in metrics:
        result["disentanglement"] = disentanglement_scores(model, cfg, shape)
    with run_lock(run_dir):
        atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2))
        if figures:
            plots.draw_run_figures(run_dir, model, cfg, splits, x, view.y, result)
            write_report(run_dir)
    return result


@torch.no_grad()
def sample_run(
    run_dir: str | os.PathLike,
    n: int = 64,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    mean: bool = True,
    label: int | None = None,
    sampler: str | None = None,
) -> Path:
    """Draw ``n`` samples from a run's best model into a PNG grid; returns its path.

    ``label``: the class to condition on (conditional models only). ``sampler``: draw z from
    ``RUN_DIR/samplers/NAME`` (:mod:`vaekit.samplers`) instead of the prior.
    """
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be in 1..{MAX_SAMPLES} (one PNG grid); received {n}")
    model, cfg, splits = load_run(run_dir, "best")
    if len(splits.image_shape) != 3:
        raise ValueError(
            f"samples are drawn as images; this run's data have shape {splits.image_shape}"
        )
    conditional = getattr(model, "given", None) is not None
    if conditional and label is None:
        raise ValueError(
            f"this run's model ({cfg.model.model}) is conditional: pass --label, one of "
            f"0..{model.labels.num_classes - 1}"
        )
    m2 = cfg.model.model == "m2"  # y ~ p(y), or the class --label names
    if not conditional and label is not None and not m2:
        raise ValueError(
            f"--label needs a conditional model (cvae, m2); this run is {cfg.model.model!r}"
        )
    classes = model.num_classes if m2 else getattr(getattr(model, "labels", None), "num_classes", 0)
    if label is not None and not 0 <= label < classes:
        raise ValueError(f"label must be in 0..{classes - 1}; received {label}")
    conditional = conditional or (m2 and label is not None)
    torch.manual_seed(seed)
    if sampler is not None:  # a post-hoc p(z) (vaekit fit-sampler)
        from vaekit.samplers import load_sampler

        px = model.decode(load_sampler(run_dir, sampler).latents(n))
        x = px.mean if mean else px.sample()
    else:
        x = model.sample(n, label=label, mean=mean) if conditional else model.sample(n, mean=mean)
    imgs = _to_unit(model, x.float()).reshape(n, *splits.image_shape)
    name = "samples.png" if sampler is None else f"samples_{sampler}.png"
    path = Path(out) if out is not None else Path(run_dir) / name
    title = f"{n} samples" + (f" of label {label}" if conditional else "")
    title += f", z from sampler {sampler}" if sampler is not None else ""
    return plots.save_image_grid(imgs, path, title=title)
