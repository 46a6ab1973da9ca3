"""Reliability (issue 5): bad input is refused before anything on disk changes; kills,
signals and write failures lose nothing; checkpoints, configs and data paths load safely.

Everything runs on tiny synthetic data (4x4 images, a 16- or 32-unit MLP). The table in
docs/RELIABILITY.md maps each case to the test that covers it.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vaekit import likelihoods as L
from vaekit.cli import main
from vaekit.config import RunConfig, load_config
from vaekit.models.build import build_model, build_objective
from vaekit.objectives import ELBO
from vaekit.training import checkpoint as checkpoint_module
from vaekit.training.checkpoint import load_checkpoint, save_checkpoint

# -- tiny data and a template run folder ---------------------------------------------------


def _images(n: int, side: int = 4, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    protos = g.random((4, side * side))
    x = np.clip(protos[g.integers(0, 4, n)] + 0.1 * g.normal(size=(n, side * side)), 0, 1)
    return x.reshape(n, side, side).astype(np.float32)


def _save_npz(path: Path, train: np.ndarray, side: int = 4) -> Path:
    np.savez(path, train=train, valid=_images(40, side, 1), test=_images(40, side, 2))
    return path


def _train_flags(data_root, out, *extra) -> list[str]:
    return [
        "train", "--dataset", "file", "--data-root", str(data_root), "--binarize", "static",
        "--network", "mlp", "--hidden", "32", "--latent-dim", "3", "--epochs", "1",
        "--batch-size", "20", "--no-tensorboard", "--quiet", "--no-eval", "--out", str(out),
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models gain nothing from threads, and on a loaded machine two threads waiting on
    # each other made a 2 s run take 30 s. Subprocesses get OMP_NUM_THREADS=1 (see _spawn).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    _save_npz(folder / "tiny.npz", _images(100))
    return folder


@pytest.fixture(scope="module")
def template_run(data_dir, tmp_path_factory) -> Path:
    """A finished one-epoch run folder (config.yaml, metrics.jsonl, checkpoint.pt, best.pt)."""
    out = tmp_path_factory.mktemp("template") / "run"
    assert main(_train_flags(data_dir / "tiny.npz", out)) == 0
    return out


@pytest.fixture
def run(template_run, tmp_path) -> Path:
    """A private copy of the template run folder."""
    return Path(shutil.copytree(template_run, tmp_path / "run"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_unchanged(folder: Path, before: dict[str, bytes]) -> None:
    after = _snapshot(folder)
    assert sorted(after) == sorted(before), "files were added or removed"
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, f"files changed: {changed}"


# -- 1. bad input: refused with a clear message, nothing on disk touched -------------------


def _bad_data(kind: str, folder: Path) -> Path:
    x = _images(100)
    if kind == "nan":
        x[0, 0, 0] = np.nan
    elif kind == "inf":
        x[3, 1, 2] = np.inf
    elif kind == "0-255":
        x = x * 255.0  # float pixels that were never scaled
    elif kind == "negative":
        x = x - 0.5
    elif kind == "empty":
        x = x[:0]
    elif kind == "5x5":
        return _save_npz(folder / "five.npz", _images(100, side=5), side=5)
    return _save_npz(folder / f"{kind}.npz", x)


def _replace_model_weights(run: Path, **model_overrides) -> None:
    """Put another model's weights into run/checkpoint.pt (everything else kept)."""
    state = load_checkpoint(run / "checkpoint.pt")
    cfg = RunConfig().replace(**{"hidden": (32,), "latent_dim": 3, **model_overrides})
    state["model"] = build_model(cfg.model, (1, 4, 4), (16,)).state_dict()
    save_checkpoint(state, run / "checkpoint.pt")


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0xFF for b in data[middle : middle + 32])
    path.write_bytes(bytes(data))


