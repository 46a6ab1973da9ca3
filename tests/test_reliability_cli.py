"""Second-round reliability of the CLI and the checkpoint loader (issue 15): clear one-line
errors, no traceback, no huge values echoed, diverged runs reported as failures."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch

from tests.helpers.cli import train_flags
from vaekit.cli import main
from vaekit.objectives import ELBO
from vaekit.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture
def npz(tmp_path):
    g = np.random.default_rng(0)
    x = g.random((100, 4, 4)).astype(np.float32)
    path = tmp_path / "tiny.npz"
    np.savez(path, train=x[:60], valid=x[60:80], test=x[80:])
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("vaekit: error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--warmup-epochs", "inf"], r"warmup_epochs.*finite number; received inf"),
        (["--beta", "inf"], r"beta.*finite number; received inf"),
        (["--beta", "nan"], r"beta.*finite number; received nan"),
        (["--objective", "iwae", "--k", "2.5"], r"'k' expects int"),
    ],
)
def test_non_finite_and_wrong_type_flags_are_refused_before_training(
    npz, tmp_path, capsys, flags, pattern
):
    out = tmp_path / "run"
    assert main(train_flags(npz, out, *flags)) == 2
    assert re.search(pattern, _one_line_error(capsys))
    assert not out.exists()


def test_a_yaml_alias_bomb_gives_a_short_error(npz, tmp_path, capsys):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 9**9 ~ 3.9e8 values once expanded
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        levels.append(f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    levels.append("epochs: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    assert main(train_flags(npz, tmp_path / "run", "--config", str(bomb))) == 2
    err = _one_line_error(capsys)
    assert len(err) < 500, err[:300]


def test_sample_refuses_an_absurd_count(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_flags(npz, out, "--no-eval")) == 0
    capsys.readouterr()
    assert main(["sample", str(out), "--n", "1000000000"]) == 2
    assert "n must be in 1..4096" in _one_line_error(capsys)


def test_a_run_that_skips_most_of_an_epoch_fails_and_its_log_is_valid_json(
    npz, tmp_path, monkeypatch, capsys
):
    original = ELBO.forward

    def mostly_nan(self, model, x, **kwargs):
        out = original(self, model, x, **kwargs)
        if model.training:
            return type(out)(out.loss * float("nan"), out.per_example, out.metrics)
        return out

    monkeypatch.setattr(ELBO, "forward", mostly_nan)
    out = tmp_path / "run"
    assert main(train_flags(npz, out, "--on-nan", "skip")) == 1
    err = capsys.readouterr().err
    assert "3 of the 3 steps of epoch 1" in err and "diverged" in err, err
    for line in (
        (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    ):
        json.loads(line)  # strict JSON: no NaN tokens


def test_garbled_checkpoints_are_always_a_checkpoint_error(tmp_path):
    """Random bytes, and every truncation and byte flip of a real checkpoint: the loader says
    CheckpointError (a ValueError) whatever the unpickler raises; never another exception."""
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.arange(50.0)}, "config": {"a": [1, 2]}}, good)
    data = good.read_bytes()
    rng = random.Random(0)
    blobs = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))) for _ in range(150)]
    blobs += [data[:n] for n in range(0, len(data), 97)]
    blobs += [b"\x80\x02" + bytes(rng.getrandbits(8) for _ in range(200)) for _ in range(100)]
    for _ in range(60):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        blobs.append(bytes(flipped))
    path = tmp_path / "bad.pt"
    for blob in blobs:
        path.write_bytes(blob)
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            assert str(path) in str(e) and "weights_only=False" not in str(e)


def test_a_failed_first_checkpoint_write_does_not_claim_a_previous_one(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match="no checkpoint was written") as info:
        save_checkpoint({"model": {}}, tmp_path / "checkpoint.pt")
    assert "intact" not in str(info.value)


# -- late failures, now refused or avoided before training -------------------------------------


def _npz(tmp_path, n_train, test=True):
    g = np.random.default_rng(1)
    x = g.random((n_train + 40, 4, 4)).astype(np.float32)
    path = tmp_path / f"data{n_train}{'' if test else '-no-test'}.npz"
    splits = {"train": x[:n_train], "valid": x[n_train : n_train + 20]}
    if test:
        splits["test"] = x[n_train + 20 :]
    np.savez(path, **splits)
    return path


@pytest.mark.parametrize("objective", ["factor_vae", "dip_vae"])
def test_a_last_batch_of_one_is_dropped_for_objectives_that_need_two(tmp_path, objective):
    # 61 examples in batches of 20: the last batch holds one example
    out = tmp_path / "run"
    flags = train_flags(_npz(tmp_path, 61), out, "--objective", objective, "--no-eval")
    assert main(flags) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3  # the one-example batch was not a step


def test_a_batch_size_an_objective_cannot_use_is_refused_up_front(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_flags(npz, out, "--objective", "factor_vae", "--batch-size", "1")) == 2
    err = _one_line_error(capsys)
    assert "batch_size" in err and "factor_vae" in err and ">= 2" in err, err
    assert not out.exists()


def test_a_data_set_without_a_test_split_is_refused_before_training(tmp_path, capsys):
    path = _npz(tmp_path, 60, test=False)
    out = tmp_path / "run"
    assert main(train_flags(path, out)) == 2
    err = _one_line_error(capsys)
    assert "test" in err and "--no-eval" in err, err
    assert not out.exists()
    assert main(train_flags(path, out, "--no-eval")) == 0


def test_more_data_initialised_pseudo_inputs_than_examples_names_the_flags(npz, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--prior", "vamp", "--pseudo-init", "data", "--components", "500"]
    assert main(train_flags(npz, out, *flags)) == 2
    err = _one_line_error(capsys)
    assert "--components" in err and "--pseudo-init" in err and "60" in err, err
    assert not out.exists()


@pytest.mark.parametrize("dataset", ["dsprites", "skimage_rgb"])
@pytest.mark.parametrize("how", ["flag", "sectioned file", "flat file"])
def test_binarize_asked_of_a_data_set_never_binarised_is_refused(dataset, how, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", dataset, "--epochs", "1", "--out", str(out), "--quiet"]
    if how == "flag":
        argv += ["--binarize", "static"]
    else:
        cfg = tmp_path / "c.yaml"
        body = "train:\n  binarize: dynamic\n" if how == "sectioned file" else "binarize: dynamic\n"
        cfg.write_text(body)
        argv += ["--config", str(cfg)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does nothing for dataset" in err and dataset in err and "--binarize none" in err
    assert not out.exists()
