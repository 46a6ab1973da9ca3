"""From a config to parts: one registry per kind of part, names as the CLI spells them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vaekit import likelihoods as L
from vaekit import objectives as O
from vaekit import priors as P
from vaekit._checks import check_choice
from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.networks import KINDS, build_networks
from vaekit.models.vae import VAE
from vaekit.objectives import OBJECTIVES
from vaekit.objectives._base import build_from_spec
from vaekit.posteriors import DiagonalGaussian

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "PRIOR_BUILDERS",
    "MODEL_KINDS",
    "ModelKind",
    "model_kind",
    "model_fields",
    "register_model",
    "OBJECTIVES",
    "build_likelihood",
    "build_model",
    "build_objective",
    "input_shape",
    "prepare_input",
]


def _scale(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


LIKELIHOODS: dict[str, Callable[[ModelConfig], L.Likelihood]] = {
    "bernoulli": lambda c: L.Bernoulli(),
    "continuous_bernoulli": lambda c: L.ContinuousBernoulli(),
    # scale "running": the variance tracks the running MSE (Asperti & Trentin 2020)
    "gaussian": lambda c: (
        L.RunningGaussian() if c.scale == "running" else L.Gaussian(scale=_scale(c.scale))
    ),
    "laplace": lambda c: L.Laplace(scale=_scale(c.scale)),
    "discretized_logistic": lambda c: L.DiscretizedLogistic(),
    "discretized_logistic_mixture": lambda c: L.DiscretizedLogisticMixture(c.mixture_components),
    "categorical": lambda c: L.Categorical(),
}
PRIORS = ("standard", "learnable", "mog", "vamp", "flow")
# priors whose KL to a diagonal Gaussian has a closed form in the kl_divergence registry
_ANALYTIC = ("standard", "learnable")


def build_likelihood(cfg: ModelConfig) -> L.Likelihood:
    """The likelihood named by ``cfg.likelihood``."""
    check_choice("likelihood", cfg.likelihood, LIKELIHOODS)
    return LIKELIHOODS[cfg.likelihood](cfg)


@dataclass(frozen=True)
class ModelKind:
    """A model kind as the config names it (``--model NAME``) and what the run does with it.

    ``build(cfg, image_shape, event_shape, init_data, num_classes)`` makes the model;
    ``fields(cfg)``: the config keys it reads, given the chosen network, prior and posterior;
    ``convolutional``: the encoder takes images (else flat vectors, unless ``network conv``);
    ``closed_form_kl``: KL(q || p) has a closed form for a diagonal posterior and an analytic
    prior; ``quantized``: a VQ model (evaluation by its codes, a code prior after training).
    """

    name: str
    build: Callable[..., nn.Module]
    summary: str
    fields: Callable[[ModelConfig], tuple[str, ...]]
    convolutional: bool = False
    closed_form_kl: bool = True
    quantized: bool = False


MODEL_KINDS: dict[str, ModelKind] = {}


def register_model(kind: ModelKind) -> ModelKind:
    """Add a model kind to :data:`MODEL_KINDS` (its name is what ``--model`` takes)."""
    MODEL_KINDS[kind.name] = kind
    return kind


def model_kind(cfg: ModelConfig) -> ModelKind:
    """The registry entry of ``cfg.model``."""
    check_choice("model", cfg.model, MODEL_KINDS)
    return MODEL_KINDS[cfg.model]


# config keys a likelihood, a prior or a posterior reads, beyond its name
_LIKELIHOOD_FIELDS = {
    "gaussian": ("scale",),
    "laplace": ("scale",),
    "discretized_logistic_mixture": ("mixture_components",),
}
_PRIOR_FIELDS = {
    "mog": ("components", "mog_weights"),
    "vamp": ("components", "pseudo_init"),
    "flow": ("flow_layers",),
}
_POSTERIOR_FIELDS = {"iaf": ("iaf_steps",)}


def model_fields(cfg: ModelConfig) -> tuple[str, ...]:
    """The model config keys that ``cfg``'s kind, network, prior, posterior and likelihood read."""
    kind = model_kind(cfg)
    if kind.name in _OWN_LIKELIHOOD:  # a fixed likelihood: --likelihood does not apply
        return ("model", *kind.fields(cfg))
    return ("model", *kind.fields(cfg), "likelihood", *_LIKELIHOOD_FIELDS.get(cfg.likelihood, ()))


# kinds with their own likelihood (a shared-scale Laplace, vaekit.models.autoencoders)
_OWN_LIKELIHOOD = ("autoencoder_kl", "vqgan")


