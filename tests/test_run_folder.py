"""A run folder belongs to one run (issue 15): no silent overwrite, one process at a time (a lock
with stale-lock detection, tested with real processes), atomic writes, no stale results."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import train_flags
from vaekit.cli import main
from vaekit.training.folder import run_lock


@pytest.fixture
def npz(tmp_path):
    g = np.random.default_rng(0)
    protos = g.random((3, 16))

    def make(n):
        return np.clip(protos[g.integers(0, 3, n)] + 0.1 * g.normal(size=(n, 16)), 0, 1)

    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train=make(60).astype(np.float32).reshape(-1, 4, 4),
        valid=make(20).astype(np.float32).reshape(-1, 4, 4),
        test=make(20).astype(np.float32).reshape(-1, 4, 4),
    )
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_finished_run_is_not_overwritten_without_resume_or_overwrite(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    before = _files(out)
    assert main(train_flags(npz, out, "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err, err
    assert len(err.strip().splitlines()) == 1
    assert _files(out) == before


def test_overwrite_replaces_the_run_and_only_a_runs_files(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    old_eval = json.loads((out / "eval.json").read_text())
    assert main(train_flags(npz, out, "--seed", "3", "--overwrite")) == 0
    assert json.loads((out / "eval.json").read_text()) != old_eval
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 3
    # a folder that holds something else is not a run folder: --overwrite removes nothing
    (out / "notes.txt").write_text("mine")
    before = _files(out)
    assert main(train_flags(npz, out, "--overwrite")) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert _files(out) == before


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from vaekit.training.folder import run_lock\n"
        "with run_lock(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_while_the_first_holds_the_folder(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    before = _files(out)
    holder = _hold_lock(out)
    try:
        for flags in (train_flags(npz, out, "--resume", "--epochs", "2"), ["eval", str(out)]):
            assert main(flags) == 2
            err = capsys.readouterr().err
            assert f"in use by process {holder.pid}" in err, err
        assert _files(out) == {**before, ".lock": (out / ".lock").read_bytes()}
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and the next run takes it over
    assert (out / ".lock").exists()
    assert main(train_flags(npz, out, "--resume", "--epochs", "2")) == 0
    assert not (out / ".lock").exists()


def test_two_trainings_started_into_one_folder_one_runs_one_is_refused(npz, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaekit.cli",
            *train_flags(npz, out, "--epochs", "100000", "--time-limit", "0.3", "--no-eval"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "vaekit.cli", *train_flags(npz, out, "--no-eval")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid}" in second.stderr
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # one training's log: its epochs in order, none twice (the second wrote nothing)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in rows if r["split"] == "train"]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > 1


def test_run_lock_is_reentrant_and_leaves_no_folder_when_nothing_was_written(tmp_path):
    folder = tmp_path / "new"
    with run_lock(folder):
        with run_lock(folder):
            assert (folder / ".lock").exists()
        assert (folder / ".lock").exists()
    assert not folder.exists()


def test_results_older_than_the_checkpoint_are_not_shown_as_current(npz, tmp_path):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    assert (out / "eval.json").exists()
    assert main(train_flags(npz, out, "--resume", "--epochs", "2", "--no-eval")) == 0
    assert not (out / "eval.json").exists()  # it described epoch 1's checkpoint
    report = (out / "report.html").read_text()
    assert "No eval.json yet" in report and "from eval.json" not in report


def test_a_full_disk_during_eval_leaves_the_old_results_and_no_temporary(
    npz, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    before = _files(out)
    original = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        original(self, text[: len(text) // 2], *args, **kwargs)  # half written, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["eval", str(out), "--samples", "4", "--quiet"]) == 2
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    after = _files(out)
    assert after["eval.json"] == before["eval.json"]
    assert after["report.html"] == before["report.html"]
    assert not [name for name in after if name.endswith(".tmp") or ".tmp." in name]


def test_sigkill_during_eval_leaves_the_previous_results_and_the_folder_usable(npz, tmp_path):
    out = tmp_path / "run"
    assert main(train_flags(npz, out)) == 0
    before = _files(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.5, 2.0, 4.0):  # killed while loading, while evaluating, while writing
        proc = subprocess.Popen(
            [sys.executable, "-m", "vaekit.cli", "eval", str(out), "--samples", "2000", "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.kill()
        proc.wait()
        after = _files(out)
        lock = after.pop(".lock", None)  # a killed writer may leave its lock: it is stale
        for name in ("checkpoint.pt", "best.pt", "config.yaml"):
            assert after[name] == before[name], name
        # each result file is the old one or a whole new one, never a cut one
        new_eval = json.loads(after["eval.json"])
        assert after["eval.json"] == before["eval.json"] or new_eval["samples"] == 2000
        assert after["report.html"].rstrip().endswith(b"</html>")
        # a writer killed mid-write may leave its hidden temporary, named with its own pid
        stale = [n for n in after if ".tmp" in n]
        assert all(n.startswith(".") and f".{proc.pid}.tmp" in n for n in stale), after.keys()
        assert lock is None or int(lock.split()[0]) == proc.pid
    assert main(["eval", str(out), "--samples", "4", "--quiet"]) == 0  # a stale lock is taken over
    assert json.loads((out / "eval.json").read_text())["samples"] == 4
    assert not [n for n in _files(out) if ".tmp" in n]  # and the stale temporaries removed


def test_taking_the_lock_removes_only_the_temporaries_of_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    stale = tmp_path / f".eval.{dead.pid}.tmp.json"
    mine = tmp_path / f".eval.{os.getpid()}.tmp.json"
    user = tmp_path / "notes.1.tmp.txt"  # not a hidden vaekit temporary: never touched
    for p in (stale, mine, user):
        p.write_text("x")
    with run_lock(tmp_path):
        pass
    assert not stale.exists() and mine.exists() and user.exists()
