"""Trainer, config and CLI on tiny synthetic data: exact resume, NaN handling, run folders."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest
import torch
import yaml

from vaekit.cli import main
from vaekit.config import RunConfig, load_config
from vaekit.data import from_file, from_tensor
from vaekit.models.build import build_model, build_objective
from vaekit.objectives import Objective
from vaekit.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vaekit.training.trainer import Trainer, TrainingError, TrainingInterrupted

TINY = dict(
    network="mlp",
    hidden=(32,),
    latent_dim=4,
    epochs=3,
    batch_size=20,
    eval_samples=8,
    tensorboard=False,
    log_every=5,
)


def _data(n: int = 100, d: int = 16, seed: int = 0):
    g = np.random.default_rng(seed)
    protos = g.random((4, d))
    make = lambda m: np.clip(protos[g.integers(0, 4, m)] + 0.1 * g.normal(size=(m, d)), 0, 1)  # noqa: E731
    return make(n).astype(np.float32), make(40).astype(np.float32), make(40).astype(np.float32)


@pytest.fixture
def npz(tmp_path):
    train, valid, test = _data()
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train=train.reshape(-1, 4, 4),  # [N, H, W] images: the pictures get drawn too
        valid=valid.reshape(-1, 4, 4),
        test=test.reshape(-1, 4, 4),
        test_labels=np.arange(40) % 4,
    )
    return path


def _trainer(run_dir, binarize="dynamic", objective=None, **overrides):
    cfg = RunConfig().replace(**{**TINY, **overrides})
    train, valid, test = _data()
    splits = from_tensor(train, valid, test, binarize=binarize, seed=0, image_shape=(1, 4, 4))
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    objective = objective or build_objective(
        cfg.objective,
        cfg.model.prior,
        steps_per_epoch=math.ceil(len(train) / cfg.train.batch_size),
        epochs=cfg.train.epochs,
    )
    return Trainer(model, objective, splits, cfg, run_dir, progress=False), model


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def _assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_resume_after_epoch_equals_uninterrupted_run(tmp_path, binarize):
    full, model_full = _trainer(tmp_path / "full", binarize, epochs=3)
    full.fit()
    part, _ = _trainer(tmp_path / "part", binarize, epochs=1)
    part.fit()
    resumed, model_resumed = _trainer(tmp_path / "part", binarize, epochs=3)
    resumed.fit(resume=True)
    _assert_bitwise_equal(_params(model_full), _params(model_resumed))
    assert resumed.state.step == full.state.step == 15


def test_resume_mid_epoch_after_sigint_equals_uninterrupted_run(tmp_path, monkeypatch):
    full, model_full = _trainer(tmp_path / "full", warmup_epochs=2.0)
    full.fit()

    interrupted, _ = _trainer(tmp_path / "part", warmup_epochs=2.0)
    original = Trainer._step

    def step_then_signal(self, *args):
        original(self, *args)
        if self.state.step == 7:  # in the middle of epoch 2
            self._stop_signal = signal.SIGINT

    monkeypatch.setattr(Trainer, "_step", step_then_signal)
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.fit()
    assert info.value.step == 7 and info.value.path.exists()
    monkeypatch.setattr(Trainer, "_step", original)

    resumed, model_resumed = _trainer(tmp_path / "part", warmup_epochs=2.0)
    resumed.fit(resume=True)
    _assert_bitwise_equal(_params(model_full), _params(model_resumed))
    # the metrics log of the interrupted-then-resumed run has the same epoch rows
    rows = lambda p: [  # noqa: E731
        json.loads(line)
        for line in (p / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ]
    for a, b in zip(rows(tmp_path / "full"), rows(tmp_path / "part"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path, monkeypatch):
    trainer, model = _trainer(tmp_path / "run", epochs=2)
    trainer.fit()  # writes a good checkpoint
    good = _params(model)
    trainer2, _ = _trainer(tmp_path / "run", epochs=4)
    # resume from the good checkpoint (step 10), then poison the weights before the next step
    original = Trainer._step

    def poisoned(self, x, *args):
        with torch.no_grad():
            next(iter(self.model.decoder.parameters())).fill_(float("nan"))
        return original(self, x, *args)

    monkeypatch.setattr(Trainer, "_step", poisoned)
    with pytest.raises(TrainingError, match=r"step 10 .*checkpoint.pt"):
        trainer2.fit(resume=True)
    # the checkpoint on disk is still the good one
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    for a, b in zip(state["model"].values(), good, strict=True):
        assert torch.equal(a, b)


def test_on_nan_skip_counts_and_skips(tmp_path, monkeypatch):
    trainer, model = _trainer(tmp_path / "run", epochs=1, on_nan="skip")
    original_call = type(trainer.objective).__call__
    calls = {"n": 0}

    def sometimes_nan(self, model, x, **kw):
        out = original_call(self, model, x, **kw)
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            return type(out)(out.loss * float("nan"), out.per_example, out.metrics)
        return out

    monkeypatch.setattr(type(trainer.objective), "__call__", sometimes_nan)
    summary = trainer.fit()
    assert summary["skipped_nan_steps"] == 2 and summary["steps"] == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_early_stopping(tmp_path):
    trainer, _ = _trainer(tmp_path / "run", epochs=50, patience=1, lr=0.5)
    summary = trainer.fit()
    assert summary["stopped_early"] and summary["epochs"] < 50
    assert summary["best_epoch"] == summary["epochs"] - 1


def test_trainer_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="batch_size .*larger than the training set"):
        _trainer(tmp_path, batch_size=1000)


# -- config ------------------------------------------------------------------------------


def test_mog_weights_reach_the_prior():
    """--mog-weights uniform builds a prior with fixed log pi_k = -log K and no weight parameter."""
    for weights, learnable in (("uniform", False), ("learned", True)):
        cfg = RunConfig().replace(prior="mog", components=7, mog_weights=weights)
        prior = build_model(cfg.model, (1, 28, 28), (784,)).prior
        assert any(n == "logits" for n, _ in prior.named_parameters()) is learnable
        assert torch.allclose(prior().mixture_distribution.logits, torch.full((7,), -math.log(7)))


def test_config_yaml_nested_flat_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"latent_dim": 8}, "epochs": 7, "hidden": [64, 32]}))
    cfg = load_config(path, {"epochs": "9", "beta": "0.5"})
    assert cfg.model.latent_dim == 8 and cfg.model.hidden == (64, 32)
    assert cfg.train.epochs == 9 and cfg.objective.beta == 0.5


@pytest.mark.parametrize(
    "data, match",
    [
        ({"latnet_dim": 3}, "did you mean 'latent_dim'"),
        ({"model": {"epochs": 3}}, "belongs to 'train'"),
        ({"epochs": "many"}, "epochs"),
    ],
    ids=["typo", "wrong-section", "bad-type"],
)
def test_config_rejects_bad_keys(tmp_path, data, match):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_checkpoint_is_atomic_and_refuses_pickled_objects(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    torch.save({"model": {}, "evil": RunConfig()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "cut.pt")


# -- the command line --------------------------------------------------------------------


def _cli_train(npz, out, *extra):
    flags = [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--network", "mlp", "--hidden", "32", "--latent-dim", "3", "--epochs", "2",
        "--batch-size", "20", "--eval-samples", "16", "--no-tensorboard", "--quiet",
        "--out", str(out), *extra,
    ]  # fmt: skip
    return main(flags)


def test_cli_train_eval_sample_report(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_train(npz, out) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoint.pt",
        "best.pt",
        "eval.json",
        "report.html",
        "samples.png",
        "reconstructions.png",
        "loss_curves.png",
    ):
        assert (out / name).exists(), name
    result = json.loads((out / "eval.json").read_text())
    for key in ("nll", "elbo", "rec", "kl", "bits_per_dim", "active_units"):
        assert key in result
    # the IS estimate is a tighter bound than the ELBO: nll <= -elbo (up to MC noise)
    assert result["nll"] <= -result["elbo"] + 0.5
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (16 * np.log(2)))
    assert main(["eval", str(out), "--samples", "32", "--quiet"]) == 0
    assert json.loads((out / "eval.json").read_text())["samples"] == 32
    assert main(["sample", str(out), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 100
    assert main(["report", str(out)]) == 0
    # metrics that need ground-truth factors are refused for other data, with the reason
    assert main(["eval", str(out), "--samples", "2", "--metrics", "disentanglement"]) == 2
    assert "dsprites" in capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["latent_dim"] == 3 and saved["train"]["epochs"] == 2


def test_cli_resume_continues_and_rejects_other_architecture(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli_train(npz, out, "--no-eval") == 0
    assert (out / "report.html").exists() and not (out / "eval.json").exists()
    assert (
        main(["train", "--out", str(out), "--resume", "--epochs", "3", "--quiet", "--no-eval"]) == 0
    )
    epochs = [
        json.loads(line)["epoch"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "valid"
    ]
    assert epochs == [1, 2, 3]
    assert main(["train", "--out", str(out), "--resume", "--latent-dim", "5", "--quiet"]) == 2
    assert "different architecture" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prior", "vampp"], "did you mean 'vamp'"),
        (["--likelihood", "bernouli"], "did you mean 'bernoulli'"),
        (["--objective", "iwea"], "objective"),
        (["--beta", "-1"], "beta"),
        (["--k", "0", "--objective", "iwae"], "k must"),
        (["--latent-dim", "0"], "latent_dim"),
        (["--epochs", "two"], "epochs"),
        (["--prior", "mog", "--mog-weights", "uniformm"], "did you mean 'uniform'"),
    ],
    ids=["prior", "likelihood", "objective", "beta", "k", "latent", "epochs", "mog_weights"],
)
def test_cli_bad_flags_are_clear_errors(npz, tmp_path, capsys, flags, message):
    assert _cli_train(npz, tmp_path / "run", *flags) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_mnist_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "empty"))
    assert main(["train", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "vaekit data fetch mnist" in capsys.readouterr().err


def test_data_range_of_discretized_logistic(npz, tmp_path):
    # [0, 1] data are mapped onto the likelihood's [-1, 1] for training and evaluation
    out = tmp_path / "run"
    assert _cli_train(npz, out, "--likelihood", "discretized_logistic", "--binarize", "none") == 0
    result = json.loads((out / "eval.json").read_text())
    assert np.isfinite(result["nll"]) and result["nll"] > 0


def test_from_file_round_trip(npz):
    splits = from_file(npz)
    assert splits.train.x.shape == (100, 16) and splits.test.y.shape == (40,)
    assert splits.image_shape == (1, 4, 4)


def test_resume_rewrites_the_log_without_rows_past_the_checkpoint(tmp_path):
    part, _ = _trainer(tmp_path / "run", epochs=1)
    part.fit()
    log = tmp_path / "run" / "metrics.jsonl"
    with open(log, "a") as f:  # what a killed run leaves: rows past the checkpoint, a cut line
        f.write(json.dumps({"split": "train", "epoch": 2, "step": 9, "loss": 1.0}) + "\n")
        f.write('{"split": "step", "epo')
    resumed, _ = _trainer(tmp_path / "run", epochs=3)
    resumed.fit(resume=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]  # every line parses
    assert [r["epoch"] for r in rows if r["split"] == "train"] == [1, 2, 3]


def test_a_checkpoint_write_removes_temp_files_of_killed_writes(tmp_path):
    stale = tmp_path / ".ck.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint({"model": {}}, tmp_path / "ck.pt")
    assert not stale.exists() and (tmp_path / "ck.pt").exists()


# -- schedules from the config, and objectives that carry state ----------------------------


@pytest.mark.parametrize(
    "overrides, beta_at",
    [
        # 5 steps per epoch, 4 epochs = 20 steps; 2 cycles of 10, rising over the first 5
        (
            dict(schedule="cyclical", cycles=2, cycle_ratio=0.5, beta=2.0, epochs=4),
            lambda s: 2.0 * min(1.0, (s % 10) / 5),
        ),
        (dict(schedule="constant", beta=0.5, epochs=2), lambda s: 0.5),
        (
            dict(schedule="warmup", warmup_epochs=2.0, beta=1.0, epochs=2),
            lambda s: min(1.0, s / 10),
        ),
    ],
)
def test_the_config_schedule_drives_beta_at_every_step(tmp_path, monkeypatch, overrides, beta_at):
    seen = []
    cfg = RunConfig().replace(**{**TINY, **overrides})
    # the objective holds its schedule; its metrics report the beta it used at each step
    objective = build_objective(cfg.objective, steps_per_epoch=5, epochs=cfg.train.epochs)

    class Spy(Objective):
        def forward(self, model, x, *, y=None, step=None):
            out = objective(model, x, y=y, step=step)
            seen.append(out.metrics["beta"].item())
            return out

    trainer, _ = _trainer(tmp_path / "run", objective=Spy(), **overrides)
    trainer.fit()
    assert seen == pytest.approx([beta_at(s) for s in range(len(seen))])
    assert len(seen) == 5 * overrides["epochs"]


class _CountingELBO(Objective):
    """A stateful objective: counts training calls in a buffer, takes ``step``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.steps: list[int] = []

    def forward(self, model, x, *, y=None, step=None):
        from vaekit.objectives import ELBO

        if self.training and torch.is_grad_enabled():
            self.calls += 1
            self.steps.append(step)
        return ELBO()(model, x)


