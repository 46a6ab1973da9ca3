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

from vaekit._checks import check_choice, short_repr

__all__ = ["ModelConfig", "ObjectiveConfig", "TrainConfig", "RunConfig", "load_config"]


@dataclass(frozen=True)
class ModelConfig:
    # vae | hvae (two stochastic layers of latent_dim each) | cvae (conditioned on the label)
    # | vqvae (conv VQ-VAE; network/prior/latent_dim do not apply)
    # | autoencoder_kl (latent diffusion's conv VAE) | vqgan (VQ-VAE with the adversarial loss)
    # | jointvae (Gaussian z of latent_dim + categorical c, Dupont 2018)
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
    posterior: str = "diagonal"  # diagonal | iaf (inverse autoregressive flow steps) | gumbel
    iaf_steps: int = 2
    flow_layers: int = 4  # prior flow: RealNVP coupling layers
    conditional_prior: bool = False  # cvae: a learned p(z|y) instead of N(0, I)
    label_embedding: str = "onehot"  # cvae: onehot | embedding
    quantizer: str = "ema"  # vqvae: vq (codebook loss) | ema | fsq | residual | lfq
    num_codes: int = 0  # vqvae: codebook size K; 0 = 512 (vq, ema) / 1024 (fsq)
    code_dim: int = 0  # vqvae: code size; 0 = 64 (vq, ema) / len(levels) (fsq)
    commitment: float = 0.25  # vqvae: commitment weight beta
    restart_after: int = 0  # vqvae: re-initialise codes unused this many steps; 0 = off
    prior_epochs: int = 10  # vqvae: epochs of the autoregressive code prior after training
    rotation_trick: bool = False  # vq/ema/residual: rotation trick instead of straight-through
    kmeans_init: bool = False  # vq/ema/residual: codebook = k-means of the first batch
    num_quantizers: int = 2  # residual: codebooks in sequence
    downsample: int = 8  # autoencoder_kl/vqgan: spatial downsampling factor f (2, 4, 8, 16)
    latent_channels: int = 4  # autoencoder_kl: channels C of the latent map
    channels: int = 64  # autoencoder_kl/vqgan: width of the first conv level (x1, 2, 4, 4)
    # m2: labelled training examples (balanced over classes; the rest lose their labels) and
    # the seed of their draw; 0 = not set (model m2 refuses it)
    labels: int = 0
    label_seed: int = 0
    # posterior gumbel / model jointvae: discrete_variables independent categoricals of
    # `categories` each, relaxed by Gumbel-softmax at `temperature` (annealed geometrically to
    # temperature_end over temperature_steps optimizer steps; 0 = constant); hard: one-hot
    # samples with a straight-through gradient
    categories: int = 10
    discrete_variables: int = 1
    temperature: float = 0.67  # Dupont (2018); Jang et al. (2017) anneal 1.0 -> 0.5
    temperature_end: float = 0.5
    temperature_steps: int = 0
    hard: bool = False

    def __post_init__(self) -> None:
        _at_least(self, mixture_components=1)  # the likelihood would call it "components"
        _at_least(self, iaf_steps=1, flow_layers=1, num_codes=0, code_dim=0, restart_after=0)
        _at_least(self, prior_epochs=0, commitment=0, num_quantizers=1)
        _at_least(self, latent_channels=1, channels=1)
        _at_least(self, labels=0, label_seed=0)
        check_choice(
            "model",
            self.model,
            ("vae", "hvae", "cvae", "vqvae", "m2", "autoencoder_kl", "vqgan", "jointvae"),
        )
        if self.downsample not in (2, 4, 8, 16):
            raise ValueError(
                f"config key 'downsample' must be one of 2, 4, 8, 16; received {self.downsample!r}"
            )
        check_choice("posterior", self.posterior, ("diagonal", "iaf", "gumbel"))
        _at_least(self, categories=2, discrete_variables=1, temperature_steps=0)
        for name in ("temperature", "temperature_end"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"config key {name!r} must be a finite number > 0; received {value!r}"
                )
        check_choice("mog_weights", self.mog_weights, ("learned", "uniform"))
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"config key 'hidden' must hold widths >= 1; received {self.hidden!r}")

    def used_fields(self) -> tuple[str, ...]:
        """The keys that this kind, network, prior, posterior and likelihood read
        (:func:`vaekit.models.build.model_fields`); the others do nothing."""
        from vaekit.models.build import model_fields

        return model_fields(self)


