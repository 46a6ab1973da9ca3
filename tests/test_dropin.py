"""Drop-in: existing PyTorch VAEs (their own encoders and sigmoid decoders) through vaekit, exact.

References, transcribed below as small functions/classes (sizes as in the sources):
* pytorch/examples ``vae/main.py`` at commit 77f55b912142e11fcfdf5b530231fb9c52f181e8;
* Pyro's VAE tutorial, pyro-ppl/pyro ``examples/vae/vae.py`` at commit
  ff6ae1c9572591791aae8842bcd702fcf0b46fd6, scored by Pyro itself (``Trace_ELBO`` and
  ``TraceMeanField_ELBO``; skipped without pyro).
Each loss and its parameter gradients agree to float64 round-off.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vaekit
from vaekit.likelihoods import Bernoulli, Categorical, ContinuousBernoulli
from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import StandardNormal


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------- pytorch/examples vae/main.py


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py's VAE (784-400-20), unchanged."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def example_loss_function(recon_x, x, mu, logvar):
    """pytorch/examples vae/main.py's loss_function, unchanged."""
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _assert_same(loss, ref, grads, ref_grads):
    assert abs(loss.item() - ref.item()) <= 1e-11 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def _mnist_like(b=16):
    return torch.bernoulli(torch.rand(b, 1, 28, 28))  # the example's data: [B, 1, 28, 28]


def _example_reference(seed):
    """The example's model, a batch, and its loss and gradients with the draw of ``seed``."""
    m, data = ExampleVAE(), _mnist_like()
    torch.manual_seed(seed)
    recon, mu, logvar = m(data)
    ref = example_loss_function(recon, data, mu, logvar)
    return m, data, ref, _grads(m, ref)


def test_pytorch_example_through_vaekit_vae():
    # (the same draw: the example's randn_like and vaekit's rsample consume the same stream)
    m, data, ref, ref_grads = _example_reference(3)

    model = vaekit.VAE(
        m.encode, m.decode, prior=StandardNormal(20), likelihood=Bernoulli(probs=True)
    )  # the example's own encoder (a tuple) and decoder (a sigmoid): one flag
    assert {id(p) for p in model.parameters()} == {id(p) for p in m.parameters()}
    torch.manual_seed(3)
    out = vaekit.ELBO(reduction="sum")(model, data.view(-1, 784))
    _assert_same(out.loss, ref, _grads(m, out.loss), ref_grads)


def test_pytorch_example_through_classic_loss():
    m, data, ref, ref_grads = _example_reference(4)
    torch.manual_seed(4)
    recon, mu, logvar = m(data)  # the example's own forward, x not flattened
    out = vaekit.classic_loss(recon, data, mu, logvar, probs=True, reduction="sum")
    _assert_same(out.loss, ref, _grads(m, out.loss), ref_grads)
    # the per-example terms: BCE and the closed-form KL of each example
    bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="none").sum(1)
    kld = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    torch.testing.assert_close(out.per_example["rec"], bce.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(out.per_example["kl"], kld.detach(), rtol=1e-12, atol=0)
    mean = vaekit.classic_loss(recon, data, mu, logvar, probs=True, beta=4.0)
    assert mean.loss.item() == pytest.approx(((bce + 4 * kld).mean()).item(), rel=1e-12)


def test_probabilities_read_as_logits_differ():
    # the silent mistake the flag prevents: sigmoid outputs read as logits
    m, data = ExampleVAE(), _mnist_like()
    recon, mu, logvar = m(data)
    as_logits = vaekit.classic_loss(recon, data, mu, logvar, probs=False, reduction="sum")
    as_probs = vaekit.classic_loss(recon, data, mu, logvar, probs=True, reduction="sum")
    assert as_logits.loss.item() > as_probs.loss.item() + 100


def test_bernoulli_probs_clamps_like_torch_bce():
    p = torch.tensor([[0.0, 1.0, 0.3, 1e-50]])
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    lp = Bernoulli(probs=True)(p).log_prob(x)
    assert lp.item() == pytest.approx(-F.binary_cross_entropy(p, x, reduction="sum").item())
    assert torch.isfinite(lp).all()


def test_categorical_probs_equals_logits():
    logits = torch.randn(5, 4 * 3)  # 4 levels, 3 values
    x = torch.randint(0, 4, (5, 3))
    probs = torch.softmax(logits.view(5, 4, 3), dim=1).view(5, 12)
    ref = Categorical(4)(logits).log_prob(x)
    torch.testing.assert_close(Categorical(4, probs=True)(probs).log_prob(x), ref)


# ---------------------------------------------------------------- Pyro's VAE tutorial


class PyroEncoder(nn.Module):
    """examples/vae/vae.py Encoder: returns (z_loc, z_scale), z_scale = exp(.)."""

    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, 784)
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class PyroDecoder(nn.Module):
    """examples/vae/vae.py Decoder: Bernoulli probabilities (torch.sigmoid)."""

    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)
        self.softplus = nn.Softplus()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        return torch.sigmoid(self.fc21(hidden))


