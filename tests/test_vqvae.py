"""Tests for vaekit.models.vqvae: the objective by hand, training, the code prior, bits/dim."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vaekit import likelihoods as L
from vaekit.models.vqvae import (
    VQVAE,
    CodePrior,
    VQDecoder,
    VQEncoder,
    VQObjective,
    bits_per_dim,
    build_vqvae,
    encode_dataset,
    fit_code_prior,
)
from vaekit.objectives import LossOutput
from vaekit.quantizers import FSQ, VectorQuantizer

SHAPE = (1, 8, 8)


def _tiny(quantizer: str = "vq", num_codes: int = 8) -> VQVAE:
    """8x8 images -> 4x4 grid of codes of size 4."""
    enc = VQEncoder(SHAPE, 4, channels=(8,), res_blocks=1)
    dec = VQDecoder(SHAPE, 4, channels=(8,), res_blocks=1)
    if quantizer == "fsq":
        q = FSQ((3, 3, 2, 2))
    else:
        q = VectorQuantizer(num_codes, 4, ema=quantizer == "ema")
    return VQVAE(enc, dec, q, L.Bernoulli())


def _patterns(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(4, *SHAPE, generator=g) > 0.5).float().repeat(n // 4, 1, 1, 1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_objective_terms_by_hand(reduction):
    model = _tiny(num_codes=8).eval()
    x = _patterns(8)
    out = VQObjective(reduction=reduction)(model, x)
    assert isinstance(out, LossOutput)

    idx = model.encode(x)
    assert idx.shape == (8, 4, 4)
    logits = model.decoder(model.quantizer.indices_to_codes(idx))
    log_px = (x * logits - F.softplus(logits)).sum((1, 2, 3))
    n_latents, k = 16, 8
    pe = out.per_example
    torch.testing.assert_close(pe["rec"], -log_px)
    torch.testing.assert_close(pe["kl"], torch.full((8,), n_latents * math.log(k)))
    torch.testing.assert_close(pe["bound"], log_px - n_latents * math.log(k))
    torch.testing.assert_close(pe["loss"], pe["rec"] + pe["codebook"] + pe["commitment"])
    expected = {"mean": pe["loss"].mean(), "sum": pe["loss"].sum(), "none": pe["loss"]}[reduction]
    torch.testing.assert_close(out.loss, expected)
    assert {"perplexity", "usage", "elbo", "rec", "kl"} <= set(out.metrics)
    assert 1.0 <= out.metrics["perplexity"].item() <= k


def test_reconstruction_gives_the_codebook_no_gradient_but_the_encoder_some():
    model = _tiny()
    out = VQObjective(reduction="none")(model, _patterns(4))
    cb, enc = model.quantizer.codebook, list(model.encoder.parameters())
    g_cb = torch.autograd.grad(out.per_example["rec"].sum(), [cb, *enc], allow_unused=True)
    assert g_cb[0] is None or torch.count_nonzero(g_cb[0]) == 0
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in g_cb[1:])


@pytest.mark.parametrize(
    "quantizer, term",
    # a learned codebook's squared distances grow while the encoder spreads its outputs out
    # (the codebook follows at Adam's step size), so there the reconstruction term is watched
    [("vq", "rec"), ("ema", "loss"), ("fsq", "loss")],
)
def test_tiny_vqvae_trains(quantizer, term):
    model = _tiny(quantizer)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective, x = VQObjective(), _patterns(16)
    history = []
    for _ in range(60):
        out = objective(model, x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append(out.metrics[term].item())
    assert sum(history[-5:]) / 5 < 0.7 * sum(history[:5]) / 5
    assert out.metrics["perplexity"].item() > 1.5  # more than one code in use


@pytest.mark.parametrize(
    "shape, grid", [((1, 28, 28), (7, 7)), ((3, 64, 64), (8, 8))], ids=["28", "64"]
)
@pytest.mark.parametrize("quantizer", ["vq", "ema", "fsq"])
def test_build_vqvae_shapes(shape, grid, quantizer):
    lik = L.DiscretizedLogistic() if shape[0] == 3 else L.Bernoulli()
    model = build_vqvae(
        shape,
        lik,
        quantizer=quantizer,
        num_codes=256 if quantizer == "fsq" else 32,
        channels=(8, 8, 8)[: 2 + (shape[1] >= 64)],
    )
    x = torch.rand(2, *shape) * 2 - 1 if shape[0] == 3 else torch.rand(2, *shape).round()
    out = model(x)
    assert out.z_e.shape[2:] == grid and model.encode(x).shape == (2, *grid)
    assert model.reconstruct(x).shape == x.shape
    assert VQObjective()(model, x).per_example["bound"].shape == (2,)


def test_build_vqvae_rejects_inconsistent_options():
    with pytest.raises(ValueError, match="quantizer"):
        build_vqvae(SHAPE, quantizer="vqq")
    with pytest.raises(ValueError, match="num_codes"):
        build_vqvae((1, 28, 28), quantizer="fsq", num_codes=1000)
    with pytest.raises(ValueError, match="code_dim"):
        build_vqvae((1, 28, 28), quantizer="fsq", code_dim=64)
    with pytest.raises(ValueError, match="levels"):
        build_vqvae((1, 28, 28), quantizer="vq", levels=(8, 5))


# ----------------------------------------------------------------------------- code prior


def test_code_prior_normalises_over_all_sequences():
    prior = CodePrior(3, (2, 1), dim=8, heads=2)
    with torch.no_grad():  # a non-trivial distribution: random embeddings and head
        for p in prior.parameters():
            p.add_(torch.randn_like(p))
    grids = torch.tensor(list(itertools.product(range(3), repeat=2))).reshape(9, 2, 1)
    lp = prior.log_prob(grids)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-5)
    assert lp.std() > 0.1  # not uniform


def test_code_prior_is_causal():
    prior = CodePrior(5, (3, 3), dim=16, heads=2)
    k = torch.randint(5, (1, 3, 3))
    base = prior.logits(k)
    changed = k.clone()
    changed.view(-1)[4] = (changed.view(-1)[4] + 1) % 5
    other = prior.logits(changed)
    torch.testing.assert_close(base[:, :5], other[:, :5])  # positions <= 4 ignore k_4
    assert not torch.allclose(base[:, 5:], other[:, 5:])


def test_code_prior_sampling_shapes_and_fit():
    prior = CodePrior(4, (2, 3), dim=16, heads=2)
    s = prior.sample(5)
    assert s.shape == (5, 2, 3) and s.dtype == torch.long and 0 <= s.min() and s.max() < 4
    # codes where every grid is constant: an autoregressive prior learns to copy k_0
    data = torch.randint(4, (64, 1, 1)).expand(64, 2, 3).clone()
    history = fit_code_prior(prior, data, epochs=15, batch_size=16, lr=3e-3)
    assert history[-1] < 0.5 * history[0] and history[-1] < 6 * math.log(4) / 3
    assert prior.training  # mode restored
    prior.eval()
    fit_code_prior(prior, data, epochs=1)
    assert not prior.training
    with pytest.raises(ValueError, match="indices must have shape"):
        prior.log_prob(torch.zeros(2, 3, 2, dtype=torch.long))


def test_vqvae_sample_and_bits_per_dim_by_hand():
    model = _tiny(num_codes=8).eval()
    with pytest.raises(ValueError, match="prior"):
        model.sample(2)
    model.prior = CodePrior(8, (4, 4), dim=16, heads=2)
    assert model.sample(3).shape == (3, *SHAPE)

    x = _patterns(4)
    idx = encode_dataset(model, x, batch_size=3)
    torch.testing.assert_close(idx, model.encode(x))
    log_px = model.decode_indices(idx).log_prob(x)
    expected = (-model.prior.log_prob(idx) - log_px) / (64 * math.log(2))
    torch.testing.assert_close(bits_per_dim(model, None, x), expected)


def test_vqvae_state_dict_round_trip_weights_only():
    model = build_vqvae(
        (1, 28, 28), quantizer="ema", num_codes=16, code_dim=8, channels=(8, 8), restart_after=2
    )
    model.prior = CodePrior(16, (7, 7), dim=16, heads=2)
    model.train()
    VQObjective()(model, torch.rand(4, 1, 28, 28).round()).loss.backward()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_vqvae(
        (1, 28, 28), quantizer="ema", num_codes=16, code_dim=8, channels=(8, 8), restart_after=2
    )
    fresh.prior = CodePrior(16, (7, 7), dim=16, heads=2)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(3, 1, 28, 28).round()
    model.eval(), fresh.eval()
    assert torch.equal(model.encode(x), fresh.encode(x))
    torch.testing.assert_close(bits_per_dim(model, None, x), bits_per_dim(fresh, None, x))


def test_encode_does_not_update_quantizer_state():
    model = _tiny("ema").train()
    before = model.quantizer.codebook.clone()
    model.encode(_patterns(4))
    assert torch.equal(model.quantizer.codebook, before)
