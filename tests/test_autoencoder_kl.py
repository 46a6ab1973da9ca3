"""The latent-diffusion autoencoder loss and VQGAN: hand computations of each piece (adaptive
weight vs autograd norms, hinge / BCE discriminator losses, the learned variance's optimum),
the discriminator switched off before disc_start, skip-mode restore and exact resume."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from tests.helpers.net import free_port
from vaekit.cli import main
from vaekit.config import RunConfig
from vaekit.models.autoencoders import AutoencoderKL, SharedScaleLaplace, last_layer
from vaekit.models.build import build_model, build_objective
from vaekit.objectives.adversarial import (
    AutoencoderKLLoss,
    PatchDiscriminator,
    adaptive_weight,
    hinge_d_loss,
    vanilla_d_loss,
)
from vaekit.training.checkpoint import load_checkpoint

TINY = dict(downsample=2, latent_channels=2, channels=4)
DISC = dict(disc_channels=4, disc_layers=1)


def _model(c: int = 1, size: int = 8) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL((c, size, size), **TINY)


def _objective(**kw) -> AutoencoderKLLoss:
    torch.manual_seed(1)
    return AutoencoderKLLoss(image_channels=kw.pop("image_channels", 1), **{**DISC, **kw})


def test_hinge_and_vanilla_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.3])
    # relu(1 - real) = 0, 0.5, 2; relu(1 + fake) = 0, 1.3
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.3 / 2))
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want = 0.5 * ((sp(-2.0) + sp(-0.5) + sp(1.0)) / 3 + (sp(-2.0) + sp(0.3)) / 2)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(want)


def test_adaptive_weight_by_hand_on_a_linear_last_layer():
    """nll = ||W a - t||^2 and g = -v.(W a): gradients 2 (W a - t) a^T and -v a^T."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    a, t, v = (torch.randn(n, generator=g, dtype=torch.float64) for n in (4, 3, 3))
    nll = (w @ a - t).square().sum()
    gen = -(v * (w @ a)).sum()
    lam = adaptive_weight(nll, gen, w)
    r = (w.detach() @ a - t).numpy()
    n_nll = np.linalg.norm(2 * np.outer(r, a.numpy()))
    n_g = np.linalg.norm(np.outer(v.numpy(), a.numpy()))
    assert lam.item() == pytest.approx(n_nll / (n_g + 1e-4), rel=1e-12)
    assert not lam.requires_grad
    # clamped to [0, 1e4]: a generator term with almost no gradient
    assert adaptive_weight(nll, 1e-12 * gen, w).item() == 1e4


