"""Run configuration: one frozen dataclass per concern, merged from defaults, YAML and flags.

A YAML file may be nested by section (``model: {latent_dim: 40}``) or flat
(``latent_dim: 40``): every field name is unique across sections. Unknown keys are an
error with a suggestion. The resolved config is written to ``RUN_DIR/config.yaml`` and
into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vaekit._checks import check_choice

__all__ = ["ModelConfig", "ObjectiveConfig", "TrainConfig", "RunConfig", "load_config"]


@dataclass(frozen=True)
class ModelConfig:
    # vae | hvae (two stochastic layers of latent_dim each) | cvae (conditioned on the label)
    # | vqvae (conv VQ-VAE; network/prior/latent_dim do not apply)
    model: str = "vae"
    network: str = "mlp"  # mlp | gated | conv
    hidden: tuple[int, ...] = (300, 300)
    activation: str = "relu"
    latent_dim: int = 40
    prior: str = "standard"  # standard | learnable | mog | vamp | flow
    components: int = 0  # mixture components / pseudo-inputs; 0 = the prior's default (10 / 500)
    # mog mixture weights: "learned" (softmax of learnable logits) or "uniform" (1/K fixed, as
    # the VampPrior paper's MoG)
    mog_weights: str = "learned"
    # VampPrior pseudo-inputs: "random" (paper) or "data" (random training images)
    pseudo_init: str = "random"
    likelihood: str = "bernoulli"
    # Gaussian/Laplace scale: a float as a string, "learned", "optimal" (sigma-VAE) or, Gaussian
    # only, "running" (variance = running MSE, Asperti & Trentin 2020)
    scale: str = "learned"
    mixture_components: int = 10  # discretized logistic mixture
    posterior: str = "diagonal"  # diagonal | iaf (inverse autoregressive flow steps)
    iaf_steps: int = 2
    flow_layers: int = 4  # prior flow: RealNVP coupling layers
    conditional_prior: bool = False  # cvae: a learned p(z|y) instead of N(0, I)
    label_embedding: str = "onehot"  # cvae: onehot | embedding
    quantizer: str = "ema"  # vqvae: vq (codebook loss) | ema | fsq
    num_codes: int = 0  # vqvae: codebook size K; 0 = 512 (vq, ema) / 1024 (fsq)
    code_dim: int = 0  # vqvae: code size; 0 = 64 (vq, ema) / len(levels) (fsq)
    commitment: float = 0.25  # vqvae: commitment weight beta
    restart_after: int = 0  # vqvae: re-initialise codes unused this many steps; 0 = off
    prior_epochs: int = 10  # vqvae: epochs of the autoregressive code prior after training

    def __post_init__(self) -> None:
        _at_least(self, mixture_components=1)  # the likelihood would call it "components"
        _at_least(self, iaf_steps=1, flow_layers=1, num_codes=0, code_dim=0, restart_after=0)
        _at_least(self, prior_epochs=0, commitment=0)
        check_choice("model", self.model, ("vae", "hvae", "cvae", "vqvae"))
        check_choice("posterior", self.posterior, ("diagonal", "iaf"))
        check_choice("mog_weights", self.mog_weights, ("learned", "uniform"))
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"config key 'hidden' must hold widths >= 1; received {self.hidden!r}")


@dataclass(frozen=True)
class ObjectiveConfig:
    # elbo | iwae | miwae | ciwae | piwae | beta_tcvae | factor_vae | dip_vae | capacity | geco
    # | info_vae | wae | triplet | perceptual  (vqvae models always use the VQ-VAE objective)
    objective: str = "elbo"
    k: int = 1  # IWAE samples (inner samples K of MIWAE / CIWAE / PIWAE)
    m: int = 1  # outer samples M of MIWAE / PIWAE
    estimator: str = "standard"  # standard | stl | dreg
    samples: int = 1  # ELBO samples
    kl: str = "auto"  # auto (analytic where a closed form exists) | analytic | mc
    beta: float = 1.0
    warmup_epochs: float = 0.0  # linear KL warm-up 0 -> beta (VampPrior paper: 100)
    free_bits: float = 0.0
    # beta schedule: warmup (linear over warmup_epochs) | constant | cyclical (Fu et al. 2019:
    # `cycles` cycles over the whole run, each rising 0 -> beta over its first cycle_ratio)
    schedule: str = "warmup"
    cycles: int = 4
    cycle_ratio: float = 0.5
    # weight of the objective's extra term; 0 = its paper's default (factor_vae: TC weight 35,
    # capacity: 1000, beta_tcvae: 1 on MI and dimension-wise KL, with --beta on TC; triplet and
    # perceptual: 1)
    gamma: float = 0.0
    capacity: float = 25.0  # capacity: C_max in nats (Burgess et al. 2018)
    capacity_steps: int = 100000  # capacity: steps over which C rises 0 -> C_max
    tc_estimator: str = "mws"  # beta_tcvae: mws (minibatch weighted) | mss (stratified)
    dip: str = "ii"  # dip_vae: i | ii
    lambda_od: float = 10.0  # dip_vae: off-diagonal weight (diagonal: 10x for i, 1x for ii)
    mmd_weight: float = 0.0  # info_vae / wae: MMD weight; 0 = default (1000 / 10)
    kernel: str = "auto"  # info_vae / wae: rbf | imq; auto = rbf (info_vae), imq (wae)
    alpha: float = 0.0  # info_vae: alpha (loss rec + (1-alpha) KL + (alpha+lambda-1) MMD)
    tolerance: float = 0.0  # geco: constraint rec <= tolerance, nats per example (required)
    margin: float = 1.0  # triplet: margin of the triplet loss on posterior means (latent units)

    def __post_init__(self) -> None:
        _at_least(self, warmup_epochs=0, cycles=1)
        check_choice("schedule", self.schedule, ("warmup", "constant", "cyclical"))
        if not 0.0 < self.cycle_ratio <= 1.0:
            raise ValueError(
                f"config key 'cycle_ratio' must be in (0, 1]; received {self.cycle_ratio!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"
    binarize: str = "dynamic"  # dynamic | static | none
    data_root: str | None = None  # a folder or file for from-file data sets
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    patience: int = 0  # early stopping on validation ELBO after this many bad epochs; 0 = off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    eval_samples: int = 1000  # importance samples for the test NLL written at the end of train
    eval_batch_size: int = 100
    log_every: int = 100  # steps between progress/JSONL step rows (each one is a host sync)
    max_train_examples: int = 0  # use only the first N training examples (smoke tests); 0 = all
    on_nan: str = "stop"  # stop | skip
    time_limit: float = (
        0.0  # minutes of training; checked every step (resumable checkpoint); 0 = off
    )
    tensorboard: bool = True
    compile: bool = False  # torch.compile the model
    # fp32 | bf16: networks under torch.autocast(bfloat16) (CUDA, recent CPUs); the objective's
    # log-densities stay in float32, the weights and Adam state too
    precision: str = "fp32"

    def __post_init__(self) -> None:
        # fields that nothing downstream checks (or that fail late, e.g. log_every=0 mid-epoch)
        _at_least(
            self,
            epochs=1,
            batch_size=1,
            eval_samples=1,
            eval_batch_size=1,
            log_every=1,
            patience=0,
            max_train_examples=0,
            grad_clip=0,
            time_limit=0,
        )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"config key 'lr' must be a finite number > 0; received {self.lr!r}")
        check_choice("on_nan", self.on_nan, ("stop", "skip"))
        check_choice("precision", self.precision, ("fp32", "bf16"))
        if not 0 <= self.seed < 2**63:  # torch generators take seeds below 2**64 (seed + 1 is used)
            raise ValueError(f"config key 'seed' must be in [0, 2**63); received {self.seed!r}")


def _at_least(section: object, **bounds: float) -> None:
    """ValueError naming the first field below its bound (NaN fails every bound)."""
    for name, low in bounds.items():
        value = getattr(section, name)
        if not value >= low:
            raise ValueError(f"config key {name!r} must be >= {low}; received {value!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), safe for YAML and ``torch.load(weights_only=True)``."""

        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        return {
            name: {
                f.name: plain(getattr(getattr(self, name), f.name))
                for f in fields(getattr(self, name))
            }
            for name in ("model", "objective", "train")
        }

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with flat ``field=value`` overrides routed to their section (values coerced)."""
        return _apply(self, flat, source="override")


_SECTIONS = {"model": ModelConfig, "objective": ObjectiveConfig, "train": TrainConfig}
_FIELD_SECTION = {f.name: sec for sec, cls in _SECTIONS.items() for f in fields(cls)}


def _coerce(cls, name: str, value: Any) -> Any:
    """Coerce YAML/flag values to the field's declared type; ValueError names the field."""
    default = {f.name: f for f in fields(cls)}[name].default
    kind = {f.name: f.type for f in fields(cls)}[name]
    try:
        if value is None:
            if "None" in str(kind):
                return None
            raise TypeError
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise TypeError
            if value not in (0, 1):  # bool or 0/1; not any truthy list or number
                raise TypeError
            return bool(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(_as_int(v) for v in value)
        if isinstance(default, int):
            return _as_int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"config key {name!r} expects {kind}; received {value!r}") from None


