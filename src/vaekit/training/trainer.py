"""The training loop: Adam, beta warm-up, clipping, early stopping, exact resume, DDP.

Determinism: ``fit`` seeds torch's global generator (the reparameterisation noise) and
a data generator (order and dynamic binarisation) from ``seed``; both states go into
every checkpoint, together with the position inside the epoch, so a resumed run takes
exactly the steps an uninterrupted one would (bit-for-bit on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from vaekit._checks import validation
from vaekit._progress import progress
from vaekit.config import RunConfig, config_from_dict, trajectory_changes
from vaekit.models.build import prepare_input
from vaekit.objectives import ELBO, Objective
from vaekit.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    state_dict_mismatch,
)
from vaekit.training.folder import RunFolder

__all__ = ["Trainer", "TrainingError", "TrainingInterrupted", "resolve_device"]


# what _state_dict writes and fit(resume=True) reads
# steps whose losses wait on the device between two non-finite checks (a sync point folds them)
_LOSS_BUFFER = 256
_RESUME_KEYS = {"model", "optimizer", "config", "progress", "rng", "epoch_sums"}


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step and checkpoint."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM: a checkpoint was written at ``step`` and the run can be resumed."""

    def __init__(self, step: int, path: Path | None):
        super().__init__(f"interrupted at step {step}; checkpoint: {path}")
        self.step, self.path = step, path


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else MPS, else CPU; anything else as torch spells it.

    A device this machine does not have is a ValueError here, not an AssertionError from
    deep inside ``model.to``.
    """
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps:
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
    if (
        device is None
        or not available.get(device.type, False)
        or (device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count())
    ):
        have = ", ".join(k for k, ok in available.items() if ok)
        count = f" ({torch.cuda.device_count()} CUDA devices)" if available["cuda"] else ""
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', and present on this "
            f"machine (here: {have}{count}); received {name!r}"
        )
    return device


class _DDP(nn.parallel.DistributedDataParallel):
    # objectives read model.posterior / model.prior; forward still goes through DDP
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class _EpochState:
    """Where a run stands; everything here goes into the checkpoint."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already taken (mid-epoch resume)
    best_valid: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    skipped_nan: int = 0
    stopped_early: bool = False