def test_objective_adaptive_weight_equals_autograd_norms_on_its_decoder():
    model, obj = _model(), _objective(disc_start=0, perceptual_weight=0.5)
    with torch.no_grad():  # a discriminator whose gradient is not negligible (no clamping)
        for p in obj.discriminator.parameters():
            p.mul_(50)
    ref_disc = copy.deepcopy(obj.discriminator)
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(7)
    out = obj(model, x, step=0)
    # the same pass by hand: same noise, the discriminator from before its step
    torch.manual_seed(7)
    vo = model(x)
    xrec = vo.likelihood.mean[0]
    d = x[0].numel()
    p = obj.perceptual(x, xrec)
    s = model.likelihood.logvar
    nll = ((x - xrec).abs().flatten(1).sum(1) + 0.5 * d * p) / s.exp() + d * s
    gen = -ref_disc(xrec).flatten(1).mean(1)
    last = model.decoder[-1][-1].weight  # the final conv of the decoder
    assert last is last_layer(model.decoder)
    gn = torch.autograd.grad(nll.mean(), last, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(gen.mean(), last, retain_graph=True)[0].norm()
    want = (gn / (gg + 1e-4)).item()
    assert 0 < want < 1e4
    assert out.metrics["adaptive_weight"].item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(out.per_example["nll"], nll)
    torch.testing.assert_close(out.per_example["g_loss"], gen)
    kl = out.per_example["kl"]
    expected = nll + 1e-6 * kl + want * 0.5 * gen
    torch.testing.assert_close(out.per_example["loss"], expected, rtol=1e-5, atol=1e-4)


def test_no_gradient_reaches_the_discriminator_before_disc_start():
    model, obj = _model(), _objective(disc_start=3, perceptual_weight=0.0)
    before = copy.deepcopy(obj.discriminator.state_dict())
    x = torch.rand(4, 1, 8, 8)
    for step in range(3):
        out = obj(model, x, step=step)
        out.loss.backward()
        assert out.metrics["disc_active"] == 0 and out.metrics["adaptive_weight"] == 0
        assert torch.equal(out.per_example["g_loss"], torch.zeros(4))
    assert all(p.grad is None for p in obj.discriminator.parameters())
    assert not obj.optimizer.state  # never stepped
    for k, v in obj.discriminator.state_dict().items():
        assert torch.equal(v, before[k])
    out = obj(model, x, step=3)  # from disc_start on: one Adam step per call
    out.loss.backward()
    assert out.metrics["disc_active"] == 1 and out.metrics["adaptive_weight"] > 0
    # the autoencoder's backward still leaves the discriminator alone (a frozen copy)
    assert all(p.grad is None for p in obj.discriminator.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in obj.discriminator.state_dict().items())


@pytest.mark.parametrize("kind", ["hinge", "vanilla"])
def test_discriminator_step_is_one_adam_step_on_the_hand_loss(kind):
    model, obj = _model(), _objective(disc_start=0, perceptual_weight=0.0, disc_loss=kind)
    ref = copy.deepcopy(obj.discriminator)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-4, betas=(0.5, 0.9))
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(3)
    obj(model, x, step=0)
    torch.manual_seed(3)
    xrec = model(x).likelihood.mean[0].detach()
    fn = hinge_d_loss if kind == "hinge" else vanilla_d_loss
    fn(ref(x), ref(xrec)).backward()
    opt.step()
    for a, b in zip(obj.discriminator.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_learned_log_variance_reaches_log_of_mean_reconstruction_error():
    """Only s trains, on a fixed reconstruction: argmin_s mean_b(R_b / e^s + D s) = log(mean R / D)."""
    model, obj = _model(), _objective(perceptual_weight=0.0, kl_weight=0.0)
    x = torch.rand(6, 1, 8, 8)
    opt = torch.optim.Adam([model.likelihood.logvar], lr=0.05)
    for _ in range(600):
        torch.manual_seed(0)  # the same draw of z every time: a fixed reconstruction
        opt.zero_grad()
        obj(model, x, step=0).loss.backward()
        opt.step()
    torch.manual_seed(0)
    with torch.no_grad():
        xrec = model(x).likelihood.mean[0]
    mean_rec = (x - xrec).abs().mean().item()  # per pixel, over the batch
    assert model.likelihood.logvar.item() == pytest.approx(math.log(mean_rec), abs=1e-3)


def test_rec_is_the_laplace_nll_and_ldm_nll_differs_by_d_log_2():
    model, obj = _model(), _objective(perceptual_weight=0.0)
    with torch.no_grad():
        model.likelihood.logvar.fill_(-1.3)
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(0)
    out = obj(model, x, step=0)
    torch.manual_seed(0)
    xrec = model(x).likelihood.mean[0]
    b = math.exp(-1.3)
    laplace = torch.distributions.Laplace(xrec, b).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(out.per_example["rec"], -laplace)
    torch.testing.assert_close(out.per_example["nll"], -laplace - 64 * math.log(2))


def test_random_perceptual_distance_is_zero_on_equal_images_and_deterministic():
    from vaekit.models.perceptual import RandomConvFeatures

    x = torch.rand(2, 3, 16, 16)
    a, b = RandomConvFeatures(3), RandomConvFeatures(3)
    assert torch.equal(a(x, x), torch.zeros(2))
    y = x + 0.1 * torch.randn_like(x)
    torch.testing.assert_close(a(x, y), b(x, y))  # the same weights on every machine
    assert (a(x, y) > 0).all() and (a(x, y) <= 4).all()


def test_lpips_wiring_with_a_random_backbone_stand_in():
    """The lpips package is not installed here: the wrapper is checked with a stand-in module
    of random weights (inputs mapped to [-1, 1], gray repeated to RGB, [B] out)."""
    from vaekit.models.perceptual import LPIPSDistance

    seen = {}

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, a, b):
            seen["range"] = (float(a.min()), float(a.max()), a.shape[1])
            return (self.conv(a) - self.conv(b)).square().mean((1, 2, 3), keepdim=True)

    dist = LPIPSDistance(module=StandIn())
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, :4] = 1.0
    out = dist(x, torch.rand(2, 1, 8, 8))
    assert out.shape == (2,) and seen["range"] == (-1.0, 1.0, 3)
    assert not any(p.requires_grad for p in dist.parameters())
    try:
        import lpips  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="lpips"):
            LPIPSDistance()


