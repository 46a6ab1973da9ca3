"""Conditional VAE (Sohn et al. 2015): q(z|x, y), p(x|z, y) and p(z) or a learned p(z|y).

``ELBO(x|y) = E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || p(z|y)) <= log p(x|y)`` (nats).

Objectives call ``model(x, samples=S)``, so the labels reach the model through a context
manager: ``with model.given(y): loss = objective(model, x)``; every call inside the block
uses ``y`` (``[B]`` integer labels matching x's batch). A forward without labels is a
``ValueError``. ``model.prior()`` is p(z), or p(z|y) for the given labels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit._checks import check_choice, check_count, validation_enabled
from vaekit.likelihoods import Bernoulli, Likelihood
from vaekit.models.hvae import Merge
from vaekit.models.networks import MLP, GatedMLP
from vaekit.outputs import VAEOutput
from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import StandardNormal

__all__ = ["LabelEncoding", "LabelPrior", "CVAE", "build_cvae", "log_likelihood"]


def _check_labels(y, num_classes: int, name: str = "y") -> torch.Tensor:
    """``y``: a 1-D integer tensor of class indices in ``[0, num_classes)``, else ValueError.

    The range check reads values (a host sync): it runs while validation is on.
    """
    if not isinstance(y, torch.Tensor):
        raise ValueError(
            f"{name} must be a tensor of integer class labels [B]; received {type(y).__name__}"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold integer class indices (e.g. torch.long); received dtype {y.dtype}"
        )
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape [B]; received shape {tuple(y.shape)}")
    if validation_enabled() and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] (num_classes={num_classes}); "
            f"received values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


class LabelEncoding(nn.Module):
    """Class labels ``y [...]`` -> label features ``c [..., E]``.

    ``"onehot"``: ``c = e_y`` (E = num_classes); ``"embedding"``: a learned vector per class
    (E = ``dim``, default 16).
    """

    def __init__(self, num_classes: int, kind: str = "onehot", dim: int | None = None):
        super().__init__()
        self.num_classes = check_count("num_classes", num_classes, 2)
        check_choice("label_embedding", kind, ("onehot", "embedding"))
        self.kind = kind
        if kind == "onehot":
            if dim is not None and dim != num_classes:
                raise ValueError(
                    f"a one-hot label encoding has num_classes = {num_classes} features; "
                    f"received dim={dim!r} (leave it None, or use kind='embedding')"
                )
            self.features = num_classes
            self.register_buffer("eye", torch.eye(num_classes), persistent=False)
        else:
            self.features = check_count("dim", 16 if dim is None else dim)
            self.embedding = nn.Embedding(num_classes, self.features)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_labels(y.reshape(-1), self.num_classes).reshape(y.shape)
        if self.kind == "onehot":
            return self.eye[y.to(self.eye.device)]
        return self.embedding(y.to(self.embedding.weight.device))


class LabelPrior(nn.Module):
    """p(z|y) = N(mu(c_y), diag e^logvar(c_y)), ``[mu | logvar] = net(c_y)``; log p in nats.

    With one-hot features and ``hidden=()`` the net is one Linear layer: a table of a mean
    and a log-variance per class. Starts at N(0, I) for every class (last layer zero).
    ``forward(c [..., E])`` returns a distribution with batch ``[...]`` and event ``[D]``,
    whose KL to a diagonal Gaussian posterior is analytic.
    """

    def __init__(self, features: int, dim: int, hidden: Sequence[int] = ()):
        super().__init__()
        self.dim = check_count("dim", dim)
        self.net = MLP(
            check_count("features", features), 2 * dim, tuple(hidden), flatten_input=False
        )
        nn.init.zeros_(self.net.net[-1].weight)
        nn.init.zeros_(self.net.net[-1].bias)
        self.head = DiagonalGaussian()

    def forward(self, c: torch.Tensor) -> Distribution:
        return self.head(self.net(c))


class _GivenLabelPrior(nn.Module):
    """``model.prior`` of a CVAE with a :class:`LabelPrior`: ``prior()`` is p(z|y) for the given y."""

    def __init__(
        self, label_prior: LabelPrior, features: Callable[[torch.Tensor | None], torch.Tensor]
    ):
        super().__init__()
        self.label_prior = label_prior
        self._features = features  # the CVAE's label features (a plain callable, not a module)

    def forward(self, y: torch.Tensor | None = None) -> Distribution:
        return self.label_prior(self._features(y))


class CVAE(nn.Module):
    """p(x, z|y) = p(z|y) p(x|z, y) with q(z|x, y): ``log w = log p(x|z,y) + log p(z|y) - log q(z|x,y)`` nats.

    Args:
        encoder: ``(x [B, *x_shape], c [B, E]) -> [B, 2D]`` (e.g. a :class:`~vaekit.models.hvae.Merge`).
        decoder: ``(z [..., D], c [..., E]) -> [..., *likelihood.param_shape(x_shape)]``
            (leading axes of z and c broadcast: z ``[S, B, D]`` meets c ``[B, E]``).
        labels: :class:`LabelEncoding`, labels -> features c.
        prior: an unconditional prior module (``prior()`` -> p(z), e.g. ``StandardNormal(D)``),
            or ``None`` with ``label_prior``.
        label_prior: a :class:`LabelPrior`, the learned p(z|y); give exactly one of the two.
        posterior: encoder output -> q(z|x, y) (default :class:`DiagonalGaussian`).
        likelihood: decoder output -> p(x|z, y) (default Bernoulli).

    Labels: ``with model.given(y): objective(model, x)`` (or ``model(x, y=y)``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        labels: LabelEncoding,
        prior: nn.Module | None = None,
        label_prior: LabelPrior | None = None,
        posterior: nn.Module | None = None,
        likelihood: nn.Module | None = None,
    ):
        super().__init__()
        if (prior is None) == (label_prior is None):
            raise ValueError(
                "give exactly one of prior (p(z), unconditional) and label_prior (p(z|y)); "
                f"received prior={type(prior).__name__}, label_prior={type(label_prior).__name__}"
            )
        self.encoder, self.decoder, self.labels = encoder, decoder, labels
        self.conditional_prior = label_prior is not None
        self.prior = prior if prior is not None else _GivenLabelPrior(label_prior, self._features)
        self.posterior = posterior if posterior is not None else DiagonalGaussian()
        self.likelihood = likelihood if likelihood is not None else Bernoulli()
        self._given: torch.Tensor | None = None

    # -- labels ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def given(self, y: torch.Tensor) -> Iterator[CVAE]:
        """Condition every call inside the block on labels ``y [B]`` (restored on exit)."""
        y = _check_labels(y, self.labels.num_classes)
        old, self._given = self._given, y
        try:
            yield self
        finally:
            self._given = old

    def _labels(self, y: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        if y is None:
            y = self._given
            if y is None:
                raise ValueError(
                    "CVAE needs labels: wrap the call in `with model.given(y):` (y: [B] "
                    "integer class labels) or pass y=...; received none"
                )
        else:
            y = _check_labels(y, self.labels.num_classes)
        if batch is not None and y.shape[0] != batch:
            raise ValueError(
                f"labels y must have one entry per example: shape [{batch}]; received shape "
                f"{tuple(y.shape)}"
            )
        return y

    def _features(self, y: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        return self.labels(self._labels(y, batch))

    def _prior(self, c: torch.Tensor) -> Distribution:
        return self.prior.label_prior(c) if self.conditional_prior else self.prior()

    # -- the VAE interface ----------------------------------------------------------------

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x, y): batch ``[B]``, event ``[D]`` (y: the given labels by default)."""
        return self.posterior(self.encoder(x, self._features(y, x.shape[0])))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z, y) for z ``[..., B, D]`` and labels ``[B]``: batch ``[..., B]``."""
        return self._decode(z, self._features(y, z.shape[-2] if z.dim() >= 2 else None))

    def _decode(self, z: torch.Tensor, c: torch.Tensor) -> Distribution:
        params = self.decoder(z, c)
        lead = z.dim() - 1
        return self.likelihood(params, event_ndim=params.dim() - lead)

    def forward(
        self,
        x: torch.Tensor,
        samples: int = 1,
        prior: Distribution | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Encode (x, y), draw ``samples`` z ``[S, B, D]``, decode them given y.

        ``y``: labels ``[B]`` (default: those of the enclosing ``given``). ``prior``: p(z) or
        p(z|y) already built for these labels (default ``model.prior()``).
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1; received {samples}")
        c = self._features(y, x.shape[0])
        h = self.encoder(x, c)
        q = self.posterior(h)
        z = q.rsample((samples,))
        pz = self._prior(c) if prior is None else prior
        return VAEOutput(h, q, z, pz, self._decode(z, c))

    @torch.no_grad()
    def sample(self, n: int, label: int | torch.Tensor, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x|z, y), z ~ p(z|y) for class ``label`` (an int, or labels ``[n]``).

        Returns ``[n, *x_shape]``; ``mean=True`` returns E[x|z, y] (for pictures).
        """
        check_count("n", n)
        y = torch.full((n,), label, dtype=torch.long) if isinstance(label, int) else label
        c = self._features(y, n)
        pz = self._prior(c)
        z = pz.sample() if self.conditional_prior else pz.sample((n,))
        px = self._decode(z, c)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, y: torch.Tensor | None = None, mean: bool = True
    ) -> torch.Tensor:
        """E[x | z = E_q[z|x, y], y] (or a draw with ``mean=False``): ``[B, *x_shape]``."""
        c = self._features(y, x.shape[0])
        px = self._decode(self.posterior(self.encoder(x, c)).mean, c)
        return px.mean if mean else px.sample()


def log_likelihood(
    model: CVAE, x: torch.Tensor, y: torch.Tensor, samples: int = 5000, batch_size: int = 100
) -> torch.Tensor:
    """Importance-sampled ``log p(x|y)`` per example, nats ``[N]``: :func:`vaekit.evaluate.log_likelihood`
    run batch by batch inside ``model.given(y_batch)``."""
    from vaekit.evaluate import log_likelihood as _log_likelihood

    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of examples; received {x.shape[0]} and {y.shape[0]}"
        )
    check_count("batch_size", batch_size)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        with model.given(yb):
            out.append(_log_likelihood(model, xb, samples=samples, batch_size=xb.shape[0]))
    return torch.cat(out)


def build_cvae(
    input_shape: Sequence[int],
    num_classes: int = 10,
    *,
    latent_dim: int = 20,
    hidden: Sequence[int] = (300, 300),
    conditional_prior: bool = False,
    label_embedding: str = "onehot",
    embedding_dim: int | None = None,
    gated: bool = False,
    likelihood: Likelihood | None = None,
) -> CVAE:
    """A CVAE with dense networks on ``[x, c_y]`` and ``[z, c_y]``: log w as in :class:`CVAE`, nats.

    * q(z|x, y):  [flatten(x) | c_y] -> hidden -> 2 D
    * p(x|z, y):  [z | c_y] -> reversed hidden -> likelihood parameters
    * p(z|y):     :class:`LabelPrior` (``conditional_prior=True``; a per-class mean and
      log-variance) or N(0, I).

    Args:
        input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        num_classes: K.
        latent_dim: D.
        hidden: widths of the encoder's hidden layers (the decoder mirrors them).
        conditional_prior: learn p(z|y) instead of N(0, I).
        label_embedding: ``"onehot"`` or ``"embedding"`` (learned, ``embedding_dim`` wide).
        gated: :class:`~vaekit.models.networks.GatedMLP` layers instead of ReLU MLPs.
        likelihood: p(x|z, y) (default Bernoulli).
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints; received {input_shape!r}")
    check_count("latent_dim", latent_dim)
    hidden = tuple(hidden)
    labels = LabelEncoding(num_classes, label_embedding, embedding_dim)
    likelihood = likelihood if likelihood is not None else Bernoulli()
    out_shape = likelihood.param_shape(shape)
    e = labels.features

    def net(n_in: int, n_out: int, widths: tuple[int, ...], out=None) -> nn.Module:
        if gated:
            return GatedMLP(n_in, n_out, widths, out_shape=out)
        return MLP(n_in, n_out, widths, out_shape=out)

    encoder = Merge(
        [nn.Flatten(-len(shape)), nn.Identity()], net(math.prod(shape) + e, 2 * latent_dim, hidden)
    )
    decoder = Merge(
        [nn.Identity(), nn.Identity()],
        net(latent_dim + e, math.prod(out_shape), hidden[::-1], out_shape),
    )
    if conditional_prior:
        return CVAE(
            encoder,
            decoder,
            labels=labels,
            label_prior=LabelPrior(e, latent_dim),
            likelihood=likelihood,
        )
    return CVAE(
        encoder, decoder, labels=labels, prior=StandardNormal(latent_dim), likelihood=likelihood
    )