class Trainer:
    """Trains ``model`` on ``splits.train`` with ``objective``; writes into ``run_dir``.

    Nothing happens at construction: :meth:`fit` creates the folder, seeds the
    generators and runs. Files written (rank 0, :class:`~vaekit.training.folder.RunFolder`):
    ``config.yaml``, ``checkpoint.pt`` (every epoch and on SIGINT/SIGTERM), ``best.pt`` (best
    validation ELBO), ``metrics.jsonl`` and ``tb/`` (TensorBoard, when installed).

    Args:
        model: a :class:`~vaekit.VAE` (or another model an objective takes).
        objective: an :class:`~vaekit.objectives.Objective`, called every step as
            ``objective(model, x, y=labels, step=global_step)``; it holds its own schedules
            (beta warm-up, capacity, ...) and state (GECO's multiplier, FactorVAE's
            discriminator), which is moved to the model's device, switched between train and
            eval with the model, checkpointed and restored on resume.
        splits: :class:`vaekit.data.DataSplits`; ``valid`` drives early stopping.
        config: the resolved :class:`~vaekit.config.RunConfig` (saved in checkpoints).
        run_dir: output folder, or None to keep nothing on disk.
        input_shape: shape of one example as the encoder takes it (reshaped from flat).
        optimizer: default ``Adam(lr=train.lr)``.

    Non-finite losses: with ``on_nan="stop"`` the check stays on the device (no host sync per
    step); the first bad step is read at the next logging point or epoch end, and the run
    stops naming it, before any checkpoint is written. With ``on_nan="skip"`` each step
    syncs once; a skipped batch leaves every parameter, buffer (of the model and of the
    objective) and optimizer state as it was before the batch.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        splits,
        config: RunConfig,
        run_dir: str | os.PathLike | None = None,
        *,
        input_shape: tuple[int, ...] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        progress: bool = True,
    ):
        if not isinstance(objective, nn.Module):
            raise ValueError(
                "objective must be a vaekit.objectives.Objective (an nn.Module called as "
                f"objective(model, x, *, y=None, step=None)); received {type(objective).__name__}"
            )
        self.model, self.objective, self.splits, self.config = model, objective, splits, config
        self.input_shape = (
            tuple(input_shape) if input_shape is not None else tuple(splits.event_shape)
        )
        self.tc = config.train
        self.progress = progress
        # fused Adam: one kernel for all parameters instead of ~10 elementwise ops per tensor
        fused = self._device.type in ("cpu", "cuda")
        self.optimizer = optimizer or torch.optim.Adam(
            model.parameters(), lr=self.tc.lr, fused=fused
        )
        self.rank, self.world = _world()
        self.folder = RunFolder(run_dir, self.rank)
        self.run_dir = self.folder.path
        train = splits.train
        n = (
            len(train)
            if not self.tc.max_train_examples
            else min(len(train), self.tc.max_train_examples)
        )
        if n == 0:
            raise ValueError("the training set is empty (0 examples)")
        if self.tc.batch_size > n:
            raise ValueError(
                f"batch_size ({self.tc.batch_size}) is larger than the training set ({n} examples); "
                f"use --batch-size {n} or less"
            )
        # every rank's shard must hold the examples one training call of the objective needs
        self._min_batch = self.world * objective.min_batch
        if self.tc.batch_size < self._min_batch:
            raise ValueError(
                f"batch_size ({self.tc.batch_size}) must be >= {self._min_batch}: objective "
                f"{objective.name or type(objective).__name__!r} needs >= {objective.min_batch} "
                f"examples per call on each of {self.world} process(es)"
            )
        self.steps_per_epoch = math.ceil(n / self.tc.batch_size)
        objective.to(self._device)
        self.state = _EpochState()
        self._stop_signal: int | None = None
        self._dev = self._device  # fixed from here on (the objective was moved to it)
        # the step of the first non-finite loss (-1: none) and its value, kept on the device;
        # the step's losses wait in a small device buffer, folded in at sync points (or when full)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=self._dev)
        self._bad_loss = torch.zeros((), device=self._dev)
        self._losses: torch.Tensor | None = None  # allocated with the first loss's dtype
        self._n_losses = 0
        self._losses_from = 0  # the step of self._losses[0]

    # -- files ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path | None:
        return self.folder.file("checkpoint.pt")

    def _state_dict(self, generator: torch.Generator, epoch_start_gen: torch.Tensor, sums) -> dict:
        s = self.state
        model = _unwrap(self.model)
        return {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "objective": self.objective.state_dict(),
            "config": self.config.to_dict(),
            "progress": dict(vars(s)),
            "rng": {
                "torch": torch.get_rng_state(),
                "data": generator.get_state(),
                "data_epoch_start": epoch_start_gen,
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "epoch_sums": {k: v.detach().cpu() for k, v in sums.items()},
        }

    # -- the loop ------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``train.epochs`` epochs (or until early stopping); returns a summary dict."""
        tc = self.tc
        # a checkpoint that does not fit fails here, before the run folder is touched
        ckpt = self._load_resume() if resume else None
        self.folder.prepare(self.config.to_dict(), resume)
        torch.manual_seed(tc.seed)
        generator = torch.Generator().manual_seed(tc.seed + 1)
        epoch_start_gen = generator.get_state()
        sums: dict[str, torch.Tensor] = {}
        if ckpt is not None:
            epoch_start_gen = ckpt["rng"]["data_epoch_start"]
            generator.set_state(ckpt["rng"]["data"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if ckpt["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
            sums = {k: v.to(self._device) for k, v in ckpt["epoch_sums"].items()}
            self.folder.truncate_log(self.state.step)
        if tc.tensorboard:
            self.folder.open_tensorboard()
        old_handlers = self._install_signal_handlers()
        try:
            # value checks were done once on the data; in the loop they would cost a sync per call
            with validation(False):
                self._loop(generator, epoch_start_gen, sums)
        finally:
            self._restore_signal_handlers(old_handlers)
            self.folder.close()
        s = self.state
        return {
            "epochs": s.epoch,
            "steps": s.step,
            "best_valid_elbo": s.best_valid,
            "best_epoch": s.best_epoch,
            "stopped_early": s.stopped_early,
            "skipped_nan_steps": s.skipped_nan,
        }

    @property
    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _shard(self, x: torch.Tensor, y: torch.Tensor | None):
        """This rank's part of a global batch: near-equal parts (``tensor_split``), so the last
        partial batch gives no rank an empty shard unless it is smaller than the world."""
        if self.world == 1:
            return x, y
        x = torch.tensor_split(x, self.world)[self.rank]
        y = None if y is None else torch.tensor_split(y, self.world)[self.rank]
        return x, y

    def _loop(self, generator: torch.Generator, epoch_start_gen: torch.Tensor, sums) -> None:
        tc, s = self.tc, self.state
        train = self.splits.train
        if tc.max_train_examples:
            m = tc.max_train_examples
            train = dataclasses.replace(
                train, x=train.x[:m], y=None if train.y is None else train.y[:m]
            )
        device = self._device
        train = train.to(device)
        model = _unwrap(self.model)
        started = time.perf_counter()
        while s.epoch < tc.epochs and not s.stopped_early:
            if tc.time_limit and time.perf_counter() - started > 60 * tc.time_limit:
                s.stopped_early = True  # time budget spent: the last checkpoint is complete
                break
            t0 = time.perf_counter()
            if s.batch_in_epoch == 0:
                epoch_start_gen = generator.get_state()
                sums = {}
            else:
                # mid-epoch resume: replaying the data stream from the epoch's start redraws
                # the same order and binarisations; the skipped batches cost no model work
                generator.set_state(epoch_start_gen)
            self.model.train()
            self.objective.train()
            skipped_before = s.skipped_nan
            bar = progress(
                total=self.steps_per_epoch,
                initial=s.batch_in_epoch,
                desc=f"epoch {s.epoch + 1}/{tc.epochs}",
                enabled=self.progress and self.rank == 0,
                leave=False,
            )
            for i, (x, y) in enumerate(
                train.batches(tc.batch_size, shuffle=True, generator=generator)
            ):
                if i < s.batch_in_epoch:
                    continue
                # a last batch too small for every rank's shard (or the objective) is dropped
                if x.shape[0] >= self._min_batch:
                    x, y = self._shard(x, y)
                    x = prepare_input(model, x, self.input_shape)
                    with _conditioned(model, y):
                        self._step(x, y, sums)
                s.batch_in_epoch = i + 1
                bar.update(1)
                if s.step % tc.log_every == 0:
                    self._check_finite()
                    row = _means(sums)
                    bar.set_postfix(
                        {k: f"{v:.2f}" for k, v in row.items() if k in ("loss", "rec", "kl")}
                    )
                    self.folder.log({"split": "step", "epoch": s.epoch, "step": s.step, **row})
                if self._stop_signal is not None:
                    bar.close()
                    self._check_finite()
                    path = self.folder.save(
                        "checkpoint.pt", self._state_dict(generator, epoch_start_gen, sums)
                    )
                    raise TrainingInterrupted(s.step, path)
                if tc.time_limit and time.perf_counter() - started > 60 * tc.time_limit:
                    # budget spent mid-epoch: a resumable checkpoint of this very step
                    # (best.pt keeps the last validated epoch)
                    bar.close()
                    self._check_finite()
                    self.folder.save(
                        "checkpoint.pt", self._state_dict(generator, epoch_start_gen, sums)
                    )
                    s.stopped_early = True
                    return
            bar.close()
            self._check_finite()
            self._check_skipped(s.skipped_nan - skipped_before)
            train_row = _means(sums)
            s.epoch += 1
            s.batch_in_epoch = 0
            valid_elbo = self._validate()
            improved = valid_elbo > s.best_valid
            if improved:
                s.best_valid, s.best_epoch, s.bad_epochs = valid_elbo, s.epoch, 0
            else:
                s.bad_epochs += 1
                s.stopped_early = bool(tc.patience) and s.bad_epochs >= tc.patience
            elapsed = time.perf_counter() - t0
            self.folder.log(
                {
                    "split": "train",
                    "epoch": s.epoch,
                    "step": s.step,
                    **train_row,
                    "seconds": elapsed,
                }
            )
            self.folder.log(
                {"split": "valid", "epoch": s.epoch, "step": s.step, "elbo": valid_elbo}
            )
            if self.rank == 0 and self.progress:
                tqdm.write(
                    f"epoch {s.epoch:4d}  loss {train_row.get('loss', float('nan')):8.3f}  "
                    f"valid ELBO {valid_elbo:9.3f}  ({elapsed:.1f}s)"
                )
            state = self._state_dict(generator, epoch_start_gen, {})
            if improved:
                self.folder.save("best.pt", state)
            self.folder.save("checkpoint.pt", state)

    def _step(self, x: torch.Tensor, y: torch.Tensor | None, sums) -> None:
        s, tc = self.state, self.tc
        skip = tc.on_nan == "skip"
        snapshot = self._snapshot() if skip else None
        autocast = (
            torch.autocast(self._dev.type, dtype=torch.bfloat16)
            if tc.precision == "bf16"
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.objective(self.model, x, y=y, step=s.step)
        loss = out.loss
        if skip:
            bad = (~torch.isfinite(loss.detach()).all()).to(torch.int32)
            if self.world > 1:  # every rank skips the same steps
                dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            if bool(bad):  # one host sync per step, in skip mode only
                s.skipped_nan += 1
                self._restore(snapshot)
                self.optimizer.zero_grad(set_to_none=True)
                return
        else:
            self._record_loss(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        (loss if loss.dim() == 0 else loss.mean()).backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        s.step += 1
        # aggregate on the device; the host sees them only at log points
        _accumulate(sums, out.metrics)

    def _record_loss(self, loss: torch.Tensor) -> None:
        """Keep this step's loss on the device (no sync) for :meth:`_check_finite`."""
        value = loss if loss.dim() == 0 else loss.float().mean()
        if self._losses is None or self._losses.dtype != value.dtype:
            self._fold_losses()
            self._losses = torch.empty(_LOSS_BUFFER, dtype=value.dtype, device=value.device)
        elif self._n_losses == _LOSS_BUFFER:
            self._fold_losses()
        if self._n_losses == 0:
            self._losses_from = self.state.step
        self._losses[self._n_losses] = value
        self._n_losses += 1

    def _fold_losses(self) -> None:
        """Fold the buffered losses into (first bad step, its loss), on the device (no sync)."""
        n, self._n_losses = self._n_losses, 0
        if n == 0 or self._losses is None:
            return
        losses = self._losses[:n]
        bad = ~torch.isfinite(losses)
        i = torch.argmax(bad.to(torch.uint8))  # the first bad index (0 when none is bad)
        first = bad.any() & (self._first_bad < 0)
        self._first_bad = torch.where(first, self._losses_from + i, self._first_bad)
        self._bad_loss = torch.where(first, losses[i], self._bad_loss)

    def _snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        """Copies of every tensor a training call may change in place (skip mode)."""
        model = _unwrap(self.model)
        return {
            "model": _clone(model.state_dict()),
            "objective": _clone(self.objective.state_dict()),
        }

    def _restore(self, snapshot) -> None:
        model = _unwrap(self.model)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(snapshot["model"][k])
        self.objective.load_state_dict(snapshot["objective"])

    def _check_finite(self) -> None:
        """Raise TrainingError naming the first step whose loss was not finite (one sync)."""
        self._fold_losses()
        first = self._first_bad
        if self.world > 1:
            first = first.clone()
            dist.all_reduce(first, op=dist.ReduceOp.MAX)
        step = int(first)
        if step < 0:
            return
        last = (
            self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
        )
        value = self._bad_loss.item()
        raise TrainingError(
            f"non-finite loss ({value}) at step {step} (epoch {step // self.steps_per_epoch + 1}); "
            f"last good checkpoint: {last or 'none written yet'}. Lower the learning rate, "
            "enable --grad-clip, or pass --on-nan skip to skip such batches"
        )

    def _check_skipped(self, skipped: int) -> None:
        """A run that skipped more than half of an epoch's steps (``--on-nan skip``) has
        diverged: a TrainingError, not a finished run with nothing learnt."""
        if 2 * skipped > self.steps_per_epoch:
            raise TrainingError(
                f"{skipped} of the {self.steps_per_epoch} steps of epoch {self.state.epoch + 1} "
                "had a non-finite loss and were skipped: the run has diverged. Lower the "
                f"learning rate or enable --grad-clip; last good checkpoint: "
                f"{self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else 'none written yet'}"
            )

    @torch.no_grad()
    def _validate(self) -> float:
        """Mean ELBO (nats) on the fixed validation draw; -inf-safe when there is no split."""
        valid = self.splits.valid
        if valid is None or len(valid) == 0:
            return -math.inf
        model = _unwrap(self.model)
        model.eval()
        self.objective.eval()
        view = valid.eval_view()
        x_all, y_all = view.x, view.y
        total = torch.zeros((), device=self._device)
        own = getattr(model, "validates_with_objective", False)  # e.g. M2: y summed out
        if hasattr(model, "posterior") and hasattr(model, "prior") and not own:
            # the beta-free ELBO, whatever the training objective (comparable across runs)
            kl = getattr(self.objective, "kl", "mc")
            objective = ELBO(kl=kl if kl in ("analytic", "mc") else "mc")
        else:  # models without q(z|x) and p(z) (VQ-VAE): the objective's own bound
            objective = self.objective
        for i in range(0, x_all.shape[0], self.tc.eval_batch_size):
            x = x_all[i : i + self.tc.eval_batch_size].to(self._device)
            x = prepare_input(model, x, self.input_shape)
            y = None if y_all is None else y_all[i : i + self.tc.eval_batch_size]
            with _conditioned(model, y):
                out = objective(model, x, y=None if y is None else y.to(self._device))
            total += out.per_example["bound"].sum()
        model.train()
        self.objective.train()
        return total.item() / x_all.shape[0]  # one host sync per validation

    def _load_resume(self) -> dict:
        path = self.checkpoint_path
        if path is None or not path.exists():
            raise ValueError(f"--resume needs a checkpoint; none at {path}")
        ckpt = load_checkpoint(path, map_location=self._device)
        missing = sorted(_RESUME_KEYS - ckpt.keys())
        if missing:
            raise CheckpointError(
                f"checkpoint {path} cannot resume training: it has no {missing} entries "
                "(not written by vaekit's Trainer?)"
            )
        model = _unwrap(self.model)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ValueError(
                f"checkpoint {path} does not fit this model (a different architecture or data "
                f"shape?): {state_dict_mismatch(e)}"
            ) from None
        changes = trajectory_changes(_saved_config(ckpt["config"], path), self.config)
        if changes:
            key, old, new = changes[0]
            more = f" (and {', '.join(c[0] for c in changes[1:])})" if len(changes) > 1 else ""
            raise ValueError(
                f"--resume with a changed {key}: {old!r} in the checkpoint, {new!r} requested"
                f"{more}; resuming would mix two trainings in one run folder. Resume with the "
                "saved values (only epochs, patience, time_limit, device and logging may "
                "change) or start a new run folder"
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "objective" in ckpt:
            try:
                self.objective.load_state_dict(ckpt["objective"])
            except RuntimeError as e:
                raise ValueError(
                    f"checkpoint {path} holds another objective's state: {state_dict_mismatch(e)}"
                ) from None
        self.state = _EpochState(**ckpt["progress"])
        return ckpt

    # -- signals -------------------------------------------------------------------------

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return None  # signal handlers can only be set from the main thread

        def handler(signum, frame):
            self._stop_signal = signum

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _restore_signal_handlers(self, old) -> None:
        if old:
            for sig, h in old.items():
                signal.signal(sig, h)


def _saved_config(data, path) -> RunConfig:
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise CheckpointError(
            f"checkpoint {path} holds a config this vaekit cannot read: {e}"
        ) from None


def _clone(state):
    """A deep copy of a state_dict's tensors (nested dicts/lists of extra state included)."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, dict):
        return type(state)((k, _clone(v)) for k, v in state.items())
    if isinstance(state, list | tuple):
        return type(state)(_clone(v) for v in state)
    return state


def _conditioned(model: nn.Module, y: torch.Tensor | None):
    """``model.given(y)`` for a conditional model (CVAE), else nothing."""
    given = getattr(model, "given", None)
    if given is None:
        return contextlib.nullcontext()
    if y is None:
        raise ValueError(
            f"{type(model).__name__} is conditioned on labels: the training data need labels"
        )
    return given(y)


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's module under torch.compile and DDP wrappers (whose state keys are prefixed)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, _DDP) else model


def _accumulate(sums: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
    """``sums[k] += metrics[k]`` for every metric and ``sums["_n"] += 1``, on the device: one
    fused ``_foreach_add_`` once every key has its running sum (the sums are ours to update)."""
    if "_n" in sums and all(k in sums for k in metrics):
        torch._foreach_add_([sums[k] for k in metrics], [v.detach() for v in metrics.values()])
        sums["_n"].add_(1)
        return
    for k, v in metrics.items():
        sums[k] = sums.get(k, torch.zeros((), device=v.device)) + v.detach()
    n = sums.get("_n")
    sums["_n"] = (n if n is not None else torch.zeros((), device=_device_of(metrics))) + 1


def _device_of(metrics: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(metrics.values())).device if metrics else torch.device("cpu")


def _means(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    n = sums.get("_n")
    if n is None or float(n) == 0:
        return {}
    return {k: (v / n).item() for k, v in sums.items() if k != "_n"}


def wrap_distributed(model: nn.Module) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    device = next(model.parameters()).device
    return _DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
