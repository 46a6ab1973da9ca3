"""Post-hoc samplers: a better p(z) fitted on a trained VAE's codes (``vaekit fit-sampler``).

A VAE's aggregate posterior ``q(z) = E_x q(z|x)`` is generally not its prior, so decoding
``z ~ p(z)`` visits regions the decoder never saw ("holes"). Each sampler here is fitted to
the **posterior means** ``E_q[z|x]`` of the training set (a fixed binarisation draw; means
rather than draws, as pythae's GMM sampler and Dai & Wipf's second stage with
``codes="mean"``: the draws add the posterior's own noise, which the decoder averages out
anyway), and sampling becomes ``z ~ sampler -> E[x|z]``:

* ``gmm``: a full-covariance Gaussian mixture, ``p(z) = sum_k w_k N(z; mu_k, Sigma_k)``, fitted
  by EM with scikit-learn's ``GaussianMixture`` (the ``metrics`` extra; a well-kept EM with
  k-means initialisation and covariance regularisation, which a hand-written EM would
  re-implement); the number of components is the one of a small grid with the highest mean
  validation log-likelihood (nats per code, posterior means of the validation split).
  Sampling and ``log_prob`` then use ``torch.distributions`` only (no scikit-learn needed).
* ``flow``: a RealNVP (:class:`vaekit.flows.FlowPrior`) on the standardised codes, fitted by
  maximum likelihood (``log p(z) = log p_flow((z - m) / s) - sum_d log s_d`` nats).
* ``two_stage``: the second-stage VAE of Dai & Wipf (2019),
  :func:`vaekit.models.two_stage.fit_second_stage`; ``z = E p2(z|u)``, ``u ~ N(0, I)``.

Saved as ``RUN_DIR/samplers/NAME.safetensors`` (tensors) and ``NAME.json`` (kind,
constructor arguments, fit summary, the weights' SHA-256), loaded without pickle by
:func:`load_sampler`. Samplers apply to ``--model vae`` runs (one latent vector z).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from vaekit._checks import check_choice, check_count

__all__ = [
    "SAMPLER_KINDS",
    "GaussianMixtureSampler",
    "FlowSampler",
    "SecondStageSampler",
    "fit_gmm",
    "fit_flow",
    "fit_two_stage",
    "save_sampler",
    "load_sampler",
    "fit_run_sampler",
    "run_codes",
]

SAMPLER_KINDS = ("gmm", "two_stage", "flow")
GMM_COMPONENTS = (1, 2, 5, 10, 20, 40)  # the grid searched on validation likelihood


def _check_codes(name: str, z: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] == 0:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name} must be a non-empty tensor of codes [N, D]; received {shape}")
    if dim is not None and z.shape[1] != dim:
        raise ValueError(f"{name} must have D = {dim} columns; received {z.shape[1]}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} must be finite; received NaN or Inf codes")
    return z


def _check_n(n: int) -> int:
    return check_count("n", n, 1)


class GaussianMixtureSampler(nn.Module):
    """``p(z) = sum_k softmax(logits)_k N(z; loc_k, L_k L_k^T)``: ``log_prob`` ``[N]`` nats.

    Buffers ``logits [K]``, ``loc [K, D]``, ``scale_tril [K, D, D]`` (lower Cholesky factors).
    """

    kind = "gmm"

    def __init__(self, components: int, dim: int):
        super().__init__()
        check_count("components", components)
        check_count("dim", dim)
        self.register_buffer("logits", torch.zeros(components))
        self.register_buffer("loc", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).expand(components, dim, dim).clone())

    def config(self) -> dict[str, int]:
        """Constructor arguments (for :func:`load_sampler`)."""
        return {"components": self.loc.shape[0], "dim": self.loc.shape[1]}

    def distribution(self) -> MixtureSameFamily:
        """The mixture as a ``torch.distributions`` object (event shape ``[D]``)."""
        return MixtureSameFamily(
            Categorical(logits=self.logits),
            MultivariateNormal(self.loc, scale_tril=self.scale_tril),
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for codes ``[N, D]``: ``[N]`` nats."""
        return self.distribution().log_prob(_check_codes("z", z, self.loc.shape[1]))

    @torch.no_grad()
    def latents(self, n: int) -> torch.Tensor:
        """``n`` codes ``z ~ p(z)``: ``[n, D]`` (global RNG)."""
        return self.distribution().sample((_check_n(n),))