def _as_int(value: Any) -> int:
    # a YAML `true` or 2.5 is not silently an int; `int(inf)` raises OverflowError
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError
    return int(value)


def _suggest(key: object) -> str:
    close = difflib.get_close_matches(str(key), list(_FIELD_SECTION), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _apply(cfg: RunConfig, flat: dict[str, Any], source: str) -> RunConfig:
    per_section: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key not in _FIELD_SECTION:
            raise ValueError(f"unknown config key {key!r} in {source}{_suggest(key)}")
        sec = _FIELD_SECTION[key]
        per_section.setdefault(sec, {})[key] = _coerce(_SECTIONS[sec], key, value)
    return dataclasses.replace(
        cfg,
        **{
            sec: dataclasses.replace(getattr(cfg, sec), **vals) for sec, vals in per_section.items()
        },
    )


def _flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(
                    f"section {key!r} in {source} must be a mapping; received {value!r}"
                )
            for k, v in value.items():
                if _FIELD_SECTION.get(k) != key:
                    where = f" (it belongs to {_FIELD_SECTION[k]!r})" if k in _FIELD_SECTION else ""
                    raise ValueError(
                        f"unknown key {k!r} in section {key!r} of {source}{where}{_suggest(k)}"
                    )
                flat[k] = v
        else:
            flat[key] = value
    return flat


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (``yaml.safe_load``), then flat ``overrides``."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        try:
            # safe_load: a tag such as !!python/object is refused, never constructed
            with path.open("rb") as f:  # bytes: PyYAML decodes UTF-8/16 and names the file
                data = yaml.safe_load(f) or {}
        except (yaml.YAMLError, RecursionError) as e:
            problem = " ".join(str(e).split())
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {problem}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"config file {str(path)!r} must hold a mapping; received {type(data).__name__}"
            )
        cfg = _apply(cfg, _flatten(data, str(path)), source=str(path))
    if overrides:
        cfg = _apply(cfg, overrides, source="command-line flags")
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from :meth:`RunConfig.to_dict` output (e.g. from a checkpoint)."""
    return _apply(RunConfig(), _flatten(data, "saved config"), source="saved config")