@pytest.mark.parametrize(
    "pyro_elbo, kl", [("TraceMeanField_ELBO", "analytic"), ("Trace_ELBO", "mc")]
)
def test_pyro_tutorial(pyro_elbo, kl):
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as dist
    from pyro import infer

    z_dim, hidden = 50, 400  # the tutorial's sizes
    enc, dec = PyroEncoder(z_dim, hidden), PyroDecoder(z_dim, hidden)
    params = [*enc.parameters(), *dec.parameters()]

    def model(x):  # the tutorial's VAE.model
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z_loc = torch.zeros(x.shape[0], z_dim, dtype=x.dtype)
            z_scale = torch.ones(x.shape[0], z_dim, dtype=x.dtype)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = dec.forward(z)
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, 784),
            )

    def guide(x):  # the tutorial's VAE.guide
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = enc.forward(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    data = _mnist_like(8)
    pyro.clear_param_store()
    torch.manual_seed(5)
    ref = getattr(infer, pyro_elbo)().differentiable_loss(model, guide, data)
    ref_grads = torch.autograd.grad(ref, params)

    vae = vaekit.VAE(
        enc, dec, prior=StandardNormal(z_dim), posterior=DiagonalGaussian(param="scale"),
        likelihood=Bernoulli(probs=True),
    )  # fmt: skip
    torch.manual_seed(5)
    out = vaekit.ELBO(kl=kl, reduction="sum")(vae, data.view(-1, 784))
    grads = torch.autograd.grad(out.loss, params)
    assert abs(out.loss.item() - ref.item()) <= 1e-11 * abs(ref.item())
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-11)


# ---------------------------------------------------------------- misuse


def _parts():
    return nn.Linear(6, 4), nn.Linear(2, 6)


def test_encoder_tuple_arity_and_shape_errors():
    vae = vaekit.VAE(lambda_enc := _TupleEncoder(3), nn.Linear(2, 6), prior=StandardNormal(2))
    x = torch.rand(5, 6)
    with pytest.raises(ValueError, match=r"tuple \(mean, logvar\).*received a tuple of 3"):
        vaekit.ELBO()(vae, x)
    lambda_enc.n = 2
    lambda_enc.bad_shape = True
    with pytest.raises(ValueError, match=r"received mean \(5, 2\) and logvar \(5, 3\)"):
        vaekit.ELBO()(vae, x)