def _dense_fields(cfg: ModelConfig) -> tuple[str, ...]:
    activation = () if cfg.network == "gated" else ("activation",)
    return ("network", "hidden", *activation, "latent_dim")


def _vae_fields(cfg: ModelConfig) -> tuple[str, ...]:
    if cfg.posterior == "gumbel":  # a categorical latent: no latent_dim, a uniform p(c)
        from vaekit.models.discrete import discrete_fields

        network = tuple(f for f in _dense_fields(cfg) if f != "latent_dim")
        return (*network, "posterior", *discrete_fields(cfg))
    return (
        *_dense_fields(cfg),
        "prior",
        *_PRIOR_FIELDS.get(cfg.prior, ()),
        "posterior",
        *_POSTERIOR_FIELDS.get(cfg.posterior, ()),
    )


def _hvae_fields(cfg: ModelConfig) -> tuple[str, ...]:
    # dense networks of one width (hidden[0]), gated or with its own activation
    return ("network", "hidden", "latent_dim", "prior", *_PRIOR_FIELDS.get(cfg.prior, ()))


def _cvae_fields(cfg: ModelConfig) -> tuple[str, ...]:
    # prior: "standard" only (the builder names the alternative, --conditional-prior)
    return ("network", "hidden", "latent_dim", "prior", "conditional_prior", "label_embedding")


def _m2_fields(cfg: ModelConfig) -> tuple[str, ...]:
    prior = ("prior", *_PRIOR_FIELDS.get(cfg.prior, ()))
    return ("network", "hidden", "activation", "latent_dim", *prior, "labels", "label_seed")


def _vqvae_fields(cfg: ModelConfig) -> tuple[str, ...]:
    from vaekit.models.autoencoders import quantizer_fields

    return ("quantizer", *quantizer_fields(cfg), "prior_epochs")


def input_shape(
    cfg: ModelConfig, image_shape: Sequence[int], event_shape: Sequence[int]
) -> tuple[int, ...]:
    """Shape of one example as the encoder sees it: the image for conv nets, else flat."""
    conv = cfg.network == "conv" or model_kind(cfg).convolutional
    return tuple(image_shape if conv else event_shape)


