"""The objective contract (issue 14): one base, one call, the registry's defaults and schedules,
refused flags, skipped NaN batches that change nothing, DDP state, and resume checks."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from tests.helpers.net import free_port
from vaekit import VAE, validation
from vaekit.cli import main
from vaekit.config import ModelConfig, RunConfig, load_config
from vaekit.data import from_tensor
from vaekit.likelihoods import Bernoulli, RunningGaussian
from vaekit.models.build import build_model, build_objective
from vaekit.objectives import (
    ELBO,
    GECO,
    OBJECTIVES,
    FactorVAE,
    Objective,
    PerceptualELBO,
    TripletELBO,
)
from vaekit.posteriors import DiagonalGaussian
from vaekit.priors import StandardNormal
from vaekit.schedules import LinearWarmup
from vaekit.training.trainer import Trainer

WORKER = Path(__file__).parent / "helpers" / "ddp_worker.py"


def _model(d_x: int = 12, d_z: int = 3, likelihood=None) -> VAE:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(d_x, 16), nn.Tanh(), nn.Linear(16, 2 * d_z))
    dec = nn.Sequential(nn.Linear(d_z, 16), nn.Tanh(), nn.Linear(16, d_x))
    return VAE(
        enc,
        dec,
        posterior=DiagonalGaussian(),
        prior=StandardNormal(d_z),
        likelihood=likelihood or Bernoulli(),
    )


def _x(n: int = 16, d: int = 12) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(1)).bernoulli()


# -- one kind of object, one call -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_registered_objective_is_one_kind_of_object_with_one_call(name):
    spec = OBJECTIVES[name]
    assert issubclass(spec.cls, Objective) and issubclass(spec.cls, nn.Module)
    params = inspect.signature(spec.cls.forward).parameters
    assert list(params)[:3] == ["self", "model", "x"]
    assert params["y"].kind is inspect.Parameter.KEYWORD_ONLY and params["y"].default is None
    assert params["step"].kind is inspect.Parameter.KEYWORD_ONLY and params["step"].default is None


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_registry_defaults_are_the_class_defaults(name):
    """What an unqualified flag gives is what the class documents (kl 'auto' aside)."""
    spec = OBJECTIVES[name]
    signature = inspect.signature(spec.cls.__init__).parameters
    for p in spec.params:
        if p.name == "kl":
            continue
        default = signature[p.argument].default
        if default is inspect.Parameter.empty:  # required by the class: required by the CLI
            assert p.name in spec.required
        else:
            assert p.default == default, (name, p.name)


@pytest.mark.parametrize(
    "objective, field, paper_default",
    [("beta_tcvae", "beta", 6.0), ("ciwae", "beta", 0.5), ("factor_vae", "gamma", 35.0)],
)
def test_an_unqualified_flag_trains_the_objectives_own_default(
    tiny_npz, tmp_path, objective, field, paper_default
):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out, "--objective", objective, "--epochs", "1") == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["objective"]
    assert saved[field] == paper_default
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert train and all(r[field] == pytest.approx(paper_default) for r in train)


def test_config_objective_section_holds_exactly_the_chosen_objectives_fields(tiny_npz, tmp_path):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out, "--objective", "iwae", "--k", "3", "--epochs", "1") == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())["objective"]
    assert saved == {"objective": "iwae", "k": 3, "estimator": "standard"}


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--objective", "iwae", "--beta", "2"], ["'iwae'", "'beta'", "k, estimator"]),
        (["--objective", "elbo", "--k", "5"], ["'elbo'", "'k'", "free_bits"]),
        (["--objective", "factor_vae", "--tolerance", "3"], ["'factor_vae'", "'tolerance'"]),
        (["--objective", "iwae", "--warmup-epochs", "3"], ["'iwae'", "'warmup_epochs'"]),
    ],
)
def test_a_flag_the_objective_does_not_use_exits_2_naming_it(
    tiny_npz, tmp_path, capsys, flags, named
):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out, *flags) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in named), err
    assert not out.exists()


def test_cli_help_lists_each_objective_with_its_fields_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name, spec in OBJECTIVES.items():
        assert f"  {name}: {spec.summary}" in text
    assert "--beta 6.0: weight of the total correlation TC" in text  # beta_tcvae's own beta


# -- schedules reach every objective that has the weight -----------------------------------------


def _schedule_objectives():
    features = nn.Sequential(nn.Linear(12, 5))
    return {
        "elbo": lambda beta: ELBO(beta=beta),
        "triplet": lambda beta: TripletELBO(weight=0.5, beta=beta),
        "perceptual": lambda beta: PerceptualELBO(features, weight=0.5, beta=beta),
    }


@pytest.mark.parametrize("name", ["elbo", "triplet", "perceptual"])
def test_a_warmup_schedule_reaches_the_kl_weight_of_every_objective_that_has_one(name):
    model, x = _model(), _x()
    y = torch.arange(16) % 3
    make = _schedule_objectives()[name]
    objective = make(LinearWarmup(2.0, steps=10))
    extra = {"elbo": None, "triplet": "triplet", "perceptual": "perceptual"}[name]
    for step, beta in [(0, 0.0), (5, 1.0), (10, 2.0), (40, 2.0), (None, 2.0)]:
        torch.manual_seed(3)
        out = objective(model, x, y=y, step=step)
        pe = out.per_example
        rest = 0.0 if extra is None else 0.5 * pe[extra]
        expected = (pe["rec"] + beta * pe["kl"] + rest).mean()
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
        assert out.metrics["beta"].item() == pytest.approx(beta)


def test_the_registry_builds_the_schedule_for_every_objective_that_declares_one():
    for name, spec in OBJECTIVES.items():
        if not spec.schedule:
            continue
        cfg = RunConfig().replace(objective=name, warmup_epochs=2.0)
        context = {"dataset_size": 100, "latent_dim": 3, "features": nn.Linear(12, 2)}
        objective = build_objective(cfg.objective, steps_per_epoch=5, epochs=4, **context)
        target = cfg.objective.values[spec.schedule]
        assert objective.weights_at(0)[spec.schedule] == 0.0, name
        assert objective.weights_at(5)[spec.schedule] == pytest.approx(target / 2), name
        assert objective.weights_at(None)[spec.schedule] == pytest.approx(target), name


# -- a skipped NaN batch changes nothing --------------------------------------------------------


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    flat = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    flat.update({f"objective.{k}": v for k, v in _tensors(trainer.objective.state_dict())})
    flat.update({f"optimizer.{k}": v for k, v in _tensors(trainer.optimizer.state_dict())})
    return {k: v.detach().clone() for k, v in flat.items()}


def _tensors(tree, prefix=""):
    if torch.is_tensor(tree):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _tensors(v, f"{prefix}{k}.")
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from _tensors(v, f"{prefix}{i}.")


def _skip_case(kind: str):
    cfg = RunConfig().replace(
        network="mlp", hidden=(16,), latent_dim=3, batch_size=8, on_nan="skip",
        tensorboard=False, binarize="none",
    )  # fmt: skip
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    splits = from_tensor(x.reshape(32, -1), binarize=None, image_shape=(1, 8, 8))
    torch.manual_seed(0)
    if kind == "geco":
        model = _model(64)
        objective = GECO(tolerance=30.0, alpha=0.5, lr=0.1)
    elif kind == "factor_vae":
        model = _model(64)
        objective = FactorVAE(3, hidden=8, layers=2)
    elif kind == "running_gaussian":
        model = _model(64, likelihood=RunningGaussian())
        objective = ELBO()
    else:  # an EMA quantizer
        cfg = cfg.replace(model="vqvae", quantizer="ema", num_codes=8, code_dim=4)
        model = build_model(cfg.model, (1, 8, 8), (64,))
        objective = build_objective(cfg.objective)
    shape = (1, 8, 8) if kind == "ema_quantizer" else (64,)
    trainer = Trainer(model, objective, splits, cfg, None, input_shape=shape, progress=False)
    return trainer, x.reshape(32, *shape)


@pytest.mark.parametrize("kind", ["geco", "factor_vae", "running_gaussian", "ema_quantizer"])
def test_a_skipped_nan_batch_leaves_every_parameter_buffer_and_optimizer_state_bit_identical(
    kind,
):
    trainer, x = _skip_case(kind)
    trainer.model.train(), trainer.objective.train()
    stack = contextlib.ExitStack()
    stack.enter_context(validation(False))  # as in Trainer.fit: no value checks in the loop
    sums: dict = {}
    for i in range(2):  # a few good steps first: Adam moments, moving averages exist
        trainer._step(x[8 * i : 8 * i + 8], None, sums)
    before = _state(trainer)
    poisoned = x[16:24].clone()
    poisoned[0] = float("nan")
    trainer._step(poisoned, None, sums)
    assert trainer.state.skipped_nan == 1 and trainer.state.step == 2
    after = _state(trainer)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]) or (
            before[k].isnan().all() and after[k].isnan().all()
        ), f"{kind}: {k} changed"
    trainer._step(x[24:32], None, sums)  # the next good batch trains as usual
    stack.close()
    assert trainer.state.step == 3
    assert all(torch.isfinite(v).all() for v in _state(trainer).values() if v.is_floating_point())


def test_the_nan_check_of_stop_mode_does_not_sync_the_host_each_step(monkeypatch):
    trainer, x = _skip_case("geco")
    trainer.tc = trainer.config.train.__class__(**{**vars(trainer.tc), "on_nan": "stop"})
    trainer.model.train()
    synced = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            synced.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    with validation(False):
        trainer._step(x[:8], None, {})
    monkeypatch.undo()
    assert synced == []


def test_a_per_example_loss_trains_and_its_nan_is_caught(tmp_path):
    """reduction='none': the step minimises the batch mean, and a NaN in one entry stops the run."""
    trainer, x = _skip_case("running_gaussian")
    trainer.objective = ELBO(reduction="none")
    trainer.model.train()
    trainer._step(x[:8], None, {})
    assert trainer.state.step == 1


# -- DDP: GECO's multiplier and a last batch smaller than the world --------------------------


def _torchrun(out: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(WORKER), str(out), *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_geco_multiplier_is_identical_across_two_gloo_ranks(tmp_path):
    _torchrun(tmp_path, "geco", "tolerance=5")
    r0, r1 = (torch.load(tmp_path / f"objective{r}.pt", weights_only=True) for r in (0, 1))
    assert int(r0["updates"]) > 0
    for name in ("lagrange", "constraint_ma", "updates"):
        assert torch.equal(r0[name], r1[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("n_train", [81, 83])
def test_a_last_batch_that_leaves_a_rank_an_empty_shard_trains_without_nan_or_hang(
    tmp_path, n_train
):
    _torchrun(tmp_path, "elbo", f"n_train={n_train}")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in r0:
        assert torch.isfinite(r0[name]).all(), name
        assert torch.equal(r0[name], r1[name]), name
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all(math.isfinite(r["elbo"]) for r in rows if r["split"] == "valid")


# -- resume: a changed trajectory field is refused ------------------------------------------


@pytest.fixture
def tiny_npz(tmp_path):
    g = np.random.default_rng(0)
    protos = g.random((3, 16))

    def make(n):
        y = g.integers(0, 3, n)
        return np.clip(protos[y] + 0.1 * g.normal(size=(n, 16)), 0, 1).astype(np.float32), y

    (tr, ytr), (va, yva), (te, yte) = make(60), make(20), make(20)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train=tr.reshape(-1, 4, 4),
        valid=va.reshape(-1, 4, 4),
        test=te.reshape(-1, 4, 4),
        train_labels=ytr,
        valid_labels=yva,
        test_labels=yte,
    )
    return path


def _cli(npz, out, *extra):
    flags = [
        "train", "--dataset", "file", "--data-root", str(npz), "--binarize", "static",
        "--hidden", "16", "--latent-dim", "3", "--epochs", "2", "--batch-size", "20",
        "--eval-samples", "4", "--no-tensorboard", "--quiet", "--no-eval", "--out", str(out),
        *extra,
    ]  # fmt: skip
    return main(flags)


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--batch-size", "10"], "batch_size"),
        (["--seed", "1"], "seed"),
        (["--lr", "0.01"], "lr"),
        (["--binarize", "dynamic"], "binarize"),
        (["--data-root", "OTHER"], "data_root"),
        (["--objective", "iwae"], "objective"),
        (["--beta", "2"], "beta"),
        (["--activation", "tanh"], "activation"),
        (["--schedule", "cyclical", "--epochs", "4"], "schedule"),
    ],
)
def test_resume_with_a_changed_trajectory_field_exits_2_naming_it(
    tiny_npz, tmp_path, capsys, flags, field
):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out) == 0
    other = tmp_path / "other.npz"
    other.write_bytes(tiny_npz.read_bytes())
    flags = [str(other) if f == "OTHER" else f for f in flags]
    before = (out / "checkpoint.pt").read_bytes()
    assert _cli(tiny_npz, out, "--resume", *flags) == 2
    err = capsys.readouterr().err
    assert f"changed {field}" in err or f"'{field}'" in err, err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_with_more_epochs_still_works(tiny_npz, tmp_path):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out) == 0
    assert _cli(tiny_npz, out, "--resume", "--epochs", "3") == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "train"] == [1, 2, 3]


# -- the model section: only what the chosen kind, prior and posterior read ---------------------


@pytest.mark.parametrize(
    "overrides, keys",
    [
        ({}, "model network hidden activation latent_dim prior posterior likelihood"),
        (
            {"prior": "vamp", "posterior": "iaf", "likelihood": "gaussian"},
            "model network hidden activation latent_dim prior components pseudo_init posterior "
            "iaf_steps likelihood scale",
        ),
        (
            {"network": "gated", "prior": "mog"},
            "model network hidden latent_dim prior components mog_weights posterior likelihood",
        ),  # fmt: skip
        (
            {"model": "hvae", "prior": "vamp"},
            "model network hidden latent_dim prior components pseudo_init likelihood",
        ),  # fmt: skip
        (
            {"model": "vqvae", "quantizer": "fsq"},
            "model quantizer num_codes code_dim commitment prior_epochs likelihood",
        ),  # fmt: skip
    ],
)
def test_the_model_section_holds_only_the_fields_the_model_reads(overrides, keys):
    cfg = RunConfig().replace(**overrides)
    assert list(cfg.to_dict()["model"]) == keys.split()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--quantizer", "ema"], "'quantizer'"),
        (["--iaf-steps", "3"], "'iaf_steps'"),
        (["--model", "hvae", "--posterior", "iaf"], "'posterior'"),
        (["--components", "5"], "'components'"),
    ],
)
def test_a_model_flag_the_model_does_not_read_exits_2_naming_it(
    tiny_npz, tmp_path, capsys, flags, named
):
    out = tmp_path / "run"
    assert _cli(tiny_npz, out, *flags) == 2
    err = capsys.readouterr().err
    assert named in err and "its fields are" in err, err
    assert not out.exists()


def test_a_run_folder_of_vaekit_0_1_still_loads(tmp_path):
    """0.1 wrote every model field and the 23-field objective union; both still read."""
    old = {
        "model": {f.name: getattr(RunConfig().model, f.name) for f in fields(ModelConfig)},
        "objective": {
            "objective": "beta_tcvae", "k": 1, "m": 1, "estimator": "standard", "samples": 1,
            "kl": "auto", "beta": 4.0, "warmup_epochs": 0.0, "free_bits": 0.0,
            "schedule": "warmup", "cycles": 4, "cycle_ratio": 0.5, "gamma": 0.0,
            "capacity": 25.0, "capacity_steps": 100000, "tc_estimator": "mss", "dip": "ii",
            "lambda_od": 10.0, "mmd_weight": 0.0, "kernel": "auto", "alpha": 0.0,
            "tolerance": 0.0, "margin": 1.0,
        },
        "train": {"epochs": 3},
    }  # fmt: skip
    old["model"]["hidden"] = list(old["model"]["hidden"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_config(path)
    # 0.1's gamma = 0 meant the paper's 1 for both MI and the dimension-wise KL
    assert cfg.objective.values == {
        "beta": 4.0, "alpha": 1.0, "gamma": 1.0, "tc_estimator": "mss",
        "schedule": "warmup", "warmup_epochs": 0.0, "cycles": 4, "cycle_ratio": 0.5,
    }  # fmt: skip
    assert cfg.train.epochs == 3 and "quantizer" not in cfg.to_dict()["model"]
