"""Share a trained run: ``vaekit export RUN_DIR --out DIR`` and ``vaekit.load(DIR)``.

An export folder holds

* ``model.safetensors``: the best checkpoint's weights (safetensors: tensors only, no pickle);
* ``config.json``: the run's resolved config (the sections of ``config.yaml``: ``model``,
  ``objective``, ``train``) plus an ``export`` entry with what rebuilding the model needs
  beyond the config (example shape, number of classes, a VQ-VAE's code-prior grid) and the
  SHA-256 of every file (:func:`load` checks the weights' and refuses a changed file);
* ``README.md``: a model card with the run's evaluation numbers (``eval.json``, nats) and the
  command that trained it;
* with ``--format onnx``, also ``decoder.onnx`` (``z [B, D] -> decoder output [B, ...]``, the
  likelihood's parameters, e.g. Bernoulli logits) and ``encoder.onnx`` (``x -> [mean |
  log-variance]``), for the plain VAE kind (``vae`` with a diagonal posterior): the other
  kinds' decoders take more than z (a label, a second layer, code indices).

:func:`load` rebuilds the model from ``config.json`` and reads the weights with safetensors;
the result is the run's model in eval mode, usable as ``vaekit.ELBO()(model, x)``
(``ELBO(kl="mc")`` where KL(q || p) has no closed form: ``hvae``, ``mog``/``vamp``/``flow``
priors; a CVAE inside ``with model.given(y):``; a VQ-VAE with its own objective).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit._checks import check_choice

__all__ = ["export_run", "load", "record_command", "training_command", "ONNX_KINDS"]

FORMATS = ("safetensors", "onnx")
ONNX_KINDS = ("vae",)  # model kinds whose decoder is a function of z alone
_WEIGHTS = "model.safetensors"
_COMMAND = "command.json"  # written by `vaekit train` since issue 19

# eval.json keys shown in the model card: (label, unit)
_EVAL_UNITS = {
    "nll": ("test NLL, -log p(x) (importance sampled)", "nats"),
    "elbo": ("ELBO", "nats"),
    "rec": ("reconstruction, -E_q log p(x|z)", "nats"),
    "kl": ("KL(q(z|x) || p(z))", "nats"),
    "bits_per_dim": ("bits per dimension", "bits"),
    "active_units": ("active units (Cov_x E_q[z_d|x] > 0.01)", "count"),
    "samples": ("importance samples K", "count"),
    "examples": ("evaluated examples", "count"),
    "accuracy": ("label accuracy", "fraction"),
    "perplexity": ("code perplexity", "codes"),
    "codes_used": ("codes used", "count"),
    "num_codes": ("codebook size", "count"),
    "mse": ("mean squared error per pixel", "[0, 1] units squared"),
    "psnr": ("PSNR", "dB"),
    "ssim": ("SSIM", "unitless"),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_command(run_dir: str | os.PathLike, argv: list[str]) -> Path:
    """Append this ``vaekit train`` invocation to ``RUN_DIR/command.json`` (a list, oldest first).

    Each entry: ``{"argv": [...], "command": "vaekit train ...", "cwd": ...}``; a resumed run
    adds an entry. The model card quotes the first one.
    """
    import torch.distributed as dist

    path = Path(run_dir) / _COMMAND
    if dist.is_initialized() and dist.get_rank() != 0:  # under torchrun rank 0 writes the run
        return path
    entries: list[dict[str, Any]] = []
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            entries = loaded if isinstance(loaded, list) else []
        except (OSError, ValueError):
            entries = []
    entries.append(
        {"argv": list(argv), "command": shlex.join(["vaekit", *argv]), "cwd": os.getcwd()}
    )
    from vaekit._files import atomic_write_text

    atomic_write_text(path, json.dumps(entries, indent=2))
    return path


def training_command(run_dir: str | os.PathLike, config: dict[str, Any]) -> tuple[str, str]:
    """``(command, source)``: the command that trained the run and where it comes from.

    ``source`` is ``"recorded"`` (``RUN_DIR/command.json``) or ``"reconstructed"``: a
    ``vaekit train`` line with every field of the resolved ``config`` as a flag, which trains
    the same model (the run predates recorded commands).
    """
    path = Path(run_dir) / _COMMAND
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
            if entries and isinstance(entries[0].get("command"), str):
                return entries[0]["command"], "recorded"
        except (OSError, ValueError, AttributeError):
            pass
    args = ["vaekit", "train"]
    for section in ("model", "objective", "train"):
        for key, value in config.get(section, {}).items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + key.replace("_", "-"))
            elif isinstance(value, list):
                args += [flag, ",".join(str(v) for v in value)]
            elif value is not None:
                args += [flag, str(value)]
    args += ["--out", str(run_dir)]
    return shlex.join(args), "reconstructed"


def _model_card(run_dir: Path, config: dict[str, Any], files: dict[str, str], kind: str) -> str:
    command, source = training_command(run_dir, config)
    eval_path = run_dir / "eval.json"
    lines = [
        f"# vaekit model: {kind} on {config['train'].get('dataset', '?')}",
        "",
        f"Exported from the run folder `{run_dir}` by `vaekit export` (vaekit {_version()}).",
        "",
        "## Load it",
        "",
        "```python",
        "import vaekit",
        "model = vaekit.load('THIS_FOLDER')   # weights via safetensors, no pickle",
        *_usage(config),
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if eval_path.is_file():
        result = json.loads(eval_path.read_text())
        lines += [
            f"On the `{result.get('split', '?')}` split, checkpoint `{result.get('checkpoint', '?')}`"
            " (log-densities per example, summed over pixels, in nats):",
            "",
            "| quantity | value | unit |",
            "|---|---|---|",
        ]
        for key, (label, unit) in _EVAL_UNITS.items():
            value = result.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {label} (`{key}`) | {shown} | {unit} |")
    else:
        lines.append("The run was not evaluated (no eval.json); run `vaekit eval RUN_DIR`.")
    lines += [
        "",
        "## Training command",
        "",
        "Recorded when the run was trained:"
        if source == "recorded"
        else "Not recorded by the run (it predates recorded commands); this command, with every "
        "field of the resolved config as a flag, trains the same model:",
        "",
        "```",
        command,
        "```",
        "",
        "## Files",
        "",
        "| file | SHA-256 |",
        "|---|---|",
        *(f"| `{name}` | `{digest}` |" for name, digest in files.items()),
        "",
        "`config.json` holds the resolved config (`model`, `objective`, `train`) and, under "
        "`export`, the example shape and these checksums.",
        "",
    ]
    return "\n".join(lines)


def _usage(config: dict[str, Any]) -> list[str]:
    """The model card's lines after ``vaekit.load``: the call that gives the run's bound."""
    model = config["model"]
    kind = model.get("model", "vae")
    if kind == "vqvae":
        return ["x = model.sample(16)               # codes from the code prior, decoded"]
    analytic = kind in ("vae", "cvae") and model.get("prior") in ("standard", "learnable")
    analytic = analytic and model.get("posterior", "diagonal") == "diagonal"
    call = "vaekit.ELBO()" if analytic else 'vaekit.ELBO(kl="mc")'
    if kind == "cvae":
        return [
            "with model.given(y):                # y: [B] integer labels",
            f"    out = {call}(model, x)",
        ]
    return [
        f"out = {call}(model, x)   # x as the run's encoder takes it; out.per_example['bound'] nats"
    ]


def _version() -> str:
    import vaekit

    return vaekit.__version__


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out must be a new or empty folder; received {str(out)!r}, which "
            + ("is a file" if not out.is_dir() else "is not empty")
            + ": choose another folder or remove it"
        )


def _check_run(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR must be a run folder; {str(run_dir)!r} does not exist")
    if not (run_dir / "best.pt").is_file() and not (run_dir / "checkpoint.pt").is_file():
        raise ValueError(
            f"RUN_DIR must hold a checkpoint (best.pt or checkpoint.pt); {str(run_dir)!r} has "
            "none: train it first (vaekit train --out RUN_DIR)"
        )


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"--format onnx needs onnx and onnxscript ({e.name} is missing): "
            "pip install 'vaekit[onnx]'"
        ) from None


def _export_onnx(model: nn.Module, shape: tuple[int, ...], latent_dim: int, out: Path) -> None:
    """``decoder.onnx`` (``z -> decoder output``) and ``encoder.onnx`` (``x -> [mean | logvar]``)."""
    import contextlib
    import io
    import logging
    import warnings

    _onnx_modules()
    batch = torch.export.Dim("batch", min=1)
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # the exporter's progress lines and its torchvision notices
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name, net, example, inp, outp in (
            ("decoder", model.decoder, torch.zeros(2, latent_dim), "z", "params"),
            ("encoder", model.encoder, torch.zeros(2, *shape), "x", "posterior_params"),
        ):
            torch.onnx.export(
                net.eval(),
                (example,),
                str(out / f"{name}.onnx"),
                input_names=[inp],
                output_names=[outp],
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
    log.setLevel(level)


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    format: str = "safetensors",
    which: str = "best",
) -> Path:
    """Write the share folder of a run (see the module docstring); returns ``out``.

    ``format="onnx"`` writes the safetensors folder and also ``decoder.onnx`` and
    ``encoder.onnx`` (kinds in :data:`ONNX_KINDS`). Refuses a missing run, a run without a
    checkpoint and a non-empty ``out`` (ValueError / FileNotFoundError), before writing.
    """
    from safetensors.torch import save_model

    from vaekit.models.build import input_shape, model_kind
    from vaekit.training.run import load_run

    check_choice("format", format, FORMATS)
    run_dir, out = Path(run_dir), Path(out)
    _check_run(run_dir)
    _check_out(out)
    model, cfg, splits = load_run(run_dir, which)
    kind = cfg.model.model
    if format == "onnx":
        if kind not in ONNX_KINDS or cfg.model.posterior != "diagonal":
            raise ValueError(
                f"--format onnx exports the decoder z -> x of model kinds {ONNX_KINDS} with a "
                f"diagonal posterior; received model {kind!r} (posterior "
                f"{cfg.model.posterior!r}): use --format safetensors"
            )
        _onnx_modules()
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    y = getattr(splits.train, "y", None)
    info: dict[str, Any] = {
        "vaekit_version": _version(),
        "format": format,
        "model_kind": kind,
        "image_shape": list(splits.image_shape),
        "event_shape": list(splits.event_shape),
        "input_shape": list(shape),
        "num_classes": None if y is None or len(y) == 0 else int(y.max()) + 1,
        "checkpoint": which,
    }
    if model_kind(cfg.model).quantized and getattr(model, "prior", None) is not None:
        info["code_prior"] = {"num_codes": int(model.num_codes), "grid": list(model.prior.shape)}
    out.parent.mkdir(parents=True, exist_ok=True)
    # write into a temporary sibling folder, then rename: no half-written export folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_model(model, str(tmp / _WEIGHTS), metadata={"format": "pt", "vaekit": _version()})
        if format == "onnx":
            _export_onnx(model, shape, cfg.model.latent_dim, tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        config = cfg.to_dict()
        (tmp / "config.json").write_text(
            json.dumps({**config, "export": {**info, "sha256": files}}, indent=2)
        )
        (tmp / "README.md").write_text(_model_card(run_dir, config, files, kind))
        umask = os.umask(0)
        os.umask(umask)
        for p in tmp.iterdir():  # mkdtemp's folder is private (0700): share like any folder
            p.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"path must be an export folder (vaekit export) with config.json; {str(folder)!r} has "
            "none"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("export"), dict):
        raise ValueError(f"{path} has no 'export' entry; was it written by vaekit export?")
    return data


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model of an export folder: rebuilt from ``config.json``, weights read by safetensors.

    The weights file's SHA-256 must match the one recorded in ``config.json`` (a ValueError
    names the file otherwise: changed bytes would load as wrong weights silently). Returns the
    model in eval mode on ``device``; for ``vae``/``hvae``/``cvae`` kinds
    ``vaekit.ELBO()(model, x)`` gives the run's ELBO (nats; a CVAE needs ``y=``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from vaekit.config import config_from_dict
    from vaekit.models.build import build_model

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"path must be an export folder; {str(folder)!r} does not exist")
    data = _read_config(folder)
    info = data["export"]
    weights = folder / _WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"export folder {str(folder)!r} has no {_WEIGHTS}")
    expected = info.get("sha256", {}).get(_WEIGHTS)
    actual = _sha256(weights)
    if expected != actual:
        raise ValueError(
            f"{weights} does not match its SHA-256 in config.json (expected {expected}, "
            f"received {actual}): the file was changed or damaged after export; refusing to load it"
        )
    cfg = config_from_dict({k: v for k, v in data.items() if k != "export"})
    init = None
    if cfg.model.prior == "vamp" and cfg.model.pseudo_init == "data":
        # only the shape matters: the pseudo-inputs are parameters, read from the file below
        init = torch.zeros(cfg.model.components or 500, *info["event_shape"])
    with torch.random.fork_rng(devices=[]):
        model = build_model(
            cfg.model,
            tuple(info["image_shape"]),
            tuple(info["event_shape"]),
            init_data=init,
            num_classes=info.get("num_classes"),
        )
    if "code_prior" in info:
        from vaekit.models.vqvae import CodePrior

        model.prior = CodePrior(
            int(info["code_prior"]["num_codes"]), tuple(info["code_prior"]["grid"])
        )
    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except SafetensorError as e:
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None
    except RuntimeError as e:
        raise ValueError(f"{weights} does not match config.json's model: {str(e)[:400]}") from None
    return model.to(device).eval()
