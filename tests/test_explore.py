"""`vaekit explore`: the decoder program against PyTorch, and the page in headless Chromium.

The program is checked twice, independently: a NumPy interpreter written here from the op
definitions (the spec the page's JavaScript follows) against ``latent.decode``, and the page
itself in Chromium (skipped when it is not installed) against the same Python decoder.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from scipy.special import erf
from torch import nn

import vaekit
from tests.helpers.chromium import chromium_or_skip, page_pixels, run_page
from tests.helpers.cli import tiny_npz, train_flags
from vaekit import latent, likelihoods
from vaekit.cli import main
from vaekit.explore import compile_decoder, page_data, render
from vaekit.models.networks import build_networks
from vaekit.priors import StandardNormal


def _model(kind, shape, latent_dim=4, likelihood=None, activation=None, **kw):
    torch.manual_seed(0)
    likelihood = likelihood or likelihoods.Bernoulli()
    enc, dec = build_networks(
        kind, shape, latent_dim, decoder_out_shape=likelihood.param_shape(shape),
        activation=activation, **kw,
    )  # fmt: skip
    return vaekit.VAE(enc, dec, prior=StandardNormal(latent_dim), likelihood=likelihood).eval()


# ------------------------------------------------------------- a NumPy reference of the ops

_NP_ACT = {
    "relu": lambda v, op: np.maximum(v, 0),
    "tanh": lambda v, op: np.tanh(v),
    "sigmoid": lambda v, op: 1 / (1 + np.exp(-v)),
    "silu": lambda v, op: v / (1 + np.exp(-v)),
    "elu": lambda v, op: np.where(v > 0, v, op["alpha"] * np.expm1(v)),
    "leaky_relu": lambda v, op: np.where(v > 0, v, op["slope"] * v),
    "gelu": lambda v, op: 0.5 * v * (1 + erf(v / np.sqrt(2))),
    "softplus": lambda v, op: np.where(
        v * op["beta"] > op["threshold"], v, np.log1p(np.exp(op["beta"] * v)) / op["beta"]
    ),
}


def _np_linear(w, x, op):
    m = w[op["w"] : op["w"] + op["out"] * op["in"]].reshape(op["out"], op["in"])
    return m @ x + (w[op["b"] : op["b"] + op["out"]] if op["b"] >= 0 else 0)


def _np_conv_transpose(w, x, op):
    """out[co, iy*s - p + ky, ix*s - p + kx] += x[ci, iy, ix] * w[ci, co, ky, kx]."""
    k = w[op["w"] : op["w"] + op["cin"] * op["cout"] * op["kh"] * op["kw"]]
    k = k.reshape(op["cin"], op["cout"], op["kh"], op["kw"])
    full = np.zeros(
        (op["cout"], op["hout"] + 2 * op["ph"] + op["kh"], op["wout"] + 2 * op["pw"] + op["kw"])
    )
    for ky in range(op["kh"]):
        for kx in range(op["kw"]):
            contrib = np.einsum("ihw,io->ohw", x, k[:, :, ky, kx])
            ys = slice(ky, ky + op["sh"] * op["hin"], op["sh"])
            xs = slice(kx, kx + op["sw"] * op["win"], op["sw"])
            full[:, ys, xs] += contrib
    out = full[:, op["ph"] : op["ph"] + op["hout"], op["pw"] : op["pw"] + op["wout"]]
    return out + (w[op["b"] : op["b"] + op["cout"], None, None] if op["b"] >= 0 else 0)


def _np_decode(prog, z):
    w = prog["weights"].astype(np.float64)
    x = np.asarray(z, np.float64)
    for op in prog["ops"]:
        if op["op"] == "linear":
            x = _np_linear(w, x.reshape(-1), op)
        elif op["op"] == "gated":
            x = _np_linear(w, x.reshape(-1), op["h"]) / (
                1 + np.exp(-_np_linear(w, x.reshape(-1), op["g"]))
            )
        elif op["op"] == "convT":
            x = _np_conv_transpose(w, x.reshape(op["cin"], op["hin"], op["win"]), op)
        else:
            x = _NP_ACT[op["fn"]](x, op)
    head = prog["head"]
    v = x.reshape(-1)[: head["numel"]]
    if head["kind"] == "sigmoid":
        v = 1 / (1 + np.exp(-v))
    elif head["kind"] == "cb_mean":  # E[x] = lam / (2 lam - 1) + 1 / (2 atanh(1 - 2 lam))
        lam = 1 / (1 + np.exp(-v))
        d = lam - 0.5  # near lam = 1/2 its series, 1/2 + d/3 + 16 d^3/45
        with np.errstate(divide="ignore", invalid="ignore"):
            exact = lam / (2 * lam - 1) + 1 / (2 * np.arctanh(1 - 2 * lam))
        v = np.where(np.abs(d) < 1e-3, 0.5 + (1 / 3 + 16 / 45 * d**2) * d, exact)
    return np.clip((v - head["lo"]) / (head["hi"] - head["lo"]), 0, 1)


def _gaussian():
    return likelihoods.Gaussian(scale="learned")


CASES = {  # name: (network kind, input shape, likelihood, activation, network sizes)
    "mlp-relu-bernoulli": ("mlp", (12,), likelihoods.Bernoulli, "relu", {"hidden": (8, 6)}),
    "mlp-gelu-continuous-bernoulli": (
        "mlp", (10,), likelihoods.ContinuousBernoulli, "gelu", {"hidden": (7,)},
    ),
    "mlp-elu-gaussian-learned": ("mlp", (1, 3, 3), _gaussian, "elu", {"hidden": (5,)}),
    "mlp-tanh": ("mlp", (6,), likelihoods.Bernoulli, "tanh", {"hidden": (5, 4)}),
    "mlp-silu": ("mlp", (6,), likelihoods.Bernoulli, "silu", {"hidden": (5,)}),
    "mlp-sigmoid": ("mlp", (6,), likelihoods.Bernoulli, "sigmoid", {"hidden": (5,)}),
    "gated-laplace": ("gated", (9,), lambda: likelihoods.Laplace(0.1), None, {"hidden": (6,)}),
    "conv-odd-size": (
        "conv", (1, 14, 14), likelihoods.Bernoulli, "relu", {"channels": (3, 4), "hidden": (8,)},
    ),
    "conv-rgb-softplus-learned-scale": (
        "conv", (3, 8, 8), _gaussian, "softplus", {"channels": (2,), "hidden": (6,)},
    ),
    "conv-leaky-relu": (
        "conv", (1, 6, 6), likelihoods.Bernoulli, "leaky_relu", {"channels": (3,), "hidden": (5,)},
    ),
}  # fmt: skip


def _case(name: str) -> vaekit.VAE:
    kind, shape, likelihood, activation, sizes = CASES[name]
    return _model(kind, shape, likelihood=likelihood(), activation=activation, **sizes)


@pytest.mark.parametrize("case", list(CASES))
def test_program_matches_the_pytorch_decoder(case):
    model = _case(case)
    prog = compile_decoder(model)
    z = torch.randn(6, prog["latent_dim"]) * 2
    expected = latent.decode(model, z, unit=True).reshape(6, -1).double().numpy()
    ours = np.stack([_np_decode(prog, zi.numpy()) for zi in z])
    # torch's float32 continuous-Bernoulli mean loses ~4e-4 to cancellation next to
    # lam = 1/2 (a tenth of one 8-bit grey level); everything else agrees to float32 rounding
    atol = 1e-3 if "continuous" in case else 2e-5
    np.testing.assert_allclose(ours, expected, atol=atol)


def test_an_unsupported_layer_is_refused_by_name():
    model = _model("mlp", (6,), hidden=(4,))
    model.decoder.net[1] = nn.BatchNorm1d(4)
    with pytest.raises(ValueError, match=r"decoder layer decoder\.net\.1 \(BatchNorm1d\)"):
        compile_decoder(model)


def test_a_model_other_than_an_unconditional_vae_is_refused():
    from vaekit.config import ModelConfig
    from vaekit.models.build import build_model

    hvae = build_model(ModelConfig(model="hvae", hidden=(8,), latent_dim=2), (1, 4, 4), (16,))
    with pytest.raises(ValueError, match="unconditional vaekit VAE.*HVAE"):
        compile_decoder(hvae)


def test_an_unsupported_likelihood_is_refused_by_name():
    model = _model("mlp", (6,), likelihood=likelihoods.Categorical(bins=4), hidden=(4,))
    with pytest.raises(ValueError, match="likelihood Categorical"):
        compile_decoder(model)


def _sensitive(model):
    """Scale the decoder's weights so that a slider visibly moves an untrained decoder's image."""
    with torch.no_grad():
        for m in model.decoder.modules():
            if isinstance(m, nn.Linear | nn.ConvTranspose2d):
                m.weight *= 2.5
    return model


def _page(model, shape, n=10):
    x = (
        torch.rand(n, *model.encoder.in_shape)
        if hasattr(model.encoder, "in_shape")
        else torch.rand(n, *shape)
    )
    y = torch.arange(n) % 2
    masks = y[:, None] == torch.arange(2)
    data = page_data(model, x, x.reshape(n, -1), shape, masks, ["even", "odd"], n_images=n)
    return data, render(data)


def test_the_page_is_self_contained():
    model = _model("mlp", (1, 4, 4), hidden=(8,))
    data, page = _page(model, (1, 4, 4))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"https?:|\bsrc=|\bhref=|@import|url\(", page)
    assert len(data["codes"]) == 10 and set(data["attributes"]) == {"even", "odd"}


# ------------------------------------------------------------- the page in headless Chromium


@pytest.mark.parametrize(
    "case", ["mlp-relu-bernoulli-img", "conv-odd-size", "conv-rgb-softplus-learned-scale"]
)
def test_slider_changes_the_canvas_to_the_python_decoders_image(case, tmp_path):
    exe = chromium_or_skip()
    model = _model("mlp", (1, 4, 4), hidden=(8,)) if case.endswith("-img") else _case(case)
    model = _sensitive(model)
    shape = (1, 4, 4) if case.endswith("-img") else model.encoder.image_shape
    data, page = _page(model, shape)
    path = tmp_path / "explore.html"
    path.write_text(page)
    unit = data["units"][0]["unit"]
    out = run_page(exe, path, tmp_path / "profile", {"a": 2, "units": {str(unit): 3.0}})
    expected_z = np.array(data["codes"][2])
    expected_z[unit] += 3.0
    np.testing.assert_allclose(out["z"], expected_z, atol=1e-6)
    before, after = page_pixels(out["before"], shape), page_pixels(out["after"], shape)
    assert np.abs(after - before).max() >= 2  # the slider moved the picture
    reference = latent.decode(model, torch.tensor(expected_z, dtype=torch.float32), unit=True)
    np.testing.assert_allclose(after, (reference.reshape(shape).numpy() * 255).round(), atol=1.01)


def test_interpolation_and_attribute_sliders_in_chromium(tmp_path):
    exe = chromium_or_skip()
    model = _sensitive(
        _model("conv", (1, 6, 6), activation="leaky_relu", channels=(3,), hidden=(5,))
    )
    data, page = _page(model, (1, 6, 6))
    path = tmp_path / "explore.html"
    path.write_text(page)
    test = {"a": 1, "b": 4, "t": 0.4, "mode": "slerp", "attrs": {"odd": -1.5}}
    out = run_page(exe, path, tmp_path / "profile", test)
    z0, z1 = np.array(data["codes"][1]), np.array(data["codes"][4])
    omega = np.arccos(z0 @ z1 / np.linalg.norm(z0) / np.linalg.norm(z1))
    z = (np.sin(0.6 * omega) * z0 + np.sin(0.4 * omega) * z1) / np.sin(omega)
    z = z - 1.5 * np.array(data["attributes"]["odd"])
    np.testing.assert_allclose(out["z"], z, atol=1e-5)
    reference = latent.decode(model, torch.tensor(z, dtype=torch.float32), unit=True)
    np.testing.assert_allclose(
        page_pixels(out["after"], (1, 6, 6)), (reference.numpy() * 255).round(), atol=1.01
    )


# ------------------------------------------------------------- the ONNX / onnxruntime-web runtime


@pytest.mark.parametrize(
    "case", ["mlp-gelu-continuous-bernoulli", "conv-odd-size", "gated-laplace"]
)
def test_onnx_export_matches_pytorch_in_onnxruntime(case):
    ort = pytest.importorskip("onnxruntime")
    from vaekit.explore import _onnx_decoder

    model = _case(case)
    onnx_bytes, numel = _onnx_decoder(model)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    for z in torch.randn(4, 1, model.prior().event_shape[0]) * 2:
        (out,) = session.run(None, {"z": z.numpy()})
        expected = latent.decode(model, z, unit=True).reshape(1, -1).numpy()
        assert out.shape == (1, numel)
        # the continuous-Bernoulli mean cancels next to lam = 1/2: float32 logs of two
        # libraries differ there by ~1e-5 (a 300th of one 8-bit grey level)
        np.testing.assert_allclose(out, expected, atol=5e-5 if "continuous" in case else 1e-5)


def test_runtime_misuse_is_refused_before_loading_the_run(tmp_path):
    from vaekit.explore import explore_run

    with pytest.raises(ValueError, match="ort_dir must name onnxruntime-web's dist folder"):
        explore_run(tmp_path / "no-run", runtime="onnxruntime-web")
    with pytest.raises(ValueError, match="without ort.wasm.bundle.min.mjs"):
        explore_run(tmp_path / "no-run", runtime="onnxruntime-web", ort_dir=tmp_path)
    with pytest.raises(ValueError, match="ort_dir applies to runtime 'onnxruntime-web'"):
        explore_run(tmp_path / "no-run", ort_dir=tmp_path)
    with pytest.raises(ValueError, match="runtime"):
        explore_run(tmp_path / "no-run", runtime="onnx")


def test_onnxruntime_web_page_in_chromium(tmp_path):
    """Runs where onnxruntime-web is installed: VAEKIT_ORT_DIR=.../node_modules/onnxruntime-web."""
    import os

    ort_dir = os.environ.get("VAEKIT_ORT_DIR")
    if not ort_dir:
        pytest.skip("set VAEKIT_ORT_DIR to onnxruntime-web's folder (npm install onnxruntime-web)")
    exe = chromium_or_skip()
    model = _sensitive(_case("conv-odd-size"))
    x = torch.rand(4, 1, 14, 14)
    data = page_data(model, x, x.reshape(4, -1), (1, 14, 14), n_images=4, runtime="onnxruntime-web")
    path = tmp_path / "explore.html"
    path.write_text(render(data, ort_dir))
    unit = data["units"][0]["unit"]
    out = run_page(exe, path, tmp_path / "profile", {"a": 1, "units": {unit: 2.5}}, wait_ms=30000)
    z = np.array(data["codes"][1])
    z[unit] += 2.5
    np.testing.assert_allclose(out["z"], z, atol=1e-6)
    after = page_pixels(out["after"], (1, 14, 14))
    assert np.abs(after - page_pixels(out["before"], (1, 14, 14))).max() >= 2
    reference = latent.decode(model, torch.tensor(z, dtype=torch.float32), unit=True)
    np.testing.assert_allclose(after, (reference.numpy() * 255).round(), atol=1.01)


# ------------------------------------------------------------- the command


@pytest.fixture
def npz(tmp_path):
    return tiny_npz(tmp_path / "tiny.npz")


def test_vaekit_explore_writes_the_page_and_the_report_links_it(npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_flags(npz, run)) == 0
    assert "explore.html" not in (run / "report.html").read_text()
    assert main(["explore", str(run), "--images", "5"]) == 0
    page = (run / "explore.html").read_text()
    data = json.loads(re.search(r'id="vaekit-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["codes"]) == 5 and data["attributes"] == {}  # the .npz has no labels
    assert 'href="explore.html"' in (run / "report.html").read_text()
    assert main(["explore", str(run), "--images", "1"]) == 2
    assert "n_images must be >= 2" in capsys.readouterr().err

    from PIL import Image

    folder = tmp_path / "labelled"
    g = np.random.default_rng(0)
    for label in ("bright", "dark"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            a = g.integers(150, 256, (4, 4)) if label == "bright" else g.integers(0, 100, (4, 4))
            Image.fromarray(a.astype(np.uint8), mode="L").save(folder / label / f"{i}.png")
    out = tmp_path / "labelled.html"
    assert main(["explore", str(run), "--labels-from", str(folder), "--out", str(out)]) == 0
    data = json.loads(re.search(r'id="vaekit-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert set(data["attributes"]) == {"bright", "dark"}
    small = tmp_path / "small"
    for label in ("a", "b"):
        (small / label).mkdir(parents=True)
        Image.fromarray(np.zeros((3, 3), np.uint8), mode="L").save(small / label / "0.png")
    assert main(["explore", str(run), "--labels-from", str(small), "--out", str(out)]) == 2
    assert "images of the run's size (1, 4, 4); received 9 pixels" in capsys.readouterr().err