@dataclass(frozen=True)
class ObjectiveConfig:
    """The chosen objective and exactly its own hyperparameters, resolved (defaults filled in).

    ``objective``: a name in :data:`vaekit.objectives.OBJECTIVES` (None: the model kind's
    default, set by :class:`RunConfig`); ``params``: ``(name, value)`` pairs of every field of
    that objective, in its registry's order; ``given``: the names set explicitly (a field
    another objective uses is refused, naming the objective and the fields it takes).
    Fields read as attributes: ``cfg.objective.beta``.
    """

    objective: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    given: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        spec = self.spec
        resolved = spec.resolve(dict(self.params))
        object.__setattr__(self, "params", tuple(resolved.items()))
        if spec.schedule:  # warmup_epochs and cycles are bounded by their Param.low
            if not 0.0 < resolved["cycle_ratio"] <= 1.0:
                raise ValueError(
                    f"config key 'cycle_ratio' must be in (0, 1]; received {resolved['cycle_ratio']!r}"
                )

    @property
    def spec(self):
        """The registry entry (:class:`vaekit.objectives.ObjectiveSpec`) of ``objective``."""
        from vaekit.objectives import OBJECTIVES

        name = self.objective or "elbo"
        check_choice("objective", name, OBJECTIVES)
        return OBJECTIVES[name]

    @property
    def values(self) -> dict[str, Any]:
        """The objective's fields and their resolved values."""
        return dict(self.params)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("objective", "params", "given"):
            raise AttributeError(name)
        values = dict(object.__getattribute__(self, "params"))
        if name in values:
            return values[name]
        raise AttributeError(
            f"objective {self.objective!r} has no field {name!r}; its fields: "
            f"{', '.join(values) or '(none)'}"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"objective": name, **fields}``, plain values."""
        return {"objective": self.objective or "elbo", **self.values}


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
            raise ValueError(f"config key {name!r} must be >= {low}; received {short_repr(value)}")


# the objective a model kind trains with when none is named
_DEFAULT_OBJECTIVE = {
    "vqvae": "vqvae",
    "m2": "m2",
    "autoencoder_kl": "autoencoder_kl",
    "vqgan": "vqgan",
    "jointvae": "jointvae",
}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.objective.objective is None:  # the model kind's own objective
            name = _DEFAULT_OBJECTIVE.get(self.model.model, "elbo")
            oc = self.objective
            given = tuple((k, v) for k, v in oc.params if k in oc.given)
            object.__setattr__(self, "objective", ObjectiveConfig(name, given, oc.given))
        models = self.objective.spec.models
        kind = self.model.model
        if models is not None and kind not in models:
            raise ValueError(
                f"objective {self.objective.objective!r} trains model {' | '.join(models)}; "
                f"received model {kind!r}"
            )
        if models is None and kind in _DEFAULT_OBJECTIVE:
            raise ValueError(
                f"model {kind!r} trains with objective {_DEFAULT_OBJECTIVE[kind]!r} (the default); "
                f"received objective {self.objective.objective!r}"
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (tuples as lists), safe for YAML and ``torch.load(weights_only=True)``.

        The objective section holds exactly the chosen objective's fields, resolved; the model
        section the fields that the chosen kind, network, prior, posterior and likelihood read.
        """

        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        model = {k: plain(getattr(self.model, k)) for k in self.model.used_fields()}
        train = {f.name: plain(getattr(self.train, f.name)) for f in fields(self.train)}
        return {"model": model, "objective": self.objective.to_dict(), "train": train}

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with flat ``field=value`` overrides routed to their section (values coerced)."""
        return _apply(self, flat, source="override")


_SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def _objective_keys() -> set[str]:
    from vaekit.objectives import OBJECTIVES

    return {"objective"} | {p.name for spec in OBJECTIVES.values() for p in spec.all_params}


def field_sections() -> dict[str, str]:
    """Every config key (flat, unique across sections) and the section it belongs to."""
    out = {f.name: sec for sec, cls in _SECTIONS.items() for f in fields(cls)}
    out.update({k: "objective" for k in _objective_keys()})
    return out


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
        raise ValueError(
            f"config key {name!r} expects {kind}; received {short_repr(value)}"
        ) from None


def _as_int(value: Any) -> int:
    # a YAML `true` or 2.5 is not silently an int; `int(inf)` raises OverflowError
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError
    return int(value)


def _suggest(key: object) -> str:
    close = difflib.get_close_matches(str(key), list(field_sections()), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _apply(cfg: RunConfig, flat: dict[str, Any], source: str, strict: bool = True) -> RunConfig:
    """``cfg`` with the flat keys routed to their sections; ``strict``: a model key that the
    resulting model does not read is an error (off for run folders written by vaekit 0.1,
    whose config.yaml lists every field)."""
    sections = field_sections()
    per_section: dict[str, dict[str, Any]] = {}
    objective: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in sections:
            raise ValueError(f"unknown config key {short_repr(key)} in {source}{_suggest(key)}")
        sec = sections[key]
        if sec == "objective":
            objective[key] = value
        else:
            per_section.setdefault(sec, {})[key] = _coerce(_SECTIONS[sec], key, value)
    changes = {
        sec: dataclasses.replace(getattr(cfg, sec), **vals) for sec, vals in per_section.items()
    }
    if strict and "model" in changes:
        mc = changes["model"]
        unused = [k for k in per_section["model"] if k not in mc.used_fields()]
        if unused:
            chosen = ", ".join(
                f"{k} {getattr(mc, k)!r}"
                for k in ("network", "prior", "posterior", "likelihood")
                if k in mc.used_fields()
            )
            raise ValueError(
                f"model {mc.model!r} ({chosen}) does not use "
                f"{', '.join(repr(k) for k in unused)} (in {source}); its fields are: "
                f"{', '.join(mc.used_fields())}"
            )
    oc = cfg.objective
    name = oc.objective
    named = "objective" in objective  # an objective named explicitly is never re-picked
    if named:
        name = objective.pop("objective")
        name = None if name is None else str(name)
    elif (
        "model" in changes
        and not oc.given
        and name in (None, _DEFAULT_OBJECTIVE.get(cfg.model.model, "elbo"))
    ):
        # a new model kind's own objective takes the objective flags given with it
        name = _DEFAULT_OBJECTIVE.get(changes["model"].model, "elbo")
    if objective or name != oc.objective:
        # the explicitly given fields carry over (a field the new objective lacks is an error
        # naming it); the rest are the chosen objective's defaults
        kept = {k: v for k, v in oc.params if k in oc.given}
        given = {**kept, **objective}
        try:
            changes["objective"] = ObjectiveConfig(name, tuple(given.items()), tuple(given))
        except ValueError as e:
            raise ValueError(f"{e} (in {source})") from None
    if "model" in changes and "objective" not in changes and oc.objective is not None and not named:
        # a new model kind re-picks the default objective unless one was chosen explicitly
        if not oc.given and oc.objective == _DEFAULT_OBJECTIVE.get(cfg.model.model, "elbo"):
            changes["objective"] = ObjectiveConfig(None)
    return dataclasses.replace(cfg, **changes)


def _flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    sections = field_sections()
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("model", "objective", "train"):
            if not isinstance(value, dict):
                raise ValueError(
                    f"section {key!r} in {source} must be a mapping; received {short_repr(value)}"
                )
            if key == "objective" and _is_legacy(value):
                model = data.get("model")
                kind = model.get("model") if isinstance(model, dict) else None
                value = _from_legacy(value, kind)
            for k, v in value.items():
                if sections.get(k) != key:
                    where = f" (it belongs to {sections[k]!r})" if k in sections else ""
                    raise ValueError(
                        f"unknown key {short_repr(k)} in section {key!r} of {source}{where}"
                        f"{_suggest(k)}"
                    )
                flat[k] = v
        else:
            flat[key] = value
    return flat


# the objective section as vaekit 0.1 wrote it: one union of every objective's fields, with 0
# meaning "the paper's default" for some of them
_LEGACY_KEYS = {"tc_estimator", "margin", "mmd_weight", "capacity_steps", "estimator", "cycles"}


def _is_legacy(section: dict) -> bool:
    return _LEGACY_KEYS <= set(section)


def _from_legacy(section: dict, model_kind: str | None) -> dict[str, Any]:
    """A 0.1 objective section (saved in older run folders) as the chosen objective's fields."""
    from vaekit.objectives import OBJECTIVES

    name = section.get("objective", "elbo")
    if model_kind in _DEFAULT_OBJECTIVE:  # 0.1 wrote 'elbo' for the VQ-VAE's own loss
        return {"objective": _DEFAULT_OBJECTIVE[model_kind]}
    if name not in OBJECTIVES:
        return dict(section)  # let the normal checks name the problem
    old = dict(section)
    defaults = OBJECTIVES[name].defaults()
    if name == "beta_tcvae":  # 0.1's gamma weighed both MI and the dimension-wise KL
        old["alpha"] = old["gamma"] = old.get("gamma") or 1.0
    for key in ("gamma", "mmd_weight"):
        if not old.get(key) and key in defaults:
            old[key] = defaults[key]
    if old.get("kernel") == "auto" and "kernel" in defaults:
        old["kernel"] = defaults["kernel"]
    if not old.get("tolerance"):
        old["tolerance"] = None
    return {"objective": name, **{k: v for k, v in old.items() if k in defaults}}


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (``yaml.safe_load``), then flat ``overrides``."""
    cfg = RunConfig()
    given = dict(overrides or {})  # every key set explicitly, the flags over the file
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
        from_file = _flatten(data, str(path))
        cfg = _apply(cfg, from_file, source=str(path), strict=not _full_model_section(data))
        given = {**from_file, **given}
    if overrides:
        cfg = _apply(cfg, overrides, source="command-line flags")
    _check_binarize_applies(cfg, given.get("binarize"))
    return cfg


# data sets that are never binarised: generated binary images, RGB photographs
_NOT_BINARISED = {
    "dsprites": "its images are generated binary",
    "skimage_rgb": "its images are RGB photographs",
}


def _check_binarize_applies(cfg: RunConfig, given: Any) -> None:
    """A binarisation asked for explicitly (flag or file) where the data set has none is an
    error, not silently ignored."""
    why = _NOT_BINARISED.get(cfg.train.dataset)
    if why and given is not None and given != "none":
        raise ValueError(
            f"binarize={given!r} does nothing for dataset {cfg.train.dataset!r} ({why}; it is "
            "never binarised): omit --binarize or pass --binarize none"
        )


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from :meth:`RunConfig.to_dict` output (e.g. from a checkpoint)."""
    flat = _flatten(data, "saved config")
    return _apply(RunConfig(), flat, source="saved config", strict=not _full_model_section(data))


