"""Hierarchical VAE with two stochastic layers (the HVAE of Tomczak & Welling 2018).

Generative model ``p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1, z2)``; inference model
``q(z1, z2|x) = q(z2|x) q(z1|x, z2)``. One pass returns a :class:`~vaekit.models.vae.VAEOutput`
whose ``z`` is the concatenation ``[z1 | z2]`` (``[S, B, D1 + D2]``) and whose ``posterior``
and ``prior`` are :class:`TwoLayer` distributions over that concatenation, so every sampled
objective (``ELBO(kl="mc")``, ``IWAE``, ``evaluate.log_likelihood``) works unchanged:

    log w = log p(x|z1, z2) + [log p(z2) + log p(z1|z2)] - [log q(z2|x) + log q(z1|x, z2)]   (nats)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.distributions import Distribution, constraints
from torch.func import functional_call

from vaekit import priors as P
from vaekit._checks import check_choice
from vaekit.likelihoods import Bernoulli, Likelihood
from vaekit.models.networks import MLP, GatedDense, GatedMLP
from vaekit.outputs import VAEOutput
from vaekit.posteriors import DiagonalGaussian

__all__ = ["Merge", "TwoLayer", "HVAE", "build_hvae"]


class Merge(nn.Module):
    """A network of several inputs: ``head(concat_i branch_i(input_i))``.

    Each branch maps its input to ``[..., H_i]``; the leading (batch) axes of the branch
    outputs broadcast before the concatenation, so x ``[B, ...]`` meets z ``[S, B, D]`` with
    the x branch computed once per example, not once per sample.

    Args:
        branches: one module per input (``nn.Identity()`` passes an input through; use
            ``nn.Flatten(-k)`` to flatten a k-axis example).
        head: ``[..., sum_i H_i] -> output``.
    """

    def __init__(self, branches: Sequence[nn.Module], head: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.head = head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.branches):
            raise ValueError(
                f"Merge expected {len(self.branches)} inputs (one per branch); "
                f"received {len(inputs)}"
            )
        feats = [branch(t) for branch, t in zip(self.branches, inputs, strict=True)]
        try:
            lead = torch.broadcast_shapes(*(f.shape[:-1] for f in feats))
        except RuntimeError:
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise ValueError(
                f"Merge inputs must have broadcastable leading (batch) axes; received "
                f"shapes {shapes} (branch outputs {[tuple(f.shape) for f in feats]})"
            ) from None
        return self.head(torch.cat([f.expand(*lead, f.shape[-1]) for f in feats], dim=-1))


class TwoLayer(Distribution):
    """p(z) over ``z = [z1 | z2]`` from a top ``p(z2)`` and a conditional ``p(z1|z2)``.

    ``log_prob(z) = log p(z2) + log p(z1|z2)`` nats, ``[...]`` for z ``[..., D1 + D2]``;
    ``rsample`` draws ``z2 ~ p(z2)`` then ``z1 ~ p(z1|z2)`` (reparameterised where the top
    is). The same object serves the prior ``p(z2) p(z1|z2)`` and the posterior
    ``q(z2|x) q(z1|x, z2)``.

    Args:
        top: p(z2), event ``[D2]``.
        conditional: ``z2 [..., D2] -> p(z1|z2)`` with batch ``[...]`` and event ``[D1]``.
        dim1: D1.
        context: what ``conditional`` was built from (the HVAE keeps x here so that
            :meth:`HVAE.detached_posterior` can rebuild it); not used by the distribution.

    The conditional of the last ``rsample`` is kept: ``log_prob`` of that very tensor reuses
    it instead of running the network again (any other z is evaluated from scratch).
    ``mean`` is the plug-in mean ``[E[z1 | z2 = E z2] | E z2]``, exact when
    ``E[z1|z2]`` is affine in z2.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(
        self,
        top: Distribution,
        conditional: Callable[[torch.Tensor], Distribution],
        dim1: int,
        context: torch.Tensor | None = None,
    ):
        if len(top.event_shape) != 1:
            raise ValueError(
                f"top must have a vector event shape [D2]; received {tuple(top.event_shape)}"
            )
        self.top, self.conditional, self.dim1, self.context = top, conditional, int(dim1), context
        self.dim2 = int(top.event_shape[0])
        self._last: tuple[torch.Tensor, Distribution] | None = None
        super().__init__(top.batch_shape, torch.Size([self.dim1 + self.dim2]), validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.top.has_rsample

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., D1 + D2] -> (z1 [..., D1], z2 [..., D2])``."""
        if z.dim() < 1 or z.shape[-1] != self.dim1 + self.dim2:
            raise ValueError(
                f"z must have last axis D1 + D2 = {self.dim1} + {self.dim2} = "
                f"{self.dim1 + self.dim2} ([z1 | z2]); received shape {tuple(z.shape)}"
            )
        return z[..., : self.dim1], z[..., self.dim1 :]

    def rsample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        z2 = self.top.rsample(torch.Size(sample_shape))
        lower = self.conditional(z2)
        z = torch.cat([lower.rsample(), z2], dim=-1)
        self._last = (z, lower)
        return z

    def sample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            z2 = self.top.sample(torch.Size(sample_shape))
            return torch.cat([self.conditional(z2).sample(), z2], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.split(value)
        if self._last is not None and value is self._last[0]:
            lower = self._last[1]
        else:
            lower = self.conditional(z2)
        return self.top.log_prob(z2) + lower.log_prob(z1)

    @property
    def mean(self) -> torch.Tensor:
        m2 = self.top.mean
        return torch.cat([self.conditional(m2).mean, m2], dim=-1)


def _check_dims(latent_dims: Sequence[int]) -> tuple[int, int]:
    dims = tuple(latent_dims)
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(
            f"latent_dims must be two positive integers (D1, D2); received {latent_dims!r}"
        )
    return dims  # type: ignore[return-value]


class HVAE(nn.Module):
    """Two stochastic layers: ``p(z2) p(z1|z2) p(x|z1, z2)`` with ``q(z2|x) q(z1|x, z2)``.

    ``log w = log p(x|z1,z2) + log p(z2) + log p(z1|z2) - log q(z2|x) - log q(z1|x,z2)``
    (nats), read by the objectives from a :class:`VAEOutput` with ``z = [z1 | z2]``.

    Args:
        encoder_z2: ``x [B, *x_shape] -> [B, 2 D2]`` (parameters of q(z2|x)).
        encoder_z1: ``(x [B, *x_shape], z2 [S, B, D2]) -> [S, B, 2 D1]`` (q(z1|x, z2)),
            e.g. a :class:`Merge`.
        prior_z1: ``z2 [..., D2] -> [..., 2 D1]`` (p(z1|z2)).
        decoder: ``(z1 [..., D1], z2 [..., D2]) -> [..., *likelihood.param_shape(x_shape)]``.
        latent_dims: ``(D1, D2)``.
        prior: ``prior()`` -> p(z2), e.g. ``StandardNormal(D2)`` or a ``VampPrior`` over z2
            (built on ``encoder_z2``); ``model.prior()`` is this top prior.
        posterior: head turning ``[mean | logvar]`` into a distribution, used for q(z2|x),
            q(z1|x, z2) and p(z1|z2) (default :class:`DiagonalGaussian`).
        likelihood: decoder output -> p(x|z1, z2) (default Bernoulli).
    """

    def __init__(
        self,
        encoder_z2: nn.Module,
        encoder_z1: nn.Module,
        prior_z1: nn.Module,
        decoder: nn.Module,
        *,
        latent_dims: Sequence[int],
        prior: nn.Module,
        posterior: nn.Module | None = None,
        likelihood: nn.Module | None = None,
    ):
        super().__init__()
        self.latent_dims = _check_dims(latent_dims)
        self.encoder_z2, self.encoder_z1 = encoder_z2, encoder_z1
        self.prior_z1, self.decoder, self.prior = prior_z1, decoder, prior
        self.posterior = posterior if posterior is not None else DiagonalGaussian()
        self.likelihood = likelihood if likelihood is not None else Bernoulli()

    # -- the two joint distributions ------------------------------------------------------

    def _layer(self, name: str, d: Distribution, dim: int) -> Distribution:
        if tuple(d.event_shape) != (dim,):
            raise ValueError(
                f"{name} gives a distribution with event shape {tuple(d.event_shape)}; "
                f"latent_dims = {self.latent_dims} expects ({dim},)"
            )
        return d

    def _p_z1(self, z2: torch.Tensor) -> Distribution:
        return self._layer("prior_z1", self.posterior(self.prior_z1(z2)), self.latent_dims[0])

    def joint_prior(self, top: Distribution | None = None) -> TwoLayer:
        """p(z1, z2) = p(z2) p(z1|z2) over ``[z1 | z2]`` (``top``: a p(z2) already built)."""
        top = self.prior() if top is None else top
        return TwoLayer(
            self._layer("prior", top, self.latent_dims[1]), self._p_z1, self.latent_dims[0]
        )

    def _joint_posterior(
        self, x: torch.Tensor, h2: torch.Tensor, encoder_z1: Callable | None = None
    ) -> TwoLayer:
        enc1 = self.encoder_z1 if encoder_z1 is None else encoder_z1
        d1, d2 = self.latent_dims

        def q_z1(z2: torch.Tensor) -> Distribution:
            return self._layer("encoder_z1", self.posterior(enc1(x, z2)), d1)

        q_z2 = self._layer("encoder_z2", self.posterior(h2), d2)
        return TwoLayer(q_z2, q_z1, d1, context=x)

    def encode(self, x: torch.Tensor) -> TwoLayer:
        """q(z1, z2|x) = q(z2|x) q(z1|x, z2) over ``[z1 | z2]``: batch ``[B]``, event ``[D1 + D2]``.

        Its ``mean`` is the plug-in ``[E[z1|x, z2 = E z2] | E z2]`` (used by reconstructions
        and active units). The joint, not q(z2|x), so that no caller mistakes the top KL
        for the whole KL.
        """
        return self._joint_posterior(x, self.encoder_z2(x))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z1, z2) for ``z = [z1 | z2]`` of shape ``[..., D1 + D2]``: batch ``[...]``."""
        d1, d2 = self.latent_dims
        if z.dim() < 2 or z.shape[-1] != d1 + d2:
            raise ValueError(
                f"z must have shape [..., D1 + D2] = [..., {d1 + d2}] (at least one batch "
                f"axis); received {tuple(z.shape)}"
            )
        params = self.decoder(z[..., :d1], z[..., d1:])
        lead = z.dim() - 1
        return self.likelihood(params, event_ndim=params.dim() - lead)

    def forward(
        self, x: torch.Tensor, samples: int = 1, prior: Distribution | None = None
    ) -> VAEOutput:
        """Draw ``samples`` z = [z1 | z2] ``[S, B, D1 + D2]`` from q and decode them.

        ``prior``: p(z2) already built (evaluation reuses one VampPrior mixture across chunks);
        the output's ``prior`` is the joint p(z2) p(z1|z2). ``encoder_out`` holds the
        parameters of q(z2|x), ``[B, 2 D2]``.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1; received {samples}")
        h2 = self.encoder_z2(x)
        q = self._joint_posterior(x, h2)
        z = q.rsample((samples,))
        # decoder and prior read z itself (not z1, z2 from before the concatenation), and so
        # does detached_posterior: with stop_q every path from the encoder to log w runs
        # through out.z, as DReG's hook on out.z requires
        return VAEOutput(h2, q, z, self.joint_prior(prior), self.decode(z))

    def detached_posterior(self, out: VAEOutput) -> TwoLayer:
        """q(z1, z2|x) with the encoders' parameters detached; z keeps its path.

        For "sticking the landing" / DReG: ``log q(z2|x) + log q(z1|x, z2)`` with no gradient
        to the encoder weights except through z, including z2's path into q(z1|x, z2)
        (so encoder_z1 runs again, on detached copies of its weights).
        """
        x = getattr(out.posterior, "context", None)
        if x is None:
            raise ValueError("out.posterior must be the TwoLayer posterior of HVAE.forward")
        weights = {name: p.detach() for name, p in self.encoder_z1.named_parameters()}

        def encoder_z1(x_: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
            return functional_call(self.encoder_z1, weights, (x_, z2))

        return self._joint_posterior(x, out.encoder_out.detach(), encoder_z1)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x|z1, z2), z2 ~ p(z2), z1 ~ p(z1|z2): ``[n, *x_shape]`` (``mean``: E[x|z])."""
        px = self.decode(self.joint_prior().sample((n,)))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """E[x | z = plug-in mean of q(z1, z2|x)] (or a draw with ``mean=False``): ``[B, *x_shape]``."""
        px = self.decode(self.encode(x).mean)
        return px.mean if mean else px.sample()


