"""From a config to parts: one registry per kind of part, names as the CLI spells them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from vaekit import likelihoods as L
from vaekit import objectives as O
from vaekit import priors as P
from vaekit._checks import check_choice
from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.networks import KINDS, build_networks
from vaekit.models.vae import VAE
from vaekit.objectives import ELBO, IWAE
from vaekit.posteriors import DiagonalGaussian

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
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
OBJECTIVES = (
    "elbo",
    "iwae",
    "miwae",
    "ciwae",
    "piwae",
    "beta_tcvae",
    "factor_vae",
    "dip_vae",
    "capacity",
    "geco",
    "info_vae",
    "wae",
    "triplet",
    "perceptual",
)
# priors whose KL to a diagonal Gaussian has a closed form in the kl_divergence registry
_ANALYTIC = ("standard", "learnable")


def build_likelihood(cfg: ModelConfig) -> L.Likelihood:
    """The likelihood named by ``cfg.likelihood``."""
    check_choice("likelihood", cfg.likelihood, LIKELIHOODS)
    return LIKELIHOODS[cfg.likelihood](cfg)


def input_shape(
    cfg: ModelConfig, image_shape: Sequence[int], event_shape: Sequence[int]
) -> tuple[int, ...]:
    """Shape of one example as the encoder sees it: the image for conv nets, else flat."""
    conv = cfg.network == "conv" or cfg.model == "vqvae"
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
    if cfg.model == "vqvae":
        return _build_vqvae(cfg, image_shape)
    check_choice("network", cfg.network, KINDS)
    check_choice("prior", cfg.prior, PRIORS)
    if cfg.model == "hvae":
        return _build_hvae(cfg, image_shape, event_shape, init_data)
    if cfg.model == "cvae":
        return _build_cvae(cfg, image_shape, event_shape, num_classes)
    if cfg.latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1; received {cfg.latent_dim}")
    if cfg.components < 0:
        raise ValueError(f"components must be >= 0 (0 = default); received {cfg.components}")
    event_shape = (
        tuple(event_shape) if event_shape is not None else (int(torch.tensor(image_shape).prod()),)
    )
    shape = input_shape(cfg, image_shape, event_shape)
    likelihood = build_likelihood(cfg)
    encoder, decoder = build_networks(
        cfg.network,
        shape,
        cfg.latent_dim,
        hidden=cfg.hidden,
        decoder_out_shape=likelihood.param_shape(shape),
        activation=None if cfg.network == "gated" else cfg.activation,
    )
    posterior: nn.Module = DiagonalGaussian()
    if cfg.posterior == "iaf":
        from vaekit.flows import IAFPosterior

        posterior = IAFPosterior(cfg.latent_dim, steps=cfg.iaf_steps)
    prior: nn.Module
    if cfg.prior == "flow":
        from vaekit.flows import FlowPrior

        prior = FlowPrior(cfg.latent_dim, layers=cfg.flow_layers)
    elif cfg.prior == "standard":
        prior = P.StandardNormal(cfg.latent_dim)
    elif cfg.prior == "learnable":
        prior = P.LearnableGaussian(cfg.latent_dim)
    elif cfg.prior == "mog":
        prior = P.MixtureOfGaussians(cfg.latent_dim, cfg.components or 10, weights=cfg.mog_weights)
    else:
        check_choice("pseudo_init", cfg.pseudo_init, ("random", "data"))
        init = "random"
        if cfg.pseudo_init == "data":
            if init_data is None:
                raise ValueError("pseudo_init='data' needs training data (init_data)")
            init = init_data.reshape(init_data.shape[0], *shape)
        prior = P.VampPrior(encoder, posterior, shape, components=cfg.components or 500, init=init)
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


def _build_hvae(cfg: ModelConfig, image_shape, event_shape, init_data) -> nn.Module:
    from vaekit.models.hvae import build_hvae

    _dense_only(cfg)
    if cfg.prior not in ("standard", "vamp"):
        raise ValueError(
            f"model 'hvae' takes prior 'standard' or 'vamp' over its top layer; received {cfg.prior!r}"
        )
    shape = _flat_shape(image_shape, event_shape)
    init: str | torch.Tensor = "random"
    if cfg.pseudo_init == "data" and cfg.prior == "vamp":
        if init_data is None:
            raise ValueError("pseudo_init='data' needs training data (init_data)")
        init = init_data.reshape(init_data.shape[0], *shape)
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


def _build_cvae(cfg: ModelConfig, image_shape, event_shape, num_classes) -> nn.Module:
    from vaekit.models.cvae import build_cvae

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


def _build_vqvae(cfg: ModelConfig, image_shape) -> nn.Module:
    from vaekit.models.vqvae import build_vqvae

    if len(tuple(image_shape)) != 3:
        raise ValueError(
            f"model 'vqvae' is convolutional: images (C, H, W); received shape {tuple(image_shape)}"
        )
    extra = {} if cfg.quantizer == "fsq" else {"restart_after": cfg.restart_after}
    return build_vqvae(
        image_shape,
        build_likelihood(cfg),
        quantizer=cfg.quantizer,
        code_dim=cfg.code_dim or None,
        num_codes=cfg.num_codes or None,
        beta=cfg.commitment,
        **extra,
    )


def build_objective(
    cfg: ObjectiveConfig,
    prior: str = "standard",
    *,
    dataset_size: int | None = None,
    latent_dim: int | None = None,
    model: ModelConfig | None = None,
    features: nn.Module | None = None,
):
    """The objective named by ``cfg.objective``; ``kl="auto"`` is analytic where a closed form exists.

    ``dataset_size`` (beta_tcvae's estimators of q(z)) and ``latent_dim`` (factor_vae's
    discriminator) and ``features`` (perceptual's frozen feature network) are needed by
    those objectives only. ``model``: the model's config, so
    ``kl="auto"`` is Monte Carlo where q or p has no closed form (IAF posterior, HVAE).
    """
    check_choice("objective", cfg.objective, OBJECTIVES)
    check_choice("kl", cfg.kl, ("auto", "analytic", "mc"))
    if model is not None and model.model == "vqvae":
        if cfg.objective != "elbo":
            raise ValueError(
                "model 'vqvae' trains with the VQ-VAE objective (reconstruction + codebook + "
                f"commitment): objective 'elbo' (the default); received {cfg.objective!r}"
            )
        from vaekit.models.vqvae import VQObjective

        return VQObjective()
    analytic = prior in _ANALYTIC
    if model is not None:
        analytic = analytic and model.posterior == "diagonal" and model.model in ("vae", "cvae")
    kl = cfg.kl if cfg.kl != "auto" else ("analytic" if analytic else "mc")
    name = cfg.objective

    def needed(what: str, value):
        if value is None:
            raise ValueError(f"objective {name!r} needs {what}; received None")
        return value

    def kernel(default: str) -> str:
        return default if cfg.kernel == "auto" else cfg.kernel

    if name == "iwae":
        return IWAE(k=cfg.k, estimator=cfg.estimator)
    if name == "miwae":
        return O.MIWAE(m=cfg.m, k=cfg.k)
    if name == "ciwae":
        return O.CIWAE(beta=cfg.beta, k=cfg.k)
    if name == "piwae":
        return O.PIWAE(m=cfg.m, k=cfg.k)
    if name == "beta_tcvae":
        gamma = cfg.gamma or 1.0
        return O.BetaTCVAE(
            needed("dataset_size", dataset_size),
            beta=cfg.beta,
            alpha=gamma,
            gamma=gamma,
            estimator=cfg.tc_estimator,
        )
    if name == "factor_vae":
        return O.FactorVAE(needed("latent_dim", latent_dim), gamma=cfg.gamma or 35.0, kl=kl)
    if name == "dip_vae":
        return O.DIPVAE(kind=cfg.dip, lambda_od=cfg.lambda_od, kl=kl)
    if name == "capacity":
        return O.CapacityELBO(
            gamma=cfg.gamma or 1000.0, c_max=cfg.capacity, steps=cfg.capacity_steps, kl=kl
        )
    if name == "geco":
        if not cfg.tolerance > 0:
            raise ValueError(
                "objective 'geco' needs --tolerance: the reconstruction target, nats per "
                f"example (e.g. 80 for binarised MNIST); received {cfg.tolerance!r}"
            )
        return O.GECO(cfg.tolerance, kl=kl)
    if name == "info_vae":
        return O.InfoVAE(
            alpha=cfg.alpha, lambda_=cfg.mmd_weight or 1000.0, kernel=kernel("rbf"), kl=kl
        )
    if name == "wae":
        return O.WAE(lambda_=cfg.mmd_weight or 10.0, kernel=kernel("imq"), kl=kl)
    if name == "triplet":
        return O.TripletELBO(weight=cfg.gamma or 1.0, margin=cfg.margin, beta=cfg.beta, kl=kl)
    if name == "perceptual":
        return O.PerceptualELBO(
            needed("a frozen feature network (features)", features),
            weight=cfg.gamma or 1.0,
            beta=cfg.beta,
            kl=kl,
        )
    return ELBO(beta=cfg.beta, kl=kl, samples=cfg.samples, free_bits=cfg.free_bits)