def test_stateful_objective_gets_the_step_and_its_state_resumes(tmp_path):
    def make(epochs):
        return _trainer(tmp_path / "run", objective=_CountingELBO(), epochs=epochs)

    first, _ = make(1)
    first.fit()
    assert first.objective.steps == list(range(5))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["objective"]["calls"] == 5
    resumed, _ = make(3)
    resumed.fit(resume=True)
    # 5 restored + 10 new training calls; validation (eval mode) never counted
    assert int(resumed.objective.calls) == 15
    assert resumed.objective.steps == list(range(5, 15))


@pytest.mark.parametrize(
    "flags, term",
    [
        (["--objective", "miwae", "--m", "2", "--k", "3"], "miwae"),
        (["--objective", "ciwae", "--beta", "0.5", "--k", "3"], "ciwae"),
        (["--objective", "piwae", "--m", "2", "--k", "3"], "piwae"),
        (["--objective", "beta_tcvae", "--beta", "6", "--tc-estimator", "mss"], "elbo"),
        (["--objective", "factor_vae", "--gamma", "10"], "disc_acc"),
        (["--objective", "dip_vae", "--dip", "i"], "dip_offdiag"),
        (["--objective", "capacity", "--capacity", "5", "--capacity-steps", "5"], "capacity"),
        (["--objective", "geco", "--tolerance", "8"], "lambda"),
        (["--objective", "info_vae", "--alpha", "0.5"], "elbo"),
        (["--objective", "wae", "--kernel", "rbf"], "elbo"),
        (["--schedule", "cyclical", "--cycles", "2", "--free-bits", "0.1"], "elbo"),
        (["--likelihood", "gaussian", "--scale", "running", "--binarize", "none"], "elbo"),
        (["--likelihood", "gaussian", "--scale", "optimal", "--binarize", "none"], "elbo"),
    ],
    ids=lambda v: v[1] if isinstance(v, list) else None,
)
def test_cli_trains_every_objective(npz, tmp_path, flags, term):
    out = tmp_path / "run"
    assert _cli_train(npz, out, *flags) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train_rows) == 2 and all(math.isfinite(r["loss"]) for r in train_rows)
    assert term in train_rows[-1]
    if term != "elbo":  # the objective's own terms get their own figure in the report
        assert (out / "terms_curves.png").exists()
        assert "terms_curves.png" in (out / "report.html").read_text()
    result = json.loads((out / "eval.json").read_text())
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 0.5
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["objective"]["objective"] == (flags[1] if flags[0] == "--objective" else "elbo")


