"""`vaekit export` and `vaekit.load`: the exported model is the run's model (same ELBO on the
same batch and generator state, same weights as the checkpoint), the ONNX decoder matches
PyTorch under onnxruntime, and every refusal is a clear exit 2 / ValueError."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil

import numpy as np
import pytest
import torch
import yaml

import vaekit
from tests.helpers.cli import train_flags
from vaekit.cli import _overrides, _parser, main
from vaekit.config import config_from_dict, load_config
from vaekit.training.run import load_run, train


def _npz(path, labels: bool = False):
    g = np.random.default_rng(0)
    x = (g.random((150, 4, 4)) < 0.3).astype(np.float32)
    extra = {}
    if labels:
        y = g.integers(0, 3, 150)
        extra = {"train_labels": y[:90], "valid_labels": y[90:120], "test_labels": y[120:]}
    np.savez(path, train=x[:90], valid=x[90:120], test=x[120:], **extra)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    out = tmp / "run"
    assert main(train_flags(_npz(tmp / "tiny.npz"), out)) == 0  # evaluated: eval.json
    return out


def _batch(run_dir):
    _, cfg, splits = load_run(run_dir)
    return splits.test.eval_view().x.reshape(-1, 16), splits.test.eval_view().y


def _same_elbo(exported, original, x, y=None, kl="analytic"):
    def elbo(model):
        torch.manual_seed(3)  # the same draw of z for both models
        with model.given(y) if y is not None else contextlib.nullcontext():
            return vaekit.ELBO(kl=kl)(model, x).per_example["bound"]

    a, b = elbo(exported), elbo(original)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_export_folder_and_load_give_the_runs_elbo(run, tmp_path):
    out = tmp_path / "shared"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    model = vaekit.load(out)
    original, _, _ = load_run(run)
    x, _ = _batch(run)
    _same_elbo(model, original, x)
    # the weights are the best checkpoint's, read independently with torch.load
    state = torch.load(run / "best.pt", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # config.json: the run's resolved config (config.yaml), plus the export entry
    config = json.loads((out / "config.json").read_text())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert {k: config[k] for k in saved} == saved
    assert config["export"]["input_shape"] == [16]


def test_model_card_has_eval_numbers_with_units_and_the_recorded_command(run, tmp_path):
    out = tmp_path / "shared"
    assert main(["export", str(run), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    result = json.loads((run / "eval.json").read_text())
    assert f"| {result['nll']:.4f} | nats |" in card
    assert f"| {result['kl']:.4f} | nats |" in card
    assert f"| {result['bits_per_dim']:.4f} | bits |" in card
    recorded = json.loads((run / "command.json").read_text())[0]["argv"]
    assert recorded[0] == "train" and shlex.join(["vaekit", *recorded]) in card


def test_reconstructed_command_trains_the_same_config(run, tmp_path):
    copy = tmp_path / "old_run"
    shutil.copytree(run, copy)
    (copy / "command.json").unlink()  # a run from before commands were recorded
    out = tmp_path / "shared"
    assert main(["export", str(copy), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    line = next(ln for ln in card.splitlines() if ln.startswith("vaekit train "))
    args = _parser().parse_args(shlex.split(line)[1:])
    rebuilt = load_config(None, _overrides(args))
    assert rebuilt == config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))


def test_onnx_decoder_and_encoder_match_pytorch(run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    model = vaekit.load(out)
    z = torch.randn(33, 3, generator=torch.Generator().manual_seed(0))
    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    got = dec.run(None, {"z": z.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model.decoder(z).numpy(), atol=1e-5, rtol=0)
        x, _ = _batch(run)
        enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
        got = enc.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, model.encoder(x).numpy(), atol=1e-5, rtol=0)
    sums = json.loads((out / "config.json").read_text())["export"]["sha256"]
    assert set(sums) == {"model.safetensors", "decoder.onnx", "encoder.onnx"}


@pytest.mark.parametrize(
    "model, flags",
    [
        ("hvae", {"model": "hvae"}),
        ("cvae", {"model": "cvae"}),
        ("vamp", {"prior": "vamp", "components": 5, "pseudo_init": "data"}),
    ],
)
def test_other_kinds_export_and_load(tmp_path, model, flags):
    npz = _npz(tmp_path / "tiny.npz", labels=model == "cvae")
    run_dir = train(
        None, out=tmp_path / "run", progress=False, evaluate_after=False, dataset="file",
        data_root=str(npz), binarize="static", hidden=(16,), latent_dim=3, epochs=1,
        batch_size=30, tensorboard=False, **flags,
    )  # fmt: skip
    out = tmp_path / "shared"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    x, y = _batch(run_dir)
    original, _, _ = load_run(run_dir)
    kl = "analytic" if model == "cvae" else "mc"  # no closed form for hvae's / vamp's KL
    _same_elbo(vaekit.load(out), original, x, y if model == "cvae" else None, kl)
    card = (out / "README.md").read_text()  # the card shows the call that works for this kind
    assert ('ELBO(kl="mc")' in card) == (kl == "mc")
    assert ("model.given(y)" in card) == (model == "cvae")
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "o")]) == (
        0 if model == "vamp" else 2
    )


def test_refusals(run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty_run = tmp_path / "no_ckpt"
    empty_run.mkdir()
    shutil.copy(run / "config.yaml", empty_run / "config.yaml")
    assert main(["export", str(empty_run), "--out", str(tmp_path / "b")]) == 2
    assert "checkpoint" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_weights_are_refused(run, tmp_path, damage):
    out = tmp_path / "shared"
    assert main(["export", str(run), "--out", str(out)]) == 0
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01  # one bit of one weight: still a valid safetensors file
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        vaekit.load(out)
    with pytest.raises(FileNotFoundError, match="config.json"):
        vaekit.load(tmp_path)


def test_vqvae_exports_with_its_code_prior(tmp_path):
    from vaekit.models.build import build_objective

    g = np.random.default_rng(0)
    x = (g.random((120, 1, 8, 8)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "vq.npz", train=x[:80], valid=x[80:100], test=x[100:])
    run_dir = train(
        None, out=tmp_path / "run", progress=False, evaluate_after=False, dataset="file",
        data_root=str(tmp_path / "vq.npz"), binarize="static", model="vqvae", epochs=1,
        batch_size=20, tensorboard=False, prior_epochs=1, num_codes=8, code_dim=4,
    )  # fmt: skip
    out = tmp_path / "shared"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    exported = vaekit.load(out)
    original, cfg, splits = load_run(run_dir)
    xb = splits.test.eval_view().x.reshape(-1, 1, 8, 8)
    objective = build_objective(cfg.objective, model=cfg.model)  # the VQ-VAE's own loss
    torch.manual_seed(0)
    a = objective(exported, xb).per_example["bound"]
    torch.manual_seed(0)
    torch.testing.assert_close(a, objective(original, xb).per_example["bound"], rtol=0, atol=0)
    torch.manual_seed(1)  # samples through the autoregressive code prior
    a = exported.sample(3)
    torch.manual_seed(1)
    torch.testing.assert_close(a, original.sample(3), rtol=0, atol=0)


def test_onnx_without_its_extra_names_the_extra(run, tmp_path, monkeypatch, capsys):
    import sys

    from vaekit.export import export_run

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ImportError, match=r"vaekit\[onnx\]"):
        export_run(run, tmp_path / "a", format="onnx")
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "b")]) == 2
    assert "pip install 'vaekit[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
