"""The M2 semi-supervised VAE (Kingma et al. 2014): a discrete label y beside the continuous z.

``p(x, y, z) = p(y) p(z) p(x|y, z)`` with p(y) uniform over C classes, p(z) any vaekit
prior; ``q(y, z|x) = q(y|x) q(z|x, y)``. ``ELBO(x, y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) -
KL(q(z|x, y) || p(z)) <= log p(x, y)`` (nats); unlabelled, y is summed out:
``log p(x) >= -U(x) = sum_y q(y|x) ELBO(x, y) + H(q(y|x))``. The objective is
:class:`vaekit.objectives.m2.M2Objective`.

The encoder q(z|x, y) and decoder p(x|y, z) are :class:`LabelledInput` networks, whose first
layer is split ``W_a a + W_y y``: for a one-hot y, ``W_y y`` is a column of W_y, so all C
classes are enumerated in one batched pass ``[C, B]`` with the x-part ``W_a x`` computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit._checks import check_count, validation_enabled
from vaekit.likelihoods import Bernoulli, Likelihood
from vaekit.models.networks import MLP, _activation
from vaekit.outputs import VAEOutput
from vaekit.posteriors import DiagonalGaussian

__all__ = [
    "LabelledInput",
    "M2",
    "M2Enumeration",
    "build_m2",
    "balanced_labels",
    "log_likelihood",
    "class_accuracy",
    "as_event",
    "build_m2_from_config",
    "check_label_count",
    "withhold_labels",
    "evaluate_m2",
]


class LabelledInput(nn.Module):
    """A dense network on ``[a | y]``: ``h_1 = act(W_a a + W_y y + b)``, then hidden layers, then Linear.

    ``y`` is a one-hot (or relaxed, Gumbel-softmax) class vector ``[..., C]``. :meth:`enumerate`
    evaluates every class at once: ``W_y e_c`` is column c of W_y, so ``[C, ..., out]`` costs
    one ``W_a a`` and no one-hot products (exactly equal to ``forward`` on each e_c).

    Args:
        a_features: features of ``a`` (x flattened, or z).
        num_classes: C.
        out_features: outputs (``out_shape`` reshapes them).
        hidden: widths of the hidden layers (at least one).
        activation: a name of :data:`vaekit.models.networks.ACTIVATIONS`.
    """

    def __init__(
        self,
        a_features: int,
        num_classes: int,
        out_features: int,
        hidden: Sequence[int] = (500,),
        *,
        activation: str = "softplus",
        out_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("LabelledInput needs at least one hidden layer; received hidden=()")
        self.a_features = check_count("a_features", a_features)
        self.num_classes = check_count("num_classes", num_classes, 2)
        self.first_a = nn.Linear(self.a_features, hidden[0])
        self.first_y = nn.Linear(self.num_classes, hidden[0], bias=False)
        self.rest = nn.Sequential(
            _activation(activation),
            MLP(
                hidden[0],
                out_features,
                hidden[1:],
                activation=activation,
                flatten_input=False,
                out_shape=out_shape,
            ),
        )

    def forward(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``a [..., A]``, ``y [..., C]`` (broadcasting leading axes) -> ``[..., *out_shape]``."""
        return self.rest(self.first_a(a) + self.first_y(y))

    def enumerate(self, a: torch.Tensor) -> torch.Tensor:
        """Every class at once: ``a [..., B, A]`` -> ``[..., C, B, *out_shape]`` (``a`` shared)
        or, with ``a [..., C, B, A]`` already per class, the same shape."""
        h = self.first_a(a)  # the x- (or z-) part, once
        table = self.first_y.weight.T[:, None, :]  # [C, 1, H]: W_y e_c
        if h.dim() < 3 or h.shape[-3] != self.num_classes:
            h = h.unsqueeze(-3)
        return self.rest(h + table)


@dataclass
class M2Enumeration:
    """One pass of M2 over every class: ``logits [B, C]`` of q(y|x); ``posterior`` q(z|x, y)
    (batch ``[C, B]``); ``z [S, C, B, D]``; ``likelihood`` p(x|y, z) (batch ``[S, C, B]``);
    ``prior`` p(z)."""

    logits: torch.Tensor
    posterior: Distribution
    z: torch.Tensor
    likelihood: Distribution
    prior: Distribution