def test_stateful_objective_resumes_through_the_cli(npz, tmp_path):
    # FactorVAE's discriminator and its Adam state travel in the checkpoint
    full, part = tmp_path / "full", tmp_path / "part"
    assert _cli_train(npz, full, "--objective", "factor_vae", "--epochs", "3", "--no-eval") == 0
    assert _cli_train(npz, part, "--objective", "factor_vae", "--epochs", "1", "--no-eval") == 0
    assert (
        _cli_train(npz, part, "--objective", "factor_vae", "--epochs", "3", "--no-eval", "--resume")
        == 0
    )
    a = load_checkpoint(full / "checkpoint.pt")
    b = load_checkpoint(part / "checkpoint.pt")
    for key in ("model", "objective"):
        for name, t in a[key].items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, b[key][name]), (key, name)


@pytest.fixture
def labelled_npz(tmp_path):
    """28x28 images of 3 classes (a bright block at a class-dependent place), with labels."""
    g = np.random.default_rng(0)

    def make(n):
        y = g.integers(0, 3, n)
        x = 0.05 * g.random((n, 28, 28))
        for i, c in enumerate(y):
            x[i, 4 + 8 * c : 10 + 8 * c, 6:22] = 0.95
        return x.astype(np.float32), y

    (tr, ytr), (va, yva), (te, yte) = make(120), make(40), make(40)
    path = tmp_path / "labelled.npz"
    np.savez(path, train=tr, valid=va, test=te, train_labels=ytr, valid_labels=yva, test_labels=yte)
    return path