# id -> (prepare(run, data_dir, tmp) -> extra CLI args for `train` on the run folder, regex)
TRAIN_CASES = {
    "nan-in-data": (
        lambda run, d, tmp: ["--data-root", str(_bad_data("nan", tmp))],
        r"train must be finite; received 1 NaN and 0 Inf values",
    ),
    "inf-in-data": (
        lambda run, d, tmp: ["--data-root", str(_bad_data("inf", tmp))],
        r"train must be finite; received 0 NaN and 1 Inf values",
    ),
    "0-255-pixels-bernoulli": (
        lambda run, d, tmp: ["--data-root", str(_bad_data("0-255", tmp))],
        r"train must lie in \[0\.0, 1\.0\]; received values in shape \(100, 4, 4\), "
        r"finite range \[.*, 2\d\d\.?\d*\]\. scale images to \[0, 1\], e\.g\. uint8 pixels / 255",
    ),
    "negative-values-continuous-bernoulli": (
        lambda run, d, tmp: [
            "--data-root",
            str(_bad_data("negative", tmp)),
            "--likelihood",
            "continuous_bernoulli",
            "--binarize",
            "none",
        ],  # fmt: skip
        r"train must lie in \[0\.0, 1\.0\]; received values in .*finite range \[-0\.\d+",
    ),
    "empty-data-set": (
        lambda run, d, tmp: ["--data-root", str(_bad_data("empty", tmp))],
        r"train must have shape \[N, \.\.\.\] with N >= 1 .*received shape \(0, 4, 4\)",
    ),
    "batch-larger-than-data": (
        lambda run, d, tmp: ["--batch-size", "1000"],
        r"batch_size \(1000\) is larger than the training set \(100 examples\); "
        r"use --batch-size 100 or less",
    ),
    "batch-larger-than-data-on-resume": (
        lambda run, d, tmp: ["--resume", "--batch-size", "1000"],
        r"batch_size \(1000\) is larger than the training set",
    ),
    "missing-data-file": (
        lambda run, d, tmp: ["--data-root", str(tmp / "nowhere.npz")],
        r"data_root must name an existing \.npy/\.npz file; received '.*nowhere\.npz'$",
    ),
    "resume-on-data-of-another-image-shape": (
        lambda run, d, tmp: ["--resume", "--data-root", str(_bad_data("5x5", tmp))],
        r"does not fit this model \(a different architecture or data shape\?\): "
        r".*size mismatch for .*torch\.Size\(\[32, 16\]\) from checkpoint.*"
        r"torch\.Size\(\[32, 25\]\)",
    ),
    "checkpoint-from-another-model": (
        lambda run, d, tmp: _replace_model_weights(run, latent_dim=5) or ["--resume"],
        r"checkpoint .*checkpoint\.pt does not fit this model .*size mismatch",
    ),
    "checkpoint-not-written-by-the-trainer": (
        lambda run, d, tmp: (
            save_checkpoint(
                {"model": load_checkpoint(run / "checkpoint.pt")["model"]}, run / "checkpoint.pt"
            )
            and ["--resume"]
        ),
        r"cannot resume training: it has no \['config', 'epoch_sums', 'optimizer', "
        r"'progress', 'rng'\] entries",
    ),
    "truncated-checkpoint": (
        lambda run, d, tmp: (
            (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
            and ["--resume"]
        ),
        r"checkpoint .*checkpoint\.pt is truncated or corrupted",
    ),
    "bit-flipped-checkpoint": (
        lambda run, d, tmp: _flip_bytes(run / "checkpoint.pt") or ["--resume"],
        r"checkpoint .*checkpoint\.pt is truncated or corrupted: .*CRC",
    ),
    "zeroed-checkpoint": (
        lambda run, d, tmp: (
            (run / "checkpoint.pt").write_bytes(bytes(len((run / "checkpoint.pt").read_bytes())))
            and ["--resume"]
        ),
        r"checkpoint .*checkpoint\.pt is truncated or corrupted: [^\n]*$",
    ),
    "resume-without-checkpoint": (
        lambda run, d, tmp: (run / "checkpoint.pt").unlink() or ["--resume"],
        r"--resume needs a checkpoint; none at .*checkpoint\.pt",
    ),
    "malformed-yaml-config": (
        lambda run, d, tmp: (
            (tmp / "bad.yaml").write_text("epochs: [1, 2\n") and ["--config", str(tmp / "bad.yaml")]
        ),
        r"config file '.*bad\.yaml' is not valid YAML: while parsing a flow sequence in "
        r"\".*bad\.yaml\", line 1, column 9",
    ),
    "epochs-zero": (lambda run, d, tmp: ["--epochs", "0"], r"'epochs' must be >= 1; received 0"),
    "log-every-zero": (
        lambda run, d, tmp: ["--log-every", "0"],
        r"'log_every' must be >= 1; received 0",
    ),
    "negative-patience": (
        lambda run, d, tmp: ["--patience", "-1"],
        r"'patience' must be >= 0; received -1",
    ),
    "negative-max-train-examples": (
        lambda run, d, tmp: ["--max-train-examples", "-5"],
        r"'max_train_examples' must be >= 0; received -5",
    ),
    "infinite-learning-rate": (
        lambda run, d, tmp: ["--lr", "inf"],
        r"'lr' must be a finite number > 0; received inf",
    ),
    "on-nan-typo": (
        lambda run, d, tmp: ["--on-nan", "skp"],
        r"on_nan must be one of \['stop', 'skip'\]; received 'skp'; did you mean 'skip'\?",
    ),
    "zero-hidden-width": (
        lambda run, d, tmp: ["--hidden", "32,0"],
        r"'hidden' must hold widths >= 1; received \(32, 0\)",
    ),
    "negative-warmup": (
        lambda run, d, tmp: ["--warmup-epochs", "-1"],
        r"'warmup_epochs' must be >= 0; received -1\.0",
    ),
    "seed-too-large": (
        lambda run, d, tmp: ["--seed", str(2**64)],
        r"'seed' must be in \[0, 2\*\*63\); received 18446744073709551616",
    ),
    "device-not-on-this-machine": (
        lambda run, d, tmp: ["--device", "cuda:99"],
        r"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', and present on this "
        r"machine \(here: cpu.*\); received 'cuda:99'",
    ),
    "unknown-device-type": (
        lambda run, d, tmp: ["--device", "xla"],
        r"device must be .*received 'xla'",
    ),
    "zero-mixture-components": (
        lambda run, d, tmp: [
            "--likelihood",
            "discretized_logistic_mixture",
            "--mixture-components",
            "0",
        ],  # fmt: skip
        r"config key 'mixture_components' must be >= 1; received 0",
    ),
    "unknown-network-name": (
        lambda run, d, tmp: ["--network", "mpl"],
        r"network must be one of \['mlp', 'gated', 'conv'\]; received 'mpl'; did you mean 'mlp'\?",
    ),
    "unknown-activation-name": (
        lambda run, d, tmp: ["--activation", "rleu"],
        r"activation must be one of .*received 'rleu'; did you mean 'relu'\?",
    ),
    "unknown-kl-name": (
        lambda run, d, tmp: ["--kl", "analytc"],
        r"kl must be one of \['auto', 'analytic', 'mc'\]; received 'analytc'; "
        r"did you mean 'analytic'\?",
    ),
    "unknown-estimator-name": (
        lambda run, d, tmp: ["--objective", "iwae", "--k", "2", "--estimator", "drg"],
        r"estimator must be one of .*received 'drg'; did you mean 'dreg'\?",
    ),
    "unknown-dataset-name": (
        lambda run, d, tmp: ["--dataset", "mnsit"],
        r"dataset must be one of .*received 'mnsit'; did you mean 'mnist'\?",
    ),
    "unknown-binarize-name": (
        lambda run, d, tmp: ["--binarize", "statc"],
        r"binarize must be one of .*received 'statc'; did you mean 'static'\?",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_bad_train_input_is_refused_and_leaves_the_run_folder_untouched(
    case, run, data_dir, tmp_path, capsys
):
    prepare, pattern = TRAIN_CASES[case]
    extra = prepare(run, data_dir, tmp_path)
    before = _snapshot(run)
    assert main(_train_flags(data_dir / "tiny.npz", run, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaekit: error: "), err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert re.search(pattern, err), err
    assert "weights_only` set to `False`" not in err  # never advise the unsafe load
    _assert_unchanged(run, before)


def test_bad_input_into_a_new_folder_creates_nothing(data_dir, tmp_path):
    # the checks run before the folder is created: a typo does not leave an empty run folder
    out = tmp_path / "new"
    assert main(_train_flags(data_dir / "tiny.npz", out, "--batch-size", "1000")) == 2
    assert not out.exists()


def test_unknown_flag_suggests_the_config_field(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_train_flags(data_dir / "tiny.npz", tmp_path / "run", "--latnet-dim", "3"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --latnet-dim 3; did you mean --latent-dim?" in err
    assert not (tmp_path / "run").exists()


EVAL_CASES = {
    "truncated-best": (
        lambda run: (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:2000]),
        r"best\.pt is truncated or corrupted",
    ),
    "bit-flipped-best": (
        lambda run: _flip_bytes(run / "best.pt"),
        r"best\.pt is truncated or corrupted: Bad CRC-32",
    ),
    "best-without-config": (
        lambda run: save_checkpoint(
            {"model": load_checkpoint(run / "best.pt")["model"]}, run / "best.pt"
        ),
        r"best\.pt has no 'config' entry",
    ),
    "best-does-not-match-its-config": (
        lambda run: save_checkpoint(
            {**load_checkpoint(run / "best.pt"), "model": {"w": torch.ones(2)}}, run / "best.pt"
        ),
        r"best\.pt does not match its own config: Missing key\(s\) in state_dict",
    ),
    "saved-config-out-of-range": (
        lambda run: save_checkpoint(
            {
                **(s := load_checkpoint(run / "best.pt")),
                "config": {**s["config"], "model": {**s["config"]["model"], "latent_dim": 0}},
            },
            run / "best.pt",
        ),
        r"latent_dim must be >= 1; received 0",
    ),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_bad_checkpoint_is_refused_by_eval_and_nothing_is_written(case, run, capsys):
    prepare, pattern = EVAL_CASES[case]
    prepare(run)
    before = _snapshot(run)
    assert main(["eval", str(run), "--samples", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    _assert_unchanged(run, before)  # no eval.json, no figures


@pytest.mark.parametrize(
    "likelihood, x, pattern",
    [
        (L.Bernoulli(), torch.full((2, 16), 255.0), r"divide 0-255 data by 255"),
        (L.ContinuousBernoulli(), torch.full((2, 16), -0.5), r"finite range \[-0\.5, -0\.5\]"),
    ],
    ids=["bernoulli-0-255", "continuous-bernoulli-negative"],
)
def test_likelihood_refuses_data_outside_its_support(likelihood, x, pattern):
    with pytest.raises(ValueError, match=r"x must lie in \[0\.0, 1\.0\]; received values .*"):
        likelihood(torch.zeros(2, 16)).log_prob(x)
    with pytest.raises(ValueError, match=pattern):
        likelihood(torch.zeros(2, 16)).log_prob(x)


@pytest.mark.parametrize(
    "network, image_shape, x_shape, pattern",
    [
        ("mlp", (1, 4, 4), (5, 25), r"MLP expected input of shape \[\.\.\., 16\].*\(5, 25\)"),
        (
            "conv",
            (1, 8, 8),
            (5, 1, 4, 4),
            r"ConvEncoder expected input of shape \[\.\.\., 1, 8, 8\].*\(5, 1, 4, 4\)",
        ),
    ],
    ids=["mlp", "conv"],
)
def test_wrong_image_shape_for_the_network(network, image_shape, x_shape, pattern):
    cfg = RunConfig().replace(network=network, hidden=(8,), latent_dim=2)
    model = build_model(cfg.model, image_shape, (int(np.prod(image_shape)),))
    with pytest.raises(ValueError, match=pattern):
        build_objective(cfg.objective)(model, torch.rand(x_shape).bernoulli())


# -- 2. faults during training -------------------------------------------------------------

FAULT_EPOCHS = (
    200  # long enough that every planned kill lands before training ends, even on an idle machine
)


def _fault_flags(data_root: Path, out: Path) -> list[str]:
    # dynamic binarisation: the data generator's state must survive the kill too
    return [
        "train", "--dataset", "file", "--data-root", str(data_root), "--binarize", "dynamic",
        "--network", "mlp", "--hidden", "16", "--latent-dim", "2", "--warmup-epochs", "3",
        "--epochs", str(FAULT_EPOCHS), "--batch-size", "20", "--log-every", "7",
        "--no-tensorboard", "--quiet", "--no-eval", "--out", str(out),
    ]  # fmt: skip


def _resume_flags(out: Path) -> list[str]:
    return ["train", "--out", str(out), "--resume", "--quiet", "--no-eval"]


# Runs `python -m vaekit.cli` with checkpoint writes slowed down: the patch lives here, in
# the test, not in the library. torch.save still writes the real bytes, a quarter at a time.
_SLOW_SAVE = """
import io, runpy, time, torch
_save = torch.save
def slow_save(obj, f, *args, **kwargs):
    buf = io.BytesIO()
    _save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    step = len(data) // 4 + 1
    for i in range(0, len(data), step):
        f.write(data[i : i + step])
        f.flush()
        time.sleep(0.015)
torch.save = slow_save
runpy.run_module("vaekit.cli", run_name="__main__", alter_sys=True)
"""


def _spawn(args: list[str], slow_writes: bool = False) -> subprocess.Popen:
    prefix = ["-c", _SLOW_SAVE] if slow_writes else ["-m", "vaekit.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *prefix, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_model(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["progress"]["step"] == sb["progress"]["step"]
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory) -> Path:
    """The fault-test run, uninterrupted (in-process: same code, same threads)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(_fault_flags(data_dir / "tiny.npz", out)) == 0
    return out


def _tmp_files(run: Path) -> list[Path]:
    """Temp files of checkpoint writes (``.checkpoint.pt.XXXX.tmp``, ``.best.pt.XXXX.tmp``)."""
    return sorted(run.glob(".*.pt.*.tmp")) if run.exists() else []


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(
    data_dir, reference_run, tmp_path
):
    out = tmp_path / "run"
    rng = random.Random(2024)
    # (kind, when): "after-start" kills `when` s after the spawn (often still importing);
    # "in-training" `when` s after metrics.jsonl grows; "mid-write" at the when-th
    # (slowed-down) checkpoint write, seen as its temp file appearing.
    plan = [
        ("after-start", rng.uniform(0.3, 1.5)),
        ("mid-write", rng.randint(1, 6)),
        ("in-training", rng.uniform(0.0, 0.6)),
        ("mid-write", rng.randint(1, 6)),
        ("in-training", rng.uniform(0.0, 0.6)),
    ]
    steps, mid_write_kills, stale = [], 0, set()
    for kind, when in plan:
        resume = (out / "checkpoint.pt").exists()
        args = _resume_flags(out) if resume else _fault_flags(data_dir / "tiny.npz", out)
        log_size = _size(out / "metrics.jsonl")
        proc = _spawn(args, slow_writes=kind == "mid-write")
        deadline = time.monotonic() + 60
        seen: set[Path] = set()
        if kind == "after-start":
            time.sleep(when)
        elif kind == "in-training":
            while _size(out / "metrics.jsonl") <= log_size and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(when)
        else:  # kill at once when the when-th new temp file shows up
            while len(seen) < when and proc.poll() is None and time.monotonic() < deadline:
                seen |= set(_tmp_files(out)) - stale
                time.sleep(0.001)
        assert proc.poll() is None, f"the run ended before its {kind} kill: {proc.stderr.read()}"
        proc.kill()
        proc.communicate()
        if kind == "mid-write":
            assert len(seen) >= when and set(_tmp_files(out)) - stale, "kill missed the write"
            mid_write_kills += 1
        stale |= set(_tmp_files(out))  # a SIGKILL leaves the temp file behind, never a cut .pt
        # the latest checkpoint (and best) always loads, and progress never goes back
        step = -1
        if (out / "checkpoint.pt").exists():
            step = load_checkpoint(out / "checkpoint.pt")["progress"]["step"]
            assert not steps or step >= steps[-1], steps
        if (out / "best.pt").exists():
            load_checkpoint(out / "best.pt")
        steps.append(step)
    print("kills (kind, when) -> checkpoint step:", list(zip(plan, steps, strict=True)))
    assert mid_write_kills == 2
    assert steps[-1] > 0, f"no kill landed after the first checkpoint: {steps}"
    # then resume until done (or start afresh if the last kill came before any checkpoint)
    resume = (out / "checkpoint.pt").exists()
    proc = _spawn(_resume_flags(out) if resume else _fault_flags(data_dir / "tiny.npz", out))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _assert_same_model(out / "checkpoint.pt", reference_run / "checkpoint.pt")
    assert load_checkpoint(out / "checkpoint.pt")["progress"]["epoch"] == FAULT_EPOCHS


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_exits_130_and_resume_is_exact(
    sig, data_dir, reference_run, tmp_path, capsys
):
    out = tmp_path / "run"
    proc = _spawn(_fault_flags(data_dir / "tiny.npz", out))
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(int(sig)).uniform(0.0, 0.3))  # somewhere inside an epoch
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    saved = out / "checkpoint.pt"
    assert "interrupted at step " in err and f"checkpoint saved to {saved}" in err, err
    assert f"vaekit train --out {out} --resume" in err
    assert "Traceback" not in err
    state = load_checkpoint(saved)
    print(err.strip(), state["progress"])
    assert 0 < state["progress"]["epoch"] < FAULT_EPOCHS
    assert main(_resume_flags(out)) == 0
    _assert_same_model(saved, reference_run / "checkpoint.pt")


class _OsWithAFullDisk:
    """``os`` for the checkpoint module only, where the rename fails as on a full disk."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_written_then_enospc(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _make_read_only(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    # root ignores permissions, but not the immutable attribute (ext4 and most local file systems)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
        pytest.skip("running as root and chattr +i is not available here")


def _make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o755)


@pytest.mark.parametrize("fault", ["os.replace", "torch.save", "read-only-dir"])
def test_checkpoint_write_failure_keeps_the_previous_checkpoint(
    fault, run, data_dir, monkeypatch, capsys
):
    if fault == "os.replace":
        monkeypatch.setattr(checkpoint_module, "os", _OsWithAFullDisk())
    elif fault == "torch.save":
        monkeypatch.setattr(checkpoint_module.torch, "save", _half_written_then_enospc)
    else:
        _make_read_only(run)
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "best.pt")}
    try:
        rc = main(_train_flags(data_dir / "tiny.npz", run, "--resume", "--epochs", "3"))
    finally:
        _make_writable(run)
    assert rc == 2
    err = capsys.readouterr().err
    if fault == "read-only-dir":  # config.yaml is rewritten (by rename) before training
        assert re.search(r"vaekit: error: .*(Permission denied|Operation not permitted)", err)
    else:
        assert "vaekit: error: [Errno 28] could not write checkpoint " in err, err
        assert "(No space left on device); the previous checkpoint is intact" in err
    for name, data in before.items():
        assert (run / name).read_bytes() == data, name
    assert not _tmp_files(run), "a failed write left its temp file"
    monkeypatch.undo()
    assert main(_train_flags(data_dir / "tiny.npz", run, "--resume", "--epochs", "3")) == 0
    assert load_checkpoint(run / "checkpoint.pt")["progress"]["epoch"] == 3


@pytest.mark.parametrize("on_nan, code", [("skip", 0), ("stop", 1)])
def test_cli_on_nan(on_nan, code, data_dir, tmp_path, monkeypatch, capsys):
    original = ELBO.__call__
    calls = {"n": 0}

    def every_third_nan(self, model, x, **kwargs):
        out = original(self, model, x, **kwargs)
        calls["n"] += 1
        if model.training and calls["n"] % 3 == 0:
            return type(out)(out.loss * float("nan"), out.per_example, out.metrics)
        return out

    monkeypatch.setattr(ELBO, "__call__", every_third_nan)
    out = tmp_path / "run"
    flags = _train_flags(data_dir / "tiny.npz", out, "--epochs", "2", "--on-nan", on_nan)
    assert main(flags) == code
    err = capsys.readouterr().err
    if on_nan == "skip":
        summary = json.loads((out / "train_summary.json").read_text())
        assert summary["skipped_nan_steps"] >= 2 and summary["steps"] >= 6
        assert all(torch.isfinite(t).all() for t in _model_tensors(out / "checkpoint.pt").values())
    else:
        assert "vaekit: training stopped: non-finite loss (nan) at step 2 (epoch 1)" in err
        assert "--on-nan skip" in err


# -- 4. security ---------------------------------------------------------------------------


class _CreatesMarker:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_eval_refuses_a_malicious_checkpoint_without_running_it(container, run, capsys):
    marker = run.parent / "pwned"
    payload = {"model": {}, "config": {}, "evil": _CreatesMarker(marker)}
    if container == "torch-zip":
        torch.save(payload, run / "best.pt")
    else:
        (run / "best.pt").write_bytes(pickle.dumps(payload, protocol=2))
    # sanity: a plain unpickle of the payload would indeed create the marker
    pickle.loads(pickle.dumps(_CreatesMarker(marker)))
    assert marker.exists()
    marker.unlink()
    before = _snapshot(run)
    assert main(["eval", str(run), "--samples", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds objects other than tensors and plain data and was refused" in err, err
    assert not marker.exists()
    _assert_unchanged(run, before)


def test_yaml_config_with_a_python_tag_is_refused_not_executed(tmp_path, data_dir, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"epochs: !!python/object/apply:builtins.open [{str(marker)!r}, w]\n")
    yaml.unsafe_load(evil.read_text())  # sanity: an unsafe loader would run it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=r"is not valid YAML: could not determine a constructor"):
        load_config(evil)
    flags = _train_flags(data_dir / "tiny.npz", tmp_path / "run", "--config", str(evil))
    assert main(flags) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["../outside.npz", "sub/../../outside.npz", ".."])
def test_relative_data_root_cannot_leave_the_data_directory(name, tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    root.mkdir()
    _save_npz(tmp_path / "outside.npz", _images(100))  # exists, but outside the data dir
    monkeypatch.setenv("VAEKIT_DATA", str(root))
    config = tmp_path / "shared.yaml"
    config.write_text(yaml.safe_dump({"train": {"dataset": "file", "data_root": name}}))
    out = tmp_path / "run"
    flags = ["train", "--config", str(config), "--out", str(out), "--quiet", "--no-eval"]
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert f"data_root must be a path inside the data directory {str(root)!r}" in err, err
    assert f"received {name!r}" in err
    assert not out.exists()


def test_relative_data_root_is_read_from_the_data_directory(tmp_path, monkeypatch, capsys):
    # in a config file a relative data_root names a file in the data directory; typed as a
    # flag it is relative to the working directory, as every shell user expects
    root = tmp_path / "data"
    (root / "sets").mkdir(parents=True)
    _save_npz(root / "sets" / "tiny.npz", _images(100))
    _save_npz(tmp_path / "cwd.npz", _images(100))
    monkeypatch.setenv("VAEKIT_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"dataset": "file", "data_root": "sets/./tiny.npz"}))
    base = ["train", "--quiet", "--no-eval", "--epochs", "1", "--batch-size", "20", "--hidden", "8"]
    assert main([*base, "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    assert load_config(tmp_path / "run" / "config.yaml").train.data_root == "sets/./tiny.npz"
    config.write_text(yaml.safe_dump({"dataset": "file", "data_root": "cwd.npz"}))
    assert main([*base, "--config", str(config), "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert f"received 'cwd.npz', read as {str(root / 'cwd.npz')!r} (relative paths" in err, err
    flags = [*base, "--dataset", "file", "--data-root", "cwd.npz", "--out", str(tmp_path / "run3")]
    assert main(flags) == 0