class M2(nn.Module):
    """p(y) p(z) p(x|y, z) with q(y|x) q(z|x, y) (Kingma et al. 2014, "M2"); densities in nats.

    Args:
        classifier: ``x [B, *x_shape] -> logits [B, C]`` of q(y|x).
        encoder: :class:`LabelledInput` ``(flat x, y) -> [mean | log-variance]`` of q(z|x, y).
        decoder: :class:`LabelledInput` ``(z, y) -> likelihood parameters``.
        prior: ``prior()`` -> p(z) (e.g. ``StandardNormal(D)``).
        posterior: encoder output -> q(z|x, y) (default :class:`DiagonalGaussian`).
        likelihood: decoder output -> p(x|y, z) (default Bernoulli).

    p(y) is uniform: ``log p(y) = -log C``. Labels ``y`` are ``[B]`` integer classes, or
    ``[B, C]`` class vectors (one-hot or relaxed).
    """

    # the trainer's validation bound is the objective's (-U(x)), not a plain ELBO's
    validates_with_objective = True

    def __init__(
        self,
        classifier: nn.Module,
        encoder: LabelledInput,
        decoder: LabelledInput,
        *,
        prior: nn.Module,
        posterior: nn.Module | None = None,
        likelihood: nn.Module | None = None,
    ):
        super().__init__()
        if encoder.num_classes != decoder.num_classes:
            raise ValueError(
                f"encoder and decoder must take the same number of classes; received "
                f"{encoder.num_classes} and {decoder.num_classes}"
            )
        self.classifier, self.encoder, self.decoder, self.prior = (
            classifier,
            encoder,
            decoder,
            prior,
        )
        self.num_classes = encoder.num_classes
        self.posterior = posterior if posterior is not None else DiagonalGaussian()
        self.likelihood = likelihood if likelihood is not None else Bernoulli()

    # -- parts ---------------------------------------------------------------------------

    @property
    def log_py(self) -> float:
        """log p(y) = -log C, nats (uniform p(y))."""
        return -math.log(self.num_classes)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x): ``[B, C]``."""
        return self.classifier(x)

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Integer labels ``[B]`` -> one-hot ``[B, C]`` in the model's dtype (vectors pass through)."""
        if y.dim() >= 1 and y.is_floating_point() and y.shape[-1] == self.num_classes:
            return y
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(
                f"y must be integer class labels [B] or class vectors [B, {self.num_classes}]; "
                f"received dtype {y.dtype}, shape {tuple(y.shape)}"
            )
        if (
            validation_enabled()
            and y.numel()
            and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)
        ):
            raise ValueError(
                f"y must lie in [0, {self.num_classes - 1}]; received values in "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        dtype = self.encoder.first_a.weight.dtype
        return nn.functional.one_hot(y.long(), self.num_classes).to(dtype)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def _decode_params(self, params: torch.Tensor, lead: int) -> Distribution:
        return self.likelihood(params, event_ndim=params.dim() - lead)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> Distribution:
        """q(z|x, y): batch ``[B]``, event ``[D]``."""
        return self.posterior(self.encoder(self._flat(x), self.one_hot(y)))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> Distribution:
        """p(x|y, z) for z ``[..., B, D]`` and y ``[B]`` / ``[..., B, C]``: batch ``[..., B]``."""
        return self._decode_params(self.decoder(z, self.one_hot(y)), z.dim() - 1)

    # -- passes --------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        samples: int = 1,
        prior: Distribution | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Encode (x, y), draw ``samples`` z ``[S, B, D]``, decode them given y (labelled pass)."""
        check_count("samples", samples)
        if y is None:
            raise ValueError(
                "M2's forward pass needs labels y ([B] classes or [B, C] class vectors); for y "
                "summed out use M2.enumerate, the 'm2' objective or vaekit.models.m2.log_likelihood"
            )
        h = self.encoder(self._flat(x), self.one_hot(y))
        q = self.posterior(h)
        z = q.rsample((samples,))
        pz = self.prior() if prior is None else prior
        c = self.one_hot(y)
        return VAEOutput(h, q, z, pz, self._decode_params(self.decoder(z, c), 2))

    def enumerate(
        self, x: torch.Tensor, samples: int = 1, prior: Distribution | None = None
    ) -> M2Enumeration:
        """Every class in one batched pass: q(y|x), q(z|x, y) ``[C, B]``, z ``[S, C, B, D]``,
        p(x|y, z) ``[S, C, B]``."""
        return self.enumerate_z(x, samples, prior, logits=self.classify(x))

    def enumerate_z(
        self,
        x: torch.Tensor,
        samples: int = 1,
        prior: Distribution | None = None,
        logits: torch.Tensor | None = None,
    ) -> M2Enumeration:
        """:meth:`enumerate` without the classifier (``logits`` as given, default None)."""
        check_count("samples", samples)
        q = self.posterior(self.encoder.enumerate(self._flat(x)))
        z = q.rsample((samples,))
        px = self._decode_params(self.decoder.enumerate(z), 3)
        pz = self.prior() if prior is None else prior
        return M2Enumeration(logits, q, z, px, pz)

    # -- pictures ------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|x): ``[B]`` class indices."""
        return self.classify(x).argmax(-1)

    @torch.no_grad()
    def sample(self, n: int, label: int | torch.Tensor | None = None, mean: bool = True):
        """n draws x ~ p(x|y, z), z ~ p(z), y = ``label`` (default y ~ p(y)): ``[n, *x_shape]``."""
        check_count("n", n)
        device = self.encoder.first_a.weight.device
        if label is None:
            y = torch.randint(self.num_classes, (n,), device=device)
        elif isinstance(label, int):
            y = torch.full((n,), label, dtype=torch.long, device=device)
        else:
            y = label.to(device)
        z = self.prior().sample((n,))
        px = self.decode(z, y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """E[x | z = E_q[z|x, y_hat], y_hat], y_hat = argmax q(y|x): ``[B, *x_shape]``."""
        y = self.predict(x)
        px = self.decode(self.encode(x, y).mean, y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Fix z = E_q[z|x, y_hat], vary y: ``E[x|y=c, z]`` as ``[B, C, *x_shape]`` (the paper's
        "analogies" figure: one row per example, one column per class)."""
        y = self.predict(x)
        z = self.encode(x, y).mean  # [B, D]
        px = self._decode_params(self.decoder.enumerate(z), 2)  # batch [C, B]
        return px.mean.transpose(0, 1)


def build_m2(
    input_shape: Sequence[int],
    num_classes: int = 10,
    *,
    latent_dim: int = 50,
    hidden: Sequence[int] = (500,),
    activation: str = "softplus",
    prior: nn.Module | None = None,
    likelihood: Likelihood | None = None,
) -> M2:
    """M2 with dense networks (Pyro's ss-vae / Kingma's layout), log-densities in nats.

    * q(y|x): x -> hidden -> C logits
    * q(z|x, y): [x | y] -> hidden -> 2 D (mean, log-variance)
    * p(x|y, z): [z | y] -> hidden -> likelihood parameters

    Defaults: one hidden layer of 500 softplus units, D = 50 (the protocol of Pyro's table).
    ``prior`` default N(0, I); ``likelihood`` default Bernoulli.
    """
    from vaekit.priors import StandardNormal

    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints; received {input_shape!r}")
    check_count("latent_dim", latent_dim)
    check_count("num_classes", num_classes, 2)
    likelihood = likelihood if likelihood is not None else Bernoulli()
    out_shape = likelihood.param_shape(shape)
    n_x = math.prod(shape)
    classifier = MLP(shape, num_classes, tuple(hidden), activation=activation)
    encoder = LabelledInput(n_x, num_classes, 2 * latent_dim, hidden, activation=activation)
    decoder = LabelledInput(
        latent_dim,
        num_classes,
        math.prod(out_shape),
        tuple(hidden)[::-1],
        activation=activation,
        out_shape=out_shape,
    )
    prior = prior if prior is not None else StandardNormal(latent_dim)
    return M2(classifier, encoder, decoder, prior=prior, likelihood=likelihood)


def as_event(x: torch.Tensor, px: Distribution) -> torch.Tensor:
    """x ``[B, ...]`` reshaped to ``[B, *px.event_shape]`` (flat data vs image-shaped likelihood)."""
    return x.reshape(x.shape[0], *px.event_shape)


def build_m2_from_config(cfg, shape: Sequence[int], init_data, num_classes) -> M2:
    """The ``--model m2`` of a run config: :func:`build_m2` with the config's networks and
    prior; ValueError for a dense-only mismatch, a prior that needs q(z|x) (vamp), data
    without labels, or ``labels`` outside ``[C, N_train]``."""
    from vaekit.models.build import PRIOR_BUILDERS, build_likelihood

    if cfg.network != "mlp":
        raise ValueError(f"model 'm2' is built with MLPs: network 'mlp'; received {cfg.network!r}")
    allowed = ("standard", "learnable", "mog", "flow")
    if cfg.prior not in allowed:
        raise ValueError(
            f"model 'm2' takes prior {' | '.join(allowed)} (a VampPrior needs q(z|x) without y); "
            f"received {cfg.prior!r}"
        )
    if not num_classes:
        raise ValueError(
            "model 'm2' needs a data set with class labels (num_classes); received none"
        )
    n_train = None if init_data is None else int(init_data.shape[0])
    check_label_count(cfg.labels, num_classes, n_train)
    return build_m2(
        shape,
        num_classes,
        latent_dim=cfg.latent_dim,
        hidden=cfg.hidden,
        activation=cfg.activation,
        prior=PRIOR_BUILDERS[cfg.prior](cfg, None, None, tuple(shape), init_data),
        likelihood=build_likelihood(cfg),
    )


def check_label_count(n: int, num_classes: int, n_train: int | None) -> None:
    """``--labels N``: at least one per class (``N >= C``), at most the training set."""
    if n < num_classes:
        hint = " (model m2 needs --labels N)" if n == 0 else ""
        raise ValueError(
            f"labels must be >= the number of classes ({num_classes}), one labelled example "
            f"per class at least{hint}; received {n}"
        )
    if n_train is not None and n > n_train:
        raise ValueError(f"labels must be <= the training set's size ({n_train}); received {n}")


# -- labels ----------------------------------------------------------------------------------


def balanced_labels(y: torch.Tensor, n: int, seed: int = 0, num_classes: int | None = None):
    """Indices of ``n`` labelled examples drawn without replacement, ``n // C`` per class (the
    first ``n mod C`` classes get one more), with a seeded generator; sorted ``[n]`` long.

    ValueError when ``n < C``, ``n`` exceeds the examples, or a class has too few examples.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ValueError("y must be a 1-D integer tensor of class labels [N]")
    classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if isinstance(n, bool) or not isinstance(n, int) or n < classes:
        raise ValueError(
            f"labels must be an integer >= the number of classes ({classes}), so that every "
            f"class gets a labelled example; received {n!r}"
        )
    if n > y.shape[0]:
        raise ValueError(
            f"labels must be at most the training set's size ({y.shape[0]}); received {n}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in range(classes):
        want = n // classes + (1 if c < n % classes else 0)
        members = torch.nonzero(y == c).flatten()
        if members.numel() < want:
            raise ValueError(
                f"labels={n} asks {want} examples of class {c}; the training set has "
                f"{members.numel()}"
            )
        picked.append(members[torch.randperm(members.numel(), generator=gen)[:want]])
    return torch.cat(picked).sort().values


def withhold_labels(splits, n: int, seed: int, used: int | None = None):
    """``splits`` with all but ``n`` balanced training labels set to :data:`UNLABELLED` (-1)
    (:func:`balanced_labels` with ``seed``, among the first ``used`` examples: those a
    ``max_train_examples`` run trains on) and the validation labels removed (the validation
    bound is then ``-U(x)``, with y summed out); the test split is unchanged."""
    import dataclasses

    from vaekit.objectives.m2 import UNLABELLED

    train = splits.train
    if train.y is None:
        raise ValueError("model 'm2' needs a data set with class labels; this one has none")
    used = len(train.y) if not used else min(int(used), len(train.y))
    classes = int(train.y.max()) + 1
    check_label_count(n, classes, used)
    keep = balanced_labels(train.y[:used], n, seed=seed, num_classes=classes)
    y = torch.full_like(train.y, UNLABELLED)
    y[keep] = train.y[keep]
    valid = splits.valid
    if valid is not None:
        valid = dataclasses.replace(valid, y=None)
    return dataclasses.replace(splits, train=dataclasses.replace(train, y=y), valid=valid)


# -- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def class_accuracy(model: M2, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """``(accuracy, confusion)``: the fraction of ``argmax q(y|x) == y`` and the ``[C, C]``
    count matrix (rows: true class, columns: predicted)."""
    preds = torch.cat(
        [model.predict(x[i : i + batch_size]).cpu() for i in range(0, x.shape[0], batch_size)]
    )
    y = y.cpu().long()
    c = model.num_classes
    confusion = torch.bincount(y * c + preds, minlength=c * c).reshape(c, c)
    return float((preds == y).double().mean()), confusion


@torch.no_grad()
def log_likelihood(model: M2, x: torch.Tensor, samples: int = 100, batch_size: int = 100):
    """Importance-sampled ``log p(x)`` with y summed out exactly, nats ``[N]``.

    ``log p(x) = logsumexp_y [log p(y) + log (1/K) sum_k p(x|y, z_k) p(z_k) / q(z_k|x, y)]``,
    ``z_k ~ q(z|x, y)``, K = ``samples`` per class (C * K decoder passes per example).
    """
    check_count("samples", samples)
    check_count("batch_size", batch_size)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        e = model.enumerate(xb, samples=samples)
        log_w = (
            e.likelihood.log_prob(as_event(xb, e.likelihood))
            + e.prior.log_prob(e.z)
            - e.posterior.log_prob(e.z)
        )  # [K, C, B]
        log_pxy = torch.logsumexp(log_w, 0) - math.log(samples)  # [C, B]
        out.append(torch.logsumexp(log_pxy + model.log_py, 0))
    return torch.cat(out)


@torch.no_grad()
def evaluate_m2(
    model: M2, x: torch.Tensor, y: torch.Tensor | None, samples: int = 1000, batch_size: int = 100
) -> dict:
    """The eval dict of an M2 run (nats per example; ``accuracy`` a fraction).

    ``nll``: ``-log p(x)`` by :func:`log_likelihood` with ``samples // C`` importance samples
    per class (at least 1), y summed out; ``elbo``, ``rec``, ``kl``: the unlabelled bound
    ``-U(x)`` and its terms (:class:`~vaekit.objectives.m2.M2Objective`, one z draw per
    class); ``accuracy`` and ``confusion`` (``[C][C]`` counts, rows true class) of
    ``argmax q(y|x)`` against ``y``; ``active_units`` of ``E_q[z|x, y_hat]``.
    """
    from vaekit.evaluate import active_units
    from vaekit.objectives import analytic_kl
    from vaekit.objectives.m2 import M2Objective

    model.eval()
    per_class = max(1, samples // model.num_classes)
    nll = -log_likelihood(model, x, samples=per_class, batch_size=batch_size)
    try:  # the analytic KL where the prior has one (standard, learnable), else Monte Carlo
        pz = model.prior()
        w = model.encoder.first_a.weight
        analytic_kl(model.posterior(w.new_zeros(1, 2 * pz.event_shape[0])), pz)
        kl = "analytic"
    except ValueError:
        kl = "mc"
    objective = M2Objective(kl=kl, reduction="none")
    sums = {"elbo": 0.0, "rec": 0.0, "kl": 0.0}
    means = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        out = objective(model, xb)
        sums["elbo"] += float(out.per_example["bound"].sum())
        sums["rec"] += float(out.per_example["rec"].sum())
        sums["kl"] += float(out.per_example["kl"].sum())
        means.append(model.encode(xb, model.predict(xb)).mean.cpu())
    n = x.shape[0]
    dims = math.prod(x.shape[1:])
    result = {
        "nll": float(nll.mean()),
        "elbo": sums["elbo"] / n,
        "rec": sums["rec"] / n,
        "kl": sums["kl"] / n,
        "bits_per_dim": float(nll.mean()) / (dims * math.log(2)),
        "active_units": active_units(torch.cat(means)),
        "samples": per_class * model.num_classes,
        "samples_per_class": per_class,
        "examples": int(n),
    }
    if y is not None:
        acc, confusion = class_accuracy(model, x, y, batch_size=max(batch_size, 500))
        result["accuracy"] = acc
        result["confusion"] = confusion.tolist()
    return result