def _cli_small(path, out, *extra):
    # the VQ-VAE has no dense networks and no latent_dim: those flags would be refused
    dense = [] if "vqvae" in extra else ["--hidden", "32", "--latent-dim", "3"]
    flags = [
        "train", "--dataset", "file", "--data-root", str(path), "--binarize", "static",
        *dense, "--epochs", "2", "--batch-size", "20",
        "--eval-samples", "8", "--no-tensorboard", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
    return main(flags)


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "hvae", "--network", "gated", "--prior", "vamp", "--components", "5"],
        ["--prior", "flow", "--flow-layers", "2"],
        ["--posterior", "iaf", "--iaf-steps", "2"],
    ],
    ids=["hvae", "flow-prior", "iaf"],
)
def test_cli_trains_and_evaluates_model_variants(labelled_npz, tmp_path, flags):
    out = tmp_path / "run"
    assert _cli_small(labelled_npz, out, *flags) == 0
    result = json.loads((out / "eval.json").read_text())
    # the importance-sampled estimate is the tighter bound (up to Monte Carlo noise)
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1.0
    assert (out / "samples.png").exists() and (out / "report.html").exists()
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0


def test_cli_cvae_trains_and_samples_by_label(labelled_npz, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--model", "cvae", "--conditional-prior", "--epochs", "25", "--lr", "0.003"]
    assert _cli_small(labelled_npz, out, *flags) == 0
    result = json.loads((out / "eval.json").read_text())
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1.0
    assert (
        main(["sample", str(out), "--n", "6", "--label", "2", "--out", str(tmp_path / "2.png")])
        == 0
    )
    capsys.readouterr()
    assert main(["sample", str(out), "--n", "6"]) == 2
    assert "--label" in capsys.readouterr().err
    assert main(["sample", str(out), "--n", "6", "--label", "3"]) == 2
    # the samples of a label put their mass where that class's block is (rows 4+8c..10+8c)
    from vaekit.training.run import load_run

    model, _, _ = load_run(out)
    torch.manual_seed(0)
    for c in range(3):
        img = model.sample(64, label=c).reshape(64, 28, 28).mean(0)
        bands = [img[4 + 8 * k : 10 + 8 * k, 6:22].mean() for k in range(3)]
        assert int(torch.stack(bands).argmax()) == c


def test_cli_vqvae_trains_fits_its_code_prior_and_samples(labelled_npz, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--model", "vqvae", "--num-codes", "16", "--code-dim", "8", "--prior-epochs", "2"]
    assert _cli_small(labelled_npz, out, *flags, "--restart-after", "5") == 0
    result = json.loads((out / "eval.json").read_text())
    for key in ("nll", "elbo", "rec", "kl", "bits_per_dim", "active_units", "perplexity", "mse"):
        assert key in result, key
    # the learned code prior beats the uniform one it replaces: 7 x 7 positions x log 16
    assert result["code_prior"] and 0 < result["kl"] < 49 * math.log(16)
    assert result["nll"] == pytest.approx(result["rec"] + result["kl"], rel=1e-5)
    assert 1 <= result["perplexity"] <= 16 and 1 <= result["codes_used"] <= 16
    for name in ("code_usage_hist.png", "reconstructions.png", "samples.png", "code_prior.pt"):
        assert (out / name).exists(), name
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "vq.png")]) == 0
    assert main(["eval", str(out)]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_time_limit_stops_mid_epoch_with_a_resumable_checkpoint(tmp_path, monkeypatch):
    full, model_full = _trainer(tmp_path / "full", epochs=2)
    full.fit()

    class Clock:  # every reading of the trainer's clock advances it by one second
        now = 0.0

        @classmethod
        def perf_counter(cls):
            cls.now += 1.0
            return cls.now

    import vaekit.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", Clock)
    # a 5-second budget runs out within the first epoch (5 steps)
    limited, _ = _trainer(tmp_path / "part", epochs=2, time_limit=5 / 60)
    summary = limited.fit()
    assert 0 < summary["steps"] < 5 and summary["epochs"] == 0 and summary["stopped_early"]
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert ckpt["progress"]["step"] == summary["steps"] == ckpt["progress"]["batch_in_epoch"]
    monkeypatch.undo()
    resumed, model_resumed = _trainer(tmp_path / "part", epochs=2)
    resumed.fit(resume=True)
    _assert_bitwise_equal(_params(model_full), _params(model_resumed))


def test_bf16_autocast_trains_networks_in_bfloat16_and_keeps_the_loss_in_float32(tmp_path):
    full, model_full = _trainer(tmp_path / "fp32", epochs=2)
    full.fit()
    half, model_half = _trainer(tmp_path / "bf16", epochs=2, precision="bf16")
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("decoder", output.dtype)  # returns None: the output is kept

    hook = model_half.decoder.register_forward_hook(record)
    summary = half.fit()
    hook.remove()
    assert seen["decoder"] == torch.bfloat16  # the networks ran in bfloat16
    assert all(p.dtype == torch.float32 for p in model_half.parameters())
    rows = lambda p: [  # noqa: E731
        json.loads(line)
        for line in (p / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ]
    a, b = rows(tmp_path / "fp32")[-1]["loss"], rows(tmp_path / "bf16")[-1]["loss"]
    # bfloat16 has 8 bits of mantissa: the same run, within a few percent
    assert math.isfinite(b) and abs(a - b) < 0.05 * abs(a)
    assert math.isfinite(summary["best_valid_elbo"])


@pytest.mark.parametrize("name, term", [("triplet", "triplet"), ("perceptual", "perceptual")])
def test_cli_trains_the_label_and_feature_objectives(labelled_npz, tmp_path, name, term):
    out = tmp_path / "run"
    assert _cli_small(labelled_npz, out, "--objective", name, "--gamma", "0.5") == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert all(math.isfinite(r[term]) and r[term] >= 0 for r in train_rows)
    result = json.loads((out / "eval.json").read_text())
    assert math.isfinite(result["nll"])
