"""Tests for vaekit.models.networks: shapes, leading axes, the gated formula, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaekit.models.networks import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    GatedDense,
    GatedMLP,
    build_networks,
)

KINDS = ["mlp", "gated", "conv"]
IMAGE_SHAPES = {"mnist_28": (1, 28, 28), "dsprites_64": (1, 64, 64), "rgb_64": (3, 64, 64)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", IMAGE_SHAPES.values(), ids=IMAGE_SHAPES.keys())
def test_build_networks_shapes(kind, shape):
    enc, dec = build_networks(kind, shape, latent_dim=6)
    assert enc(torch.rand(5, *shape)).shape == (5, 12)
    assert dec(torch.randn(5, 6)).shape == (5, *shape)


@pytest.mark.parametrize("kind", KINDS)
def test_leading_axes_match_a_flat_batch(kind):
    """[S, B, ...] inputs give the same numbers as the flattened [S * B, ...] batch."""
    shape = (1, 28, 28)
    enc, dec = build_networks(kind, shape, latent_dim=4)
    z = torch.randn(3, 5, 4)
    out = dec(z)
    assert out.shape == (3, 5, *shape)
    torch.testing.assert_close(out, dec(z.reshape(15, 4)).reshape(3, 5, *shape))
    x = torch.rand(2, 5, *shape)
    h = enc(x)
    assert h.shape == (2, 5, 8)
    torch.testing.assert_close(h, enc(x.reshape(10, *shape)).reshape(2, 5, 8))


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_out_shape_for_two_parameters_per_pixel(kind):
    enc, dec = build_networks(kind, (1, 28, 28), 3, decoder_out_shape=(2, 1, 28, 28))
    assert dec(torch.randn(4, 3)).shape == (4, 2, 1, 28, 28)
    assert dec(torch.randn(2, 4, 3)).shape == (2, 4, 2, 1, 28, 28)


@pytest.mark.parametrize(
    "shape",
    [(1, 28, 28), (1, 64, 64), (1, 27, 27), (3, 32, 48), (2, 9, 5)],
    ids=["28", "64", "odd_27", "rect_32x48", "tiny_9x5"],
)
def test_conv_decoder_matches_image_size_exactly(shape):
    dec = ConvDecoder(5, shape, channels=(8, 8))
    assert dec(torch.randn(2, 5)).shape == (2, *shape)
    enc = ConvEncoder(shape, 7, channels=(8, 8))
    assert enc(torch.rand(2, *shape)).shape == (2, 7)


def test_conv_out_channels_and_default_channels():
    assert ConvDecoder(4, (1, 28, 28), out_channels=2)(torch.randn(3, 4)).shape == (3, 2, 28, 28)
    convs = [m for m in ConvEncoder((1, 64, 64), 10).modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 32, 64, 64]
    convs = [m for m in ConvEncoder((1, 28, 28), 10).modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 64]


def test_conv_decoder_out_shape_moves_channels_last():
    """out_shape (1, H, W, K) equals the plain (K, H, W) output with its channels moved last."""
    plain = ConvDecoder(3, (1, 12, 12), out_channels=5, channels=(4,))
    last = ConvDecoder(3, (1, 12, 12), channels=(4,), out_shape=(1, 12, 12, 5))
    last.load_state_dict(plain.state_dict())
    z = torch.randn(2, 3)
    torch.testing.assert_close(last(z), plain(z).permute(0, 2, 3, 1).unsqueeze(1))


def test_gated_dense_equals_formula_from_its_weights():
    layer = GatedDense(7, 4).double()
    x = torch.randn(10, 7, dtype=torch.float64)
    w1, b1, w2, b2 = layer.h.weight, layer.h.bias, layer.g.weight, layer.g.bias
    expected = (x @ w1.T + b1) * (1.0 / (1.0 + torch.exp(-(x @ w2.T + b2))))
    torch.testing.assert_close(layer(x), expected)


def test_gated_mlp_is_the_vampprior_architecture():
    """784-300-300 gated layers then Linear(300, 80): count the parameters by hand."""
    net = GatedMLP((1, 28, 28), 80, (300, 300))
    gated = 2 * (784 * 300 + 300) + 2 * (300 * 300 + 300)
    assert sum(p.numel() for p in net.parameters()) == gated + 300 * 80 + 80
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 80)


def test_mlp_layers_and_activation():
    net = MLP(10, 3, (20, 30), activation="tanh")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 20), (20, 30), (30, 3)]
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 2
    x = torch.randn(4, 10)
    expected = linears[2](torch.tanh(linears[1](torch.tanh(linears[0](x)))))
    torch.testing.assert_close(net(x), expected)


def test_mlp_int_in_features_flattens_an_image_batch():
    net = MLP(784, 5, (16,))
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(net(x), net(x.reshape(4, 784)))


def test_mlp_out_shape_and_no_flatten():
    assert MLP(6, 12, (8,), out_shape=(3, 4))(torch.randn(2, 6)).shape == (2, 3, 4)
    assert MLP(6, 2, (), flatten_input=False)(torch.randn(5, 4, 6)).shape == (5, 4, 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 64, 64)], ids=["28", "64"])
def test_gradients_reach_every_parameter(kind, shape):
    enc, dec = build_networks(kind, shape, latent_dim=4, hidden=(32,) if kind != "conv" else None)
    h = enc(torch.rand(6, *shape))
    out = dec(h[:, :4])
    (out.square().mean() + h.square().mean()).backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MLP(4, 2, activation="rleu"), "did you mean 'relu'"),
        (lambda: build_networks("gated", (784,), 4, activation="tanh"), "gate"),
        (lambda: build_networks("cnn", (784,), 4), "kind must be one of"),
        (lambda: build_networks("mlp", (784,), 4, channels=(8,)), "conv"),
        (lambda: ConvEncoder((1, 4, 4), 3, channels=(8, 8, 8)), "too small"),
        (lambda: ConvEncoder((28, 28), 3), r"\(C, H, W\)"),
        (lambda: ConvDecoder(3, (28, 28)), r"\(C, H, W\)"),
        (lambda: ConvDecoder(3, (1, 28, 28), out_shape=(2, 784)), "adjacent"),
        (lambda: ConvDecoder(3, (1, 8, 8), 3, out_shape=(2, 8, 8)), "disagrees"),
        (lambda: MLP(4, 6, out_shape=(4, 2)), "must match"),
    ],
    ids=[
        "activation",
        "gated_activation",
        "kind",
        "channels",
        "small",
        "shape",
        "decoder_shape",
        "out_shape",
        "out_channels",
        "mlp_out_shape",
    ],
)
def test_bad_configuration_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_input_shape_names_expected_shape(kind):
    enc, dec = build_networks(kind, (1, 28, 28), 4)
    with pytest.raises(ValueError, match=r"\[\.\.\., 1, 28, 28\].*\(5, 1, 32, 32\)"):
        enc(torch.rand(5, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        dec(torch.rand(5, 3))