def _full_model_section(data: dict[str, Any]) -> bool:
    """Whether ``data``'s model section lists every model field (vaekit 0.1's config.yaml)."""
    model = data.get("model")
    return isinstance(model, dict) and {f.name for f in fields(ModelConfig)} <= set(model)


# train fields that a resumed run may change: they do not change the steps it takes
_RESUMABLE = {
    "epochs",
    "patience",
    "device",
    "eval_samples",
    "eval_batch_size",
    "log_every",
    "on_nan",
    "time_limit",
    "tensorboard",
    "compile",
}
# model fields used only after training (the VQ-VAE's code prior)
_AFTER_TRAINING = {"prior_epochs"}


def trajectory_changes(saved: RunConfig, wanted: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, wanted value)`` for every field whose change would make a resumed
    run take other steps than the saved one would have (data, batch size, seed, learning
    rate, model, objective, ...). More epochs are fine, unless a cyclical schedule spreads its
    cycles over the run's epochs."""
    a, b = saved.to_dict(), wanted.to_dict()
    changes = []
    for key in dict.fromkeys([*a["model"], *b["model"]]):
        if key not in _AFTER_TRAINING and a["model"].get(key) != b["model"].get(key):
            changes.append((key, a["model"].get(key), b["model"].get(key)))
    for key in dict.fromkeys([*a["objective"], *b["objective"]]):
        if a["objective"].get(key) != b["objective"].get(key):
            changes.append((key, a["objective"].get(key), b["objective"].get(key)))
    for key in a["train"]:
        if key in _RESUMABLE and not (
            key == "epochs" and b["objective"].get("schedule") == "cyclical"
        ):
            continue
        if a["train"][key] != b["train"].get(key):
            changes.append((key, a["train"][key], b["train"].get(key)))
    return changes
