"""The VAE: an encoder, a decoder and three small parts (posterior, prior, likelihood)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit._checks import check_finite, validation_enabled
from vaekit.likelihoods import Bernoulli
from vaekit.models._dropin import as_module, check_decoder_output
from vaekit.outputs import VAEOutput
from vaekit.posteriors import DiagonalGaussian

__all__ = ["VAE", "VAEOutput"]


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with amortised q(z|x), composed from swappable parts.

    Args:
        encoder: ``[B, *x_shape] -> [B, F]``, F the posterior's parameter count (2D for
            :class:`~vaekit.posteriors.DiagonalGaussian`), or a tuple ``(mean, logvar)`` /
            ``(mean, scale)`` as the posterior's ``param`` states. An ``nn.Module`` or a
            method of one (``model.encode`` of an existing VAE: its module's parameters
            become this model's).
        decoder: ``[N, D] -> [N, *likelihood.param_shape(x_shape)]`` (a module or a method
            of one). A decoder ending in ``nn.Sigmoid``/``nn.Softmax`` (an ``nn.Sequential``)
            with a likelihood on logits is refused: use ``Bernoulli(probs=True)`` (or
            ``Categorical(bins, probs=True)``) or remove the activation. A sigmoid inside a
            custom ``forward`` cannot be seen: state ``probs=True`` yourself.
        posterior: encoder output -> q(z|x) (default :class:`DiagonalGaussian`, ``param="logvar"``).
        prior: ``prior()`` -> p(z), e.g. ``StandardNormal(D)``.
        likelihood: decoder output -> p(x|z) (default :class:`~vaekit.likelihoods.Bernoulli`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        prior: nn.Module,
        posterior: nn.Module | None = None,
        likelihood: nn.Module | None = None,
    ):
        super().__init__()
        encoder, decoder = as_module("encoder", encoder), as_module("decoder", decoder)
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        self.posterior = posterior if posterior is not None else DiagonalGaussian()
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        check_decoder_output(decoder, self.likelihood)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z | x): batch ``[B]``, event ``[D]``."""
        return self.posterior(self._encode(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output as one tensor (a ``(mean, param)`` tuple joined by the posterior)."""
        h = self.encoder(x)
        join = getattr(self.posterior, "join", None)
        return join(h) if join is not None else h

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z of shape ``[..., D]``: batch ``[...]`` (leading dims are flattened for the decoder)."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        params = params.reshape(*lead, *params.shape[1:])
        return self.likelihood(params, event_ndim=params.dim() - len(lead))

    def forward(
        self, x: torch.Tensor, samples: int = 1, prior: Distribution | None = None
    ) -> VAEOutput:
        """Encode x ``[B, ...]``, draw ``samples`` reparameterised z ``[S, B, D]``, decode them.

        ``prior``: p(z) already built (evaluation reuses one VampPrior mixture across
        chunks of samples instead of re-encoding its pseudo-inputs); default ``self.prior()``.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1; received {samples}")
        self._check_input(x)
        h = self._encode(x)
        q = self.posterior(h)
        p = self.prior() if prior is None else prior
        _check_prior_matches(p, q)
        z = q.rsample((samples,))
        return VAEOutput(h, q, z, p, self.decode(z))

    def _check_input(self, x: torch.Tensor) -> None:
        """x's type, dtype and batch (free: no host sync), and its values when validation is on."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor [B, ...]; received {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(
                f"x must be a floating-point tensor (e.g. uint8 pixels as x.float() / 255); "
                f"received dtype {x.dtype}"
            )
        if x.dim() < 1 or x.shape[0] == 0:
            raise ValueError(
                f"x must be a batch [B, ...] of B >= 1 examples; received shape {tuple(x.shape)}"
            )
        param = self._dtype_probe()
        if (
            param is not None
            and x.dtype != param.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            raise ValueError(
                f"x must have the model's dtype {param.dtype}; received dtype {x.dtype} "
                f"(convert one of them, e.g. x.to({param.dtype}) or model.to({x.dtype}))"
            )
        if validation_enabled():
            check_finite("x", x)

    def _dtype_probe(self) -> torch.Tensor | None:
        """The encoder's first floating-point parameter, read through its owning module each
        call (so a conversion that replaces parameters is seen); the owner is found once per
        encoder object instead of by a walk over the parameters every step."""
        probe = self.__dict__.get("_probe")
        if probe is None or probe[0] is not self.encoder:
            owner = next(
                (
                    (m, n)
                    for m in self.encoder.modules()
                    for n, t in m._parameters.items()
                    if t is not None and t.is_floating_point()
                ),
                (None, None),
            )
            probe = self.__dict__["_probe"] = (self.encoder, *owner)
        _, module, name = probe
        return None if module is None else module._parameters.get(name)

    def detached_posterior(self, out: VAEOutput) -> Distribution:
        """q(z|x) rebuilt from ``out`` with its parameters detached (z keeps its path): the
        "sticking the landing" / DReG estimators evaluate log q(z|x) through this."""
        return self.posterior(out.encoder_out.detach())

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x|z), z ~ p(z): ``[n, *x_shape]``; ``mean=True`` returns E[x|z] (for pictures)."""
        z = self.prior().sample((n,))
        px = self.decode(z)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """E[x | z = E_q[z|x]] (or a draw with ``mean=False``): ``[B, *x_shape]``."""
        px = self.decode(self.encode(x).mean)
        return px.mean if mean else px.sample()


def _check_prior_matches(p: Distribution, q: Distribution) -> None:
    """p(z) and q(z|x) must share their event shape (free: shapes only, no host sync)."""
    if tuple(p.event_shape) != tuple(q.event_shape):

        def dim(shape: torch.Size) -> str:
            return str(shape[0]) if len(shape) == 1 else f"event shape {tuple(shape)}"

        raise ValueError(
            f"prior must have the posterior's latent dimension {dim(q.event_shape)}; received "
            f"a prior of dimension {dim(p.event_shape)} (e.g. StandardNormal(D) with D = "
            f"half the encoder's output features for DiagonalGaussian)"
        )