def fit_gmm(
    codes: torch.Tensor,
    valid: torch.Tensor,
    components: Sequence[int] = GMM_COMPONENTS,
    seed: int = 0,
) -> tuple[GaussianMixtureSampler, dict[str, Any]]:
    """Fit a full-covariance mixture by EM for each K in ``components``; keep the best on ``valid``.

    Selection: the highest mean ``log p(z)`` over the validation codes (nats per code).
    Returns the sampler and ``{"components": K, "valid_log_lik": {K: nats}, "train_codes": N}``.
    """
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError:
        raise ImportError(
            "the gmm sampler fits with scikit-learn: pip install 'vaekit[metrics]'"
        ) from None
    codes, valid = _check_codes("codes", codes), _check_codes("valid", valid, codes.shape[1])
    grid = [check_count("components", int(k)) for k in components]
    if not grid:
        raise ValueError("components must list at least one number of components; received none")
    x, xv = codes.double().numpy(), valid.double().numpy()
    scores: dict[int, float] = {}
    best = None
    for k in grid:
        if k > len(x):
            continue
        gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=seed)
        gm.fit(x)
        scores[k] = float(gm.score(xv))  # mean log-likelihood per validation code, nats
        if best is None or scores[k] > scores[best[0]]:
            best = (k, gm)
    if best is None:
        raise ValueError(
            f"components must hold a K <= the number of codes ({len(x)}); received {grid}"
        )
    k, gm = best
    sampler = GaussianMixtureSampler(k, codes.shape[1])
    with torch.no_grad():
        sampler.logits.copy_(torch.from_numpy(gm.weights_).log())
        sampler.loc.copy_(torch.from_numpy(gm.means_))
        sampler.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(gm.covariances_)))
    info = {"components": k, "valid_log_lik": scores, "train_codes": len(x)}
    return sampler, info