def prepare_input(model, x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Flat [0, 1] data ``[B, D]`` -> the encoder's ``[B, *shape]`` in the likelihood's ``data_range``."""
    lo, hi = getattr(model.likelihood, "data_range", (0.0, 1.0))
    x = x.reshape(x.shape[0], *shape)
    return x * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else x


def build_model(
    cfg: ModelConfig,
    image_shape: Sequence[int],
    event_shape: Sequence[int] | None = None,
    init_data: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """The model ``cfg.model`` names, for examples of ``image_shape`` (conv) / ``event_shape``.

    ``init_data`` (``[N, *input_shape]``) seeds VampPrior pseudo-inputs when
    ``cfg.pseudo_init == "data"``; ``num_classes`` sizes a CVAE's label input.
    """
    return model_kind(cfg).build(cfg, image_shape, event_shape, init_data, num_classes)


def _vamp_init(cfg: ModelConfig, init_data, shape) -> str | torch.Tensor:
    """VampPrior pseudo-inputs' initialisation: ``"random"``, or training data (``--pseudo-init
    data``), of which there must be at least ``--components`` examples."""
    check_choice("pseudo_init", cfg.pseudo_init, ("random", "data"))
    if cfg.pseudo_init == "random":
        return "random"
    if init_data is None:
        raise ValueError("pseudo_init='data' needs training data (init_data)")
    components = cfg.components or 500
    if init_data.shape[0] < components:
        raise ValueError(
            f"--pseudo-init data draws --components {components} pseudo-inputs from the "
            f"training set, which has {init_data.shape[0]} examples: lower --components or use "
            "--pseudo-init random"
        )
    return init_data.reshape(init_data.shape[0], *shape)


def _prior_vamp(cfg: ModelConfig, encoder, posterior, shape, init_data) -> nn.Module:
    init = _vamp_init(cfg, init_data, shape)
    return P.VampPrior(encoder, posterior, shape, components=cfg.components or 500, init=init)


def _prior_flow(cfg: ModelConfig, *_) -> nn.Module:
    from vaekit.flows import FlowPrior

    return FlowPrior(cfg.latent_dim, layers=cfg.flow_layers)


# p(z) by name: (cfg, encoder, posterior, input shape, init data) -> prior module
PRIOR_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "standard": lambda cfg, *_: P.StandardNormal(cfg.latent_dim),
    "learnable": lambda cfg, *_: P.LearnableGaussian(cfg.latent_dim),
    "mog": lambda cfg, *_: P.MixtureOfGaussians(
        cfg.latent_dim, cfg.components or 10, weights=cfg.mog_weights
    ),
    "vamp": _prior_vamp,
    "flow": _prior_flow,
}
PRIORS = tuple(PRIOR_BUILDERS)


def _posterior(cfg: ModelConfig) -> nn.Module:
    if cfg.posterior == "iaf":
        from vaekit.flows import IAFPosterior

        return IAFPosterior(cfg.latent_dim, steps=cfg.iaf_steps)
    return DiagonalGaussian()


def _build_vae(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    check_choice("network", cfg.network, KINDS)
    check_choice("prior", cfg.prior, PRIORS)
    if cfg.latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1; received {cfg.latent_dim}")
    if cfg.components < 0:
        raise ValueError(f"components must be >= 0 (0 = default); received {cfg.components}")
    event_shape = _flat_shape(image_shape, event_shape)
    shape = input_shape(cfg, image_shape, event_shape)
    likelihood = build_likelihood(cfg)
    if cfg.posterior == "gumbel":
        from vaekit.models.discrete import build_gumbel_vae

        return build_gumbel_vae(cfg, shape, likelihood)
    encoder, decoder = build_networks(
        cfg.network,
        shape,
        cfg.latent_dim,
        hidden=cfg.hidden,
        decoder_out_shape=likelihood.param_shape(shape),
        activation=None if cfg.network == "gated" else cfg.activation,
    )
    posterior = _posterior(cfg)
    prior = PRIOR_BUILDERS[cfg.prior](cfg, encoder, posterior, shape, init_data)
    return VAE(encoder, decoder, posterior=posterior, prior=prior, likelihood=likelihood)


def _flat_shape(image_shape, event_shape) -> tuple[int, ...]:
    return (
        tuple(event_shape) if event_shape is not None else (int(torch.tensor(image_shape).prod()),)
    )


def _dense_only(cfg: ModelConfig) -> None:
    if cfg.network == "conv":
        raise ValueError(
            f"model {cfg.model!r} is built with dense networks: network 'mlp' or 'gated'; "
            "received 'conv'"
        )


def _build_hvae(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    from vaekit.models.hvae import build_hvae

    check_choice("network", cfg.network, KINDS)
    check_choice("prior", cfg.prior, PRIORS)
    _dense_only(cfg)
    if cfg.prior not in ("standard", "vamp"):
        raise ValueError(
            f"model 'hvae' takes prior 'standard' or 'vamp' over its top layer; received {cfg.prior!r}"
        )
    shape = _flat_shape(image_shape, event_shape)
    init = _vamp_init(cfg, init_data, shape) if cfg.prior == "vamp" else "random"
    return build_hvae(
        shape,
        latent_dims=(cfg.latent_dim, cfg.latent_dim),
        hidden=cfg.hidden[0],
        gated=cfg.network == "gated",
        prior=cfg.prior,
        components=cfg.components or 500,
        likelihood=build_likelihood(cfg),
        pseudo_init=init,
    )


def _build_cvae(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    from vaekit.models.cvae import build_cvae

    check_choice("network", cfg.network, KINDS)
    check_choice("prior", cfg.prior, PRIORS)
    _dense_only(cfg)
    if cfg.prior != "standard":
        raise ValueError(
            "model 'cvae' has N(0, I) or, with --conditional-prior, a learned p(z|y): prior "
            f"'standard'; received {cfg.prior!r}"
        )
    if not num_classes:
        raise ValueError("model 'cvae' needs labelled training data (num_classes); received none")
    return build_cvae(
        _flat_shape(image_shape, event_shape),
        num_classes,
        latent_dim=cfg.latent_dim,
        hidden=cfg.hidden,
        conditional_prior=cfg.conditional_prior,
        label_embedding=cfg.label_embedding,
        gated=cfg.network == "gated",
        likelihood=build_likelihood(cfg),
    )


def _build_m2(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    from vaekit.models.m2 import build_m2_from_config

    return build_m2_from_config(cfg, _flat_shape(image_shape, event_shape), init_data, num_classes)


def _build_vqvae(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes) -> nn.Module:
    from vaekit.models.vqvae import build_vqvae

    if len(tuple(image_shape)) != 3:
        raise ValueError(
            f"model 'vqvae' is convolutional: images (C, H, W); received shape {tuple(image_shape)}"
        )
    from vaekit.models.autoencoders import quantizer_options

    extra = quantizer_options(cfg)
    return build_vqvae(
        image_shape,
        build_likelihood(cfg),
        quantizer=cfg.quantizer,
        code_dim=cfg.code_dim or None,
        num_codes=cfg.num_codes or None,
        beta=cfg.commitment,
        **extra,
    )


register_model(
    ModelKind("vae", _build_vae, "encoder, one stochastic layer z, decoder", _vae_fields)
)
register_model(
    ModelKind(
        "hvae",
        _build_hvae,
        "two stochastic layers (Tomczak & Welling 2018)",
        _hvae_fields,
        closed_form_kl=False,
    )
)
register_model(
    ModelKind("cvae", _build_cvae, "conditioned on the label y: q(z|x, y), p(x|y, z)", _cvae_fields)
)
register_model(
    ModelKind(
        "m2",
        _build_m2,
        "semi-supervised (Kingma et al. 2014): q(y|x), q(z|x, y), p(x|y, z); --labels N",
        _m2_fields,
    )
)
register_model(
    ModelKind(
        "vqvae",
        _build_vqvae,
        "convolutional VQ-VAE: discrete codes, an autoregressive code prior",
        _vqvae_fields,
        convolutional=True,
        closed_form_kl=False,
        quantized=True,
    )
)


def _build_autoencoder(cfg: ModelConfig, *args) -> nn.Module:
    from vaekit.models import autoencoders

    build = autoencoders.build_vqgan if cfg.model == "vqgan" else autoencoders.build_autoencoder_kl
    return build(cfg, *args)


def _jointvae_fields(cfg: ModelConfig) -> tuple[str, ...]:
    from vaekit.models.discrete import discrete_fields

    return (*_dense_fields(cfg), *discrete_fields(cfg))


def _build_jointvae(cfg: ModelConfig, image_shape, event_shape, init_data, num_classes):
    from vaekit.models.discrete import build_jointvae

    check_choice("network", cfg.network, KINDS)
    event_shape = _flat_shape(image_shape, event_shape)
    return build_jointvae(cfg, input_shape(cfg, image_shape, event_shape), build_likelihood(cfg))


register_model(
    ModelKind(
        "autoencoder_kl",
        _build_autoencoder,
        "latent diffusion's conv VAE: a C x H/f x W/f Gaussian latent, shared-scale Laplace p(x|z)",
        lambda cfg: ("downsample", "latent_channels", "channels"),
        convolutional=True,
    )
)
register_model(
    ModelKind(
        "vqgan",
        _build_autoencoder,
        "VQGAN: conv VQ-VAE with any quantizer, trained with the adversarial autoencoder loss",
        lambda cfg: ("downsample", "channels", *_vqvae_fields(cfg)),
        convolutional=True,
        closed_form_kl=False,
        quantized=True,
    )
)
register_model(
    ModelKind(
        "jointvae",
        _build_jointvae,
        "Gaussian z and Gumbel-softmax categorical c, separate capacities (Dupont 2018)",
        _jointvae_fields,
    )
)


def build_objective(
    cfg: ObjectiveConfig,
    prior: str = "standard",
    *,
    dataset_size: int | None = None,
    latent_dim: int | None = None,
    model: ModelConfig | None = None,
    features: nn.Module | None = None,
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    image_channels: int | None = None,
) -> O.Objective:
    """The objective ``cfg.objective`` names, built from its registry entry (a lookup).

    The run supplies what the config cannot: ``dataset_size`` (beta_tcvae's estimators of
    q(z)), ``latent_dim`` (factor_vae's discriminator), ``features`` (perceptual's frozen
    feature network), ``steps_per_epoch`` and ``epochs`` (a beta schedule given in epochs).
    ``kl="auto"`` is analytic where q and p have a closed form (a diagonal posterior and a
    ``standard`` / ``learnable`` prior of a plain or conditional VAE), else Monte Carlo.
    """
    analytic = prior in _ANALYTIC
    if model is not None:
        analytic = (
            analytic
            and model.posterior in ("diagonal", "gumbel")
            and model_kind(model).closed_form_kl
        )
    context = {
        "dataset_size": dataset_size,
        "latent_dim": latent_dim,
        "features": features,
        "analytic_kl": analytic,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "image_channels": image_channels,
    }
    return build_from_spec(cfg.spec, cfg.values, context)