def _tensors(tree, prefix: str, out: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a nested state (dicts, lists) under a dotted key, copied."""
    if torch.is_tensor(tree):
        out[prefix] = tree.detach().clone()
    elif isinstance(tree, dict):
        for k, v in tree.items():
            _tensors(v, f"{prefix}.{k}", out)
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            _tensors(v, f"{prefix}.{i}", out)
    return out


def _flat_state(trainer) -> dict[str, torch.Tensor]:
    out: dict = {}
    for name in ("model", "objective", "optimizer"):
        _tensors(getattr(trainer, name).state_dict(), name, out)
    return out


def test_a_skipped_nan_batch_restores_the_discriminator_and_its_adam_state():
    from vaekit._checks import validation
    from vaekit.data import from_tensor
    from vaekit.training.trainer import Trainer

    cfg = RunConfig().replace(
        model="autoencoder_kl", objective="autoencoder_kl", disc_start=0, on_nan="skip",
        batch_size=4, epochs=1, tensorboard=False, binarize="none", **TINY, **DISC,
    )  # fmt: skip
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    splits = from_tensor(x.reshape(16, -1), binarize=None, image_shape=(1, 8, 8))
    torch.manual_seed(0)
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    obj = build_objective(cfg.objective, model=cfg.model, image_channels=1)
    trainer = Trainer(model, obj, splits, cfg, None, input_shape=(1, 8, 8), progress=False)
    sums: dict = {}
    with validation(False):
        for i in range(2):  # Adam moments of both optimizers exist
            trainer._step(x[4 * i : 4 * i + 4], None, sums)
        before = _flat_state(trainer)
        assert any(k.startswith("objective._extra_state.optimizer.state") for k in before)
        poisoned = x[8:12].clone()
        poisoned[0] = float("nan")
        trainer._step(poisoned, None, sums)  # the discriminator stepped on NaN, then restored
        assert trainer.state.skipped_nan == 1 and trainer.state.step == 2
        after = _flat_state(trainer)
        assert before.keys() == after.keys()
        for k in before:
            assert torch.equal(before[k], after[k]), k
        trainer._step(x[12:16], None, sums)
    assert trainer.state.step == 3


@pytest.fixture
def gray_npz(tmp_path):
    g = np.random.default_rng(0)
    path = tmp_path / "gray.npz"
    np.savez(path, **{k: g.random((n, 12, 12)).astype(np.float32) for k, n in
                      (("train", 40), ("valid", 12), ("test", 12))})  # fmt: skip
    return path


def _train(npz, out, *extra):
    return main([
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "none",
        "--model", "autoencoder_kl", "--downsample", "2", "--latent-channels", "2",
        "--channels", "4", "--disc-channels", "4", "--disc-layers", "1", "--disc-start", "3",
        "--batch-size", "10", "--eval-samples", "2", "--no-tensorboard", "--quiet",
        "--out", str(out), *extra,
    ])  # fmt: skip


def test_resume_is_bit_exact_with_the_discriminator_and_its_optimizer(gray_npz, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(gray_npz, full, "--epochs", "3", "--no-eval") == 0
    assert _train(gray_npz, part, "--epochs", "1", "--no-eval") == 0
    assert _train(gray_npz, part, "--epochs", "3", "--no-eval", "--resume") == 0
    a, b = load_checkpoint(full / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    assert any(k.startswith("discriminator.") for k in a["objective"])
    assert a["objective"]["_extra_state"]["optimizer"]["state"]  # the discriminator stepped
    for key in ("model", "objective"):
        for name, t in a[key].items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, b[key][name]), (key, name)
    sa = a["objective"]["_extra_state"]["optimizer"]["state"]
    sb = b["objective"]["_extra_state"]["optimizer"]["state"]
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][k], sb[i][k])


def test_flags_and_misuse(gray_npz, tmp_path, capsys):
    cfg = RunConfig().replace(model="autoencoder_kl", objective="autoencoder_kl")
    assert cfg.objective.kl_weight == 1e-6 and cfg.objective.disc_loss == "hinge"
    assert "likelihood" not in cfg.to_dict()["model"]  # its own likelihood
    with pytest.raises(ValueError, match="disc_loss"):
        RunConfig().replace(model="autoencoder_kl", objective="autoencoder_kl", disc_loss="wgan")
    with pytest.raises(ValueError, match="downsample"):
        RunConfig().replace(model="autoencoder_kl", downsample=3)
    with pytest.raises(ValueError, match=r"images \[B, C, H, W\]"):
        _objective()(_model(), torch.rand(2, 64))
    with pytest.raises(ValueError, match="trains model autoencoder_kl"):
        RunConfig().replace(model="vae", objective="autoencoder_kl")
    assert _train(gray_npz, tmp_path / "bad", "--kl-weight", "-1") == 2
    assert "kl_weight" in capsys.readouterr().err


def test_vqgan_trains_with_any_quantizer_through_the_loss():
    for quantizer in ("ema", "residual", "lfq", "fsq"):
        cfg = RunConfig().replace(
            model="vqgan", objective="vqgan", quantizer=quantizer, disc_start=0,
            num_codes=16 if quantizer != "fsq" else 256, downsample=2, channels=4, **DISC,
        )  # fmt: skip
        model = build_model(cfg.model, (1, 8, 8))
        obj = build_objective(cfg.objective, model=cfg.model, image_channels=1)
        out = obj(model, torch.rand(4, 1, 8, 8), step=0)
        out.loss.backward()
        q = model(torch.rand(1, 1, 8, 8)).quantized
        reg = out.per_example["codebook"] + out.per_example["commitment"]
        assert torch.isfinite(out.loss) and "perplexity" in out.metrics
        hand = (
            out.per_example["nll"]
            + reg
            + 0.5 * out.metrics["adaptive_weight"] * (out.per_example["g_loss"])
        )
        torch.testing.assert_close(out.per_example["loss"], hand, rtol=1e-5, atol=1e-3)
        assert q.z_q.shape[0] == 1
        assert isinstance(model.likelihood, SharedScaleLaplace)
        assert model.decoder.net[-1].weight is last_layer(model.decoder)


def test_generator_term_uses_the_discriminator_from_before_its_step():
    model, obj = _model(), _objective(disc_start=0, perceptual_weight=0.0)
    before = {k: v.clone() for k, v in obj.discriminator.named_parameters()}
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(2)
    out = obj(model, x, step=0)
    torch.manual_seed(2)
    xrec = model(x).likelihood.mean[0]
    want = -functional_call(PatchDiscriminator(1, 4, 1), before, (xrec,)).flatten(1).mean(1)
    torch.testing.assert_close(out.per_example["g_loss"], want)


def test_eval_json_has_psnr_and_ssim_and_the_report_has_the_terms(gray_npz, tmp_path):
    import json

    out = tmp_path / "run"
    assert _train(gray_npz, out, "--epochs", "1", "--log-every", "1") == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["psnr"] > 0 and 0 < result["ssim"] <= 1 and result["image_data_range"] == 1.0
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert {"rec_px", "nll", "logvar", "kl", "perceptual"} <= set(train[-1])


@pytest.mark.slow
def test_two_ddp_ranks_keep_one_model_and_one_discriminator(tmp_path):
    """gloo, 2 ranks on CPU: the discriminator (outside the DDP-wrapped model) starts from
    rank 0's weights and steps with the averaged gradient; the model is DDP's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "helpers" / "ddp_akl_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(worker), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [
        _tensors(torch.load(tmp_path / f"objective{r}.pt", weights_only=True), "objective",
                 _tensors(torch.load(tmp_path / f"rank{r}.pt", weights_only=True), "model", {}))
        for r in (0, 1)
    ]  # fmt: skip
    assert ranks[0].keys() == ranks[1].keys()
    assert any(".optimizer.state." in k for k in ranks[0]), "the discriminator took Adam steps"
    different = [k for k in ranks[0] if not torch.equal(ranks[0][k], ranks[1][k])]
    assert not different, f"the ranks differ in {different}"