class _TupleEncoder(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin, self.n, self.bad_shape = nn.Linear(6, 2), n, False

    def forward(self, x):
        h = self.lin(x)
        if self.bad_shape:
            return h, torch.cat([h, h[:, :1]], 1)
        return (h,) * self.n


def test_tuple_equals_concatenated_tensor():
    enc, dec = _parts()
    x = torch.bernoulli(torch.rand(5, 6))
    split = vaekit.VAE(_Split(enc), dec, prior=StandardNormal(2))
    joined = vaekit.VAE(enc, dec, prior=StandardNormal(2))
    torch.manual_seed(1)
    a = vaekit.ELBO()(split, x).loss
    torch.manual_seed(1)
    b = vaekit.ELBO()(joined, x).loss
    assert a.item() == b.item()


class _Split(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x):
        return tuple(self.enc(x).chunk(2, -1))


def test_scale_posterior_equals_logvar_posterior():
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q_scale = DiagonalGaussian(param="scale")((mu, torch.exp(0.5 * logvar)))
    q_logvar = DiagonalGaussian()((mu, logvar))
    torch.testing.assert_close(q_scale.stddev, q_logvar.stddev)
    with pytest.raises(ValueError, match="scale .* must be > 0"):
        DiagonalGaussian(param="scale")((mu, logvar - 10))
    with pytest.raises(ValueError, match="param must be one of"):
        DiagonalGaussian(param="std")


@pytest.mark.parametrize(
    "decoder_end, likelihood, fix",
    [
        (nn.Sigmoid(), Bernoulli(), r"Bernoulli\(probs=True\) or remove the sigmoid"),
        (nn.Sigmoid(), ContinuousBernoulli(), "remove the sigmoid"),
        (nn.Softmax(dim=1), Categorical(3), r"Categorical\(3, probs=True\) or remove the softmax"),
    ],
)
def test_decoder_ending_in_an_activation_with_a_logits_likelihood(decoder_end, likelihood, fix):
    dec = nn.Sequential(nn.Linear(2, 6), nn.Sequential(nn.ReLU(), nn.Linear(6, 6), decoder_end))
    with pytest.raises(ValueError, match=fix):
        vaekit.VAE(nn.Linear(6, 4), dec, prior=StandardNormal(2), likelihood=likelihood)


def test_decoder_ending_in_sigmoid_with_probs_is_accepted():
    dec = nn.Sequential(nn.Linear(2, 6), nn.Sigmoid())
    vae = vaekit.VAE(
        nn.Linear(6, 4), dec, prior=StandardNormal(2), likelihood=Bernoulli(probs=True)
    )
    out = vaekit.ELBO()(vae, torch.bernoulli(torch.rand(3, 6)))
    assert torch.isfinite(out.loss)


def test_own_model_given_to_an_objective_names_the_fix():
    with pytest.raises(
        ValueError, match=r"has no samples=.*vaekit.VAE\(model.encode, model.decode"
    ):
        vaekit.ELBO()(ExampleVAE(), torch.rand(2, 784))


def test_plain_function_as_encoder_is_refused():
    with pytest.raises(ValueError, match="encoder must be an nn.Module or a method of one"):
        vaekit.VAE(lambda x: x, nn.Linear(2, 6), prior=StandardNormal(2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "probs must be stated for likelihood='bernoulli'"),
        ({"probs": True, "reduction": "avg"}, "reduction must be one of"),
        ({"probs": True, "beta": -1.0}, "beta must be >= 0"),
        ({"probs": True, "likelihood": "poisson"}, "likelihood must be one of"),
        ({"probs": True, "likelihood": "gaussian"}, "probs must be None or False"),
        ({"probs": True, "param": "std"}, "param must be one of"),
        ({"likelihood": "gaussian", "scale": 0.0}, "scale must be a positive"),
    ],
)
def test_classic_loss_misuse(kwargs, match):
    r, x = torch.rand(3, 784), torch.bernoulli(torch.rand(3, 1, 28, 28))
    mu, logvar = torch.randn(3, 2), torch.randn(3, 2)
    with pytest.raises(ValueError, match=match):
        vaekit.classic_loss(r, x, mu, logvar, **kwargs)


def test_classic_loss_shape_errors():
    r, x = torch.rand(3, 784), torch.rand(3, 1, 28, 28)
    mu = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"x must have recon_x's shape \(3, 784\)"):
        vaekit.classic_loss(r, x[:, :, :27], mu, mu, probs=True)
    with pytest.raises(ValueError, match=r"mu and logvar must both have shape \[B, Z\]"):
        vaekit.classic_loss(r, x, mu, mu[:, :1], probs=True)
    with pytest.raises(ValueError, match="mu must have recon_x's batch size 3"):
        vaekit.classic_loss(r, x, mu[:2], mu[:2], probs=True)
    with pytest.raises(ValueError, match=r"params must lie in \[0.0, 1.0\]"):
        vaekit.classic_loss(r * 3, x, mu, mu, probs=True)


def test_classic_gaussian_and_scale_param():
    r, x = torch.rand(3, 10), torch.rand(3, 10)
    mu, logvar = torch.randn(3, 2), torch.randn(3, 2)
    out = vaekit.classic_loss(r, x, mu, torch.exp(0.5 * logvar), likelihood="gaussian",
                              scale=0.5, param="scale", reduction="none")  # fmt: skip
    normal = torch.distributions.Normal(r, 0.5)
    torch.testing.assert_close(out.per_example["rec"], -normal.log_prob(x).sum(1))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(out.per_example["kl"], kl)