class FlowSampler(nn.Module):
    """RealNVP on standardised codes: ``log p(z) = log p_flow((z - m) / s) - sum_d log s_d`` nats.

    ``m``, ``s`` (buffers ``shift``, ``scale`` ``[D]``) are the training codes' mean and
    standard deviation; ``flow`` is a :class:`vaekit.flows.FlowPrior`.
    """

    kind = "flow"

    def __init__(self, dim: int, layers: int = 8, hidden: int = 64):
        super().__init__()
        from vaekit.flows import FlowPrior

        self.flow = FlowPrior(dim, layers=layers, hidden=hidden)
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self._config = {"dim": dim, "layers": layers, "hidden": hidden}

    def config(self) -> dict[str, int]:
        """Constructor arguments (for :func:`load_sampler`)."""
        return dict(self._config)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` for codes ``[N, D]``: ``[N]`` nats."""
        z = _check_codes("z", z, self.shift.shape[0])
        u = (z - self.shift) / self.scale
        return self.flow().log_prob(u) - self.scale.log().sum()

    @torch.no_grad()
    def latents(self, n: int) -> torch.Tensor:
        """``n`` codes ``z ~ p(z)``: ``[n, D]`` (global RNG)."""
        return self.flow().sample((_check_n(n),)) * self.scale + self.shift


def _mean_log_prob(sampler: nn.Module, z: torch.Tensor, batch: int = 1000) -> float:
    with torch.no_grad():
        return float(
            torch.cat([sampler.log_prob(z[i : i + batch]) for i in range(0, len(z), batch)]).mean()
        )


def fit_flow(
    codes: torch.Tensor,
    valid: torch.Tensor,
    *,
    layers: int = 8,
    hidden: int = 64,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[FlowSampler, dict[str, Any]]:
    """Fit a :class:`FlowSampler` by maximum likelihood (Adam on ``-log p(z)``, nats per code).

    The weights kept are those of the epoch with the highest validation ``log p(z)``.
    Returns the sampler and ``{"valid_log_lik": nats, "best_epoch": e, "history": [...]}``.
    """
    from vaekit.training.fit import fit

    codes, valid = _check_codes("codes", codes), _check_codes("valid", valid, codes.shape[1])
    check_count("epochs", epochs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampler = FlowSampler(codes.shape[1], layers=layers, hidden=hidden)
    with torch.no_grad():
        sampler.shift.copy_(codes.mean(0))
        sampler.scale.copy_(codes.std(0).clamp_min(1e-3))
    best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None}
    history: list[float] = []

    def keep_best() -> None:  # validation log p(z) of the weights as they are now
        score = _mean_log_prob(sampler, valid)
        history.append(score)
        if score > best["score"]:
            state = {k: v.clone() for k, v in sampler.state_dict().items()}
            best.update(score=score, epoch=len(history), state=state)

    def epoch_codes(epoch: int) -> torch.Tensor:  # called before each epoch: score the last
        if epoch > 0:
            keep_best()
        return codes

    fit(
        sampler,
        lambda zb: -sampler.log_prob(zb),  # per code, nats
        epoch_codes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=torch.Generator().manual_seed(seed),
        desc="flow sampler",
    )
    keep_best()
    sampler.load_state_dict(best["state"])
    info = {"valid_log_lik": best["score"], "best_epoch": best["epoch"], "history": history}
    return sampler.eval(), info


class SecondStageSampler(nn.Module):
    """The two-stage VAE's ``p2(z) = int N(u; 0, I) p2(z|u) du``; ``latents``: ``z = E p2(z|u)``.

    ``second`` is :func:`vaekit.models.two_stage.second_stage_vae` (``dim`` codes,
    ``latent_dim`` u, ``hidden`` widths); :meth:`elbo` is its lower bound on ``log p2(z)``.
    """

    kind = "two_stage"

    def __init__(
        self, dim: int, latent_dim: int | None = None, hidden: Sequence[int] = (1024, 1024)
    ):
        super().__init__()
        from vaekit.models.two_stage import second_stage_vae

        latent_dim = dim if latent_dim is None else latent_dim
        self.second = second_stage_vae(dim, latent_dim, hidden)
        self._config = {"dim": dim, "latent_dim": latent_dim, "hidden": list(hidden)}

    def config(self) -> dict[str, Any]:
        """Constructor arguments (for :func:`load_sampler`)."""
        return dict(self._config)

    @torch.no_grad()
    def elbo(self, z: torch.Tensor) -> torch.Tensor:
        """``ELBO_2(z) = E_q2(u|z) log p2(z|u) - KL(q2(u|z) || N(0, I))`` <= log p2(z): ``[N]`` nats
        (one draw of u; analytic KL)."""
        from vaekit.objectives import ELBO

        z = _check_codes("z", z, self._config["dim"])
        return ELBO(kl="analytic", reduction="none")(self.second, z).per_example["bound"]

    @torch.no_grad()
    def latents(self, n: int) -> torch.Tensor:
        """``n`` codes ``z = E p2(z|u)``, ``u ~ N(0, I)`` (as Dai & Wipf): ``[n, D]`` (global RNG)."""
        u = self.second.prior().sample((_check_n(n),))
        return self.second.decode(u).mean


def fit_two_stage(
    first: nn.Module,
    x: torch.Tensor,
    valid_codes: torch.Tensor,
    *,
    hidden: Sequence[int] = (1024, 1024),
    epochs: int = 50,
    seed: int = 0,
) -> tuple[SecondStageSampler, dict[str, Any]]:
    """The second stage fitted on ``first``'s posterior means of ``x`` (:func:`fit_second_stage`).

    Returns the sampler and ``{"valid_elbo": mean ELBO_2 of the validation codes, nats}``.
    """
    from vaekit.models.two_stage import fit_second_stage

    second = fit_second_stage(first, x, hidden=hidden, epochs=epochs, codes="mean", seed=seed)
    dim = valid_codes.shape[1]
    sampler = SecondStageSampler(dim, hidden=hidden)
    sampler.second.load_state_dict(second.state_dict())
    sampler.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        score = float(sampler.elbo(_check_codes("valid_codes", valid_codes, dim)).mean())
    return sampler, {"valid_elbo": score, "epochs": epochs}


_CLASSES = {"gmm": GaussianMixtureSampler, "flow": FlowSampler, "two_stage": SecondStageSampler}


def _sampler_paths(run_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    if (
        not isinstance(name, str)
        or not name
        or not all(c.isalnum() or c in "_-." for c in name)
        or name.startswith(".")
    ):
        raise ValueError(
            f"sampler name must be letters, digits, '_', '-' or '.' (not leading); received {name!r}"
        )
    folder = Path(run_dir) / "samplers"
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_sampler(
    sampler: nn.Module, run_dir: str | os.PathLike, name: str, info: dict[str, Any] | None = None
) -> Path:
    """Write ``RUN_DIR/samplers/NAME.safetensors`` and ``NAME.json``; returns the JSON path."""
    from safetensors.torch import save_model

    from vaekit._files import atomic_write_text

    weights, meta = _sampler_paths(run_dir, name)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_model(sampler, str(tmp))
    os.replace(tmp, weights)
    record = {
        "kind": sampler.kind,
        "config": sampler.config(),
        "info": info or {},
        "sha256": _sha256(weights),
    }
    atomic_write_text(meta, json.dumps(record, indent=2))
    return meta


def load_sampler(run_dir: str | os.PathLike, name: str) -> nn.Module:
    """The sampler ``NAME`` of a run (``vaekit fit-sampler``), weights read with safetensors.

    A missing sampler names the ones the run has; a weights file whose SHA-256 differs from
    the one in ``NAME.json`` is refused (ValueError).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights, meta = _sampler_paths(run_dir, name)
    if not meta.is_file() or not weights.is_file():
        have = sorted(p.stem for p in meta.parent.glob("*.json")) if meta.parent.is_dir() else []
        raise ValueError(
            f"sampler must name a fitted sampler of {str(run_dir)!r} ({', '.join(have) or 'none yet'}: "
            f"vaekit fit-sampler RUN_DIR --kind {'|'.join(SAMPLER_KINDS)}); received {name!r}"
        )
    record = json.loads(meta.read_text())
    check_choice("kind", record.get("kind"), SAMPLER_KINDS)
    if _sha256(weights) != record.get("sha256"):
        raise ValueError(
            f"{weights} does not match the SHA-256 recorded in {meta.name}: changed or damaged "
            "after fitting; refit it (vaekit fit-sampler)"
        )
    sampler = _CLASSES[record["kind"]](**record["config"])
    try:
        load_model(sampler, str(weights), strict=True)
    except (SafetensorError, RuntimeError) as e:
        raise ValueError(f"{weights} could not be loaded: {str(e)[:300]}") from None
    return sampler.eval()


def run_codes(model: nn.Module, cfg, splits, split: str, n: int | None = None) -> torch.Tensor:
    """Posterior means ``E_q[z|x]`` ``[N, D]`` of a run's ``split`` (its fixed evaluation draw;
    the first ``n`` examples when given)."""
    from vaekit.evaluate import posterior_means
    from vaekit.models.build import input_shape, prepare_input

    data = getattr(splits, split, None)
    if data is None:
        raise ValueError(f"the data set has no {split!r} split, which the sampler fit needs")
    shape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
    return posterior_means(model, prepare_input(model, data.eval_view().x[:n], shape))


def fit_run_sampler(
    run_dir: str | os.PathLike,
    kind: str,
    name: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    max_examples: int | None = None,
    hidden: Sequence[int] | None = None,
) -> Path:
    """Fit sampler ``kind`` on a run's training codes, selected on its validation codes; save it.

    ``epochs``: training epochs of ``flow`` (default 30) / ``two_stage`` (default 50); not used
    by ``gmm`` (EM runs to convergence; passing it is an error). ``max_examples``: fit on the
    first N training examples only (default all). ``hidden``: the
    ``two_stage`` networks' widths (default ``(1024, 1024)``). Returns ``NAME.json``'s path.
    """
    from vaekit.training.run import load_run

    check_choice("kind", kind, SAMPLER_KINDS)
    name = kind if name is None else name
    _sampler_paths(run_dir, name)
    if kind == "gmm" and epochs is not None:
        raise ValueError(
            f"--epochs trains flow and two_stage samplers; kind 'gmm' received {epochs}"
        )
    if epochs is not None:
        check_count("epochs", epochs)
    if hidden is not None and kind != "two_stage":
        raise ValueError(
            f"hidden sets the two_stage networks' widths; kind {kind!r} received {hidden}"
        )
    if max_examples is not None:
        check_count("max_examples", max_examples)
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"RUN_DIR must be a run folder; {str(run_dir)!r} does not exist")
    model, cfg, splits = load_run(run_dir, "best")
    if cfg.model.model != "vae":
        raise ValueError(
            f"post-hoc samplers fit one latent vector z: model 'vae'; received {cfg.model.model!r}"
        )
    n = len(splits.train) if max_examples is None else min(max_examples, len(splits.train))
    train, valid = run_codes(model, cfg, splits, "train", n), run_codes(model, cfg, splits, "valid")
    if kind == "gmm":
        sampler, info = fit_gmm(train, valid, seed=seed)
    elif kind == "flow":
        sampler, info = fit_flow(train, valid, epochs=epochs or 30, seed=seed)
    else:
        from vaekit.models.build import input_shape, prepare_input

        ishape = input_shape(cfg.model, splits.image_shape, splits.event_shape)
        x = prepare_input(model, splits.train.eval_view().x[:n], ishape)
        sampler, info = fit_two_stage(
            model, x, valid, epochs=epochs or 50, seed=seed, hidden=hidden or (1024, 1024)
        )
    return save_sampler(
        sampler,
        run_dir,
        name,
        {**info, "codes": f"posterior means E_q[z|x] of the first {n} train examples"},
    )