# -- builder -------------------------------------------------------------------------------


def _unit(in_features: int, out_features: int, gated: bool) -> nn.Module:
    """One hidden layer: GatedDense, or Linear + ReLU."""
    if gated:
        return GatedDense(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU())


def _body(in_shape, out_features: int, hidden: int, gated: bool, out_shape=None) -> nn.Module:
    if gated:
        return GatedMLP(in_shape, out_features, (hidden, hidden), out_shape=out_shape)
    return MLP(in_shape, out_features, (hidden, hidden), out_shape=out_shape)


def _head(in_features: int, out_features: int, hidden: int, gated: bool, out_shape=None):
    if gated:
        return GatedMLP(in_features, out_features, (hidden,), out_shape=out_shape)
    return MLP(in_features, out_features, (hidden,), out_shape=out_shape)


def build_hvae(
    input_shape: Sequence[int],
    latent_dims: Sequence[int] = (40, 40),
    hidden: int = 300,
    gated: bool = True,
    prior: str = "standard",
    components: int = 500,
    likelihood: Likelihood | None = None,
    pseudo_init: str | torch.Tensor = "random",
) -> HVAE:
    """The VampPrior paper's HVAE (Tomczak & Welling 2018): log w in nats as in :class:`HVAE`.

    Networks (``h`` = ``hidden``, every layer a :class:`GatedDense` when ``gated``, else
    Linear + ReLU; the last layer of each is linear):

    * q(z2|x):      x -> h -> h -> 2 D2
    * q(z1|x, z2):  [x -> h, z2 -> h] -> h -> 2 D1
    * p(z1|z2):     z2 -> h -> h -> 2 D1
    * p(x|z1, z2):  [z1 -> h, z2 -> h] -> h -> likelihood parameters

    Args:
        input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``.
        latent_dims: ``(D1, D2)``, 40 and 40 in the paper.
        hidden: width of every hidden layer (300 in the paper).
        gated: GatedDense layers (the paper) or Linear + ReLU.
        prior: p(z2): ``"standard"`` (N(0, I)) or ``"vamp"`` (VampPrior through q(z2|x)).
        components: VampPrior pseudo-inputs K (500 in the paper).
        likelihood: p(x|z1, z2) (default ``Bernoulli()``).
        pseudo_init: VampPrior ``init`` (``"random"`` or a data tensor).
    """
    check_choice("prior", prior, ("standard", "vamp"))
    d1, d2 = _check_dims(latent_dims)
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive integer; received {hidden!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints; received {input_shape!r}")
    likelihood = likelihood if likelihood is not None else Bernoulli()
    out_shape = likelihood.param_shape(shape)
    n_x = math.prod(shape)

    encoder_z2 = _body(shape, 2 * d2, hidden, gated)
    x_branch = nn.Sequential(nn.Flatten(-len(shape)), _unit(n_x, hidden, gated))
    encoder_z1 = Merge(
        [x_branch, _unit(d2, hidden, gated)], _head(2 * hidden, 2 * d1, hidden, gated)
    )
    prior_z1 = _body(d2, 2 * d1, hidden, gated)
    decoder = Merge(
        [_unit(d1, hidden, gated), _unit(d2, hidden, gated)],
        _head(2 * hidden, math.prod(out_shape), hidden, gated, out_shape=out_shape),
    )
    posterior = DiagonalGaussian()
    top: nn.Module
    if prior == "standard":
        top = P.StandardNormal(d2)
    else:
        init = pseudo_init
        if isinstance(init, torch.Tensor):
            init = init.reshape(init.shape[0], *shape)
        top = P.VampPrior(encoder_z2, posterior, shape, components=components, init=init)
    return HVAE(
        encoder_z2,
        encoder_z1,
        prior_z1,
        decoder,
        latent_dims=(d1, d2),
        prior=top,
        posterior=posterior,
        likelihood=likelihood,
    )
