"""Callbacks of our own, for what Lightning does not ship: epoch timing, exact resume, preemption, NaN guard."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from typing_extensions import override

from optimlight.app.runlog import metrics_line
from optimlight.plugin.errors import ConfigError

log = logging.getLogger(__name__)


class StopsRun(L.Callback):
    """A callback that may end a run early with a status of its own (a tuning trial `pruned`): the run record takes
    `stop_status`, and the run is not tested (selection reads validation; nothing reads a stopped trial's test)."""

    stop_status: str | None = None


def stop_status(callbacks: list[L.Callback]) -> str | None:
    """The status a `StopsRun` callback ended the run with; None when the run went its length."""
    return next((cb.stop_status for cb in callbacks if isinstance(cb, StopsRun) and cb.stop_status), None)


class EpochTimer(L.Callback):
    """Logs `train/epoch_time`: seconds of each training epoch, validation excluded; keeps them in `epoch_times`.

    The clock runs while training batches run: it pauses for every validation (also mid-epoch ones, with
    `val_check_interval` < 1) and starts again at the next training batch, also after a resume mid-epoch. A
    checkpoint saved mid-epoch (SIGTERM) carries the epoch's seconds so far, so the resumed epoch's time is whole.

    Writes one line of metrics per epoch to the run's log (stdout and train.log), so logs stay readable in CI,
    batch jobs and sweeps.
    """

    def __init__(self) -> None:
        self.epoch_times: list[float] = []
        self._elapsed = 0.0  # seconds of the current epoch's training so far, pauses excluded
        self._start: float | None = None
        self._unprinted_epoch: int | None = None

    @override
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.print_epoch_line(trainer)

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def epoch_seconds(self) -> float:
        """Seconds of the current epoch's training so far, the clock's running stretch included."""
        return self._elapsed + (0.0 if self._start is None else time.perf_counter() - self._start)

    def training_seconds(self) -> float:
        """Seconds of training so far: the finished epochs' and the current one's, validations excluded."""
        return sum(self.epoch_times) + self.epoch_seconds()

    def _pause(self) -> None:
        if self._start is not None:
            self._elapsed += time.perf_counter() - self._start
            self._start = None

    @override
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._pause()

    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause()
        self.epoch_times.append(self._elapsed)
        self._elapsed = 0.0
        pl_module.log("train/epoch_time", self.epoch_times[-1], on_step=False, on_epoch=True, sync_dist=True)
        self._unprinted_epoch = trainer.current_epoch + 1  # counted from 1 where users read it (time to target too)

    def print_epoch_line(self, trainer) -> None:
        """The finished epoch's metrics, printed when the next epoch (or the training) starts or ends: the module
        logs train/loss and train/acc in its own on_train_epoch_end, which Lightning calls after this callback's."""
        if trainer.is_global_zero and self._unprinted_epoch is not None:
            shown = {k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
            log.info("epoch %d: %s", self._unprinted_epoch, metrics_line(shown))
        self._unprinted_epoch = None

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        self.print_epoch_line(trainer)

    @override
    def state_dict(self) -> dict:
        return {"epoch_times": list(self.epoch_times), "elapsed": self.epoch_seconds()}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch_times = list(state_dict.get("epoch_times", []))
        self._elapsed, self._start = float(state_dict.get("elapsed", 0.0)), None


class RunSummary(ModelSummary):
    """Lightning's model summary (each layer's parameters, FLOPs and shapes; the totals) as a line of the run's
    log, so train.log holds it as the console shows it; without the total FLOPs of one image's forward pass,
    which nothing compares."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        # Lightning checks the depth only when the summary is built, after the run has started
        if not (isinstance(max_depth, int) and max_depth >= -1):
            raise ConfigError("callbacks.model_summary.max_depth", max_depth, "-1 (every layer), 0 (none) or a depth > 0")
        super().__init__(max_depth, **summarize_kwargs)

    @staticmethod
    @override
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        # Lightning's own table, the one its plain ModelSummary logs
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        log.info("model summary:\n%s", "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops")))


class RNGState(L.Callback):
    """Saves the Python, NumPy and torch RNG states in every checkpoint and restores them on resume.

    Lightning restores weights, optimizer, schedulers and loop counters but not the global RNGs that dropout and
    augmentation draw from; with them a run resumed from `last.ckpt` repeats the uninterrupted run exactly.
    """

    def state_dict(self) -> dict:
        # NumPy's key array as a tensor: checkpoints load with torch.load(weights_only=True), which refuses ndarrays
        name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached_gaussian = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class LoaderPosition(L.Callback):
    """Puts the training loader back at its saved mid-epoch position on resume.

    Lightning saves each stateful loader's `state_dict` (TensorBatches, ResumableDataLoader) in the checkpoint but
    loads it only when it builds the training loader after the restore; a schedule sized from the run's length
    builds the loader earlier, in configure_optimizers, to count its batches, and the position was never loaded
    (a run resumed mid-epoch replayed the epoch's first batches). Loading it again here is harmless otherwise.
    """

    def __init__(self) -> None:
        self._states: list[dict] = []

    @override
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        stateful = [loader for loader in loaders if hasattr(loader, "load_state_dict")]
        for loader, state in zip(stateful, self._states):
            loader.load_state_dict(state)
        self._states = []


def checkpoint_file(dirpath: str | Path, filename: str) -> Path:
    """The file a ModelCheckpoint whose `filename` names no metric writes, by Lightning's rule: one rule for the
    run's checkpoints, its Preemption's and a population member's, whichever writes or looks for them."""
    return Path(dirpath) / f"{filename}{ModelCheckpoint.FILE_EXTENSION}"


class Preemption(L.Callback):
    """On SIGTERM (what SLURM and Kubernetes send before a kill) save `last.ckpt`, so `ckpt_path=last` resumes.

    Lightning turns SIGTERM into a `SIGTERMException` at the next batch boundary and calls `on_exception`.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = checkpoint_file(dirpath, filename)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            # a full checkpoint, said explicitly (Lightning logs a line when weights_only is left unset)
            trainer.save_checkpoint(self.path, weights_only=False)  # Lightning's save is atomic (temp file + rename)


class RunLength(L.Callback):
    """Refuses to resume with another run length when the schedule was sized from the run's length.

    A cosine `T_max` or a OneCycle `total_steps` filled from `max_epochs` is restored from the checkpoint with the
    old value, so a resumed run with more epochs would leave the schedule mid-way and its lr would jump.

    Args:
        schedule: the scheduler whose length came from the run (None: any length may change on resume).
    """

    def __init__(self, schedule: str | None = None):
        self.schedule = schedule
        self._length: dict[str, int] = {}

    @staticmethod
    def length_of(trainer) -> dict[str, int]:
        steps = trainer.estimated_stepping_batches
        return {
            "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps,
            "steps": -1 if steps == float("inf") else int(steps),
        }

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        now, started = self.length_of(trainer), self._length
        if self.schedule and started and started != now:
            key = next((k for k in ("max_epochs", "max_steps") if started[k] != now[k]), None)
            name, value, was = (f"trainer.{key}", now[key], started[key]) if key else ("trainer", "this length", "")
            raise ConfigError(
                name,
                value,
                f"{was or 'the length'} (the run's length when it started, {started['steps']} optimizer steps: "
                f"{self.schedule} was sized from it and resumes with that size); resume with it, or start a new run "
                f"dir to train for {now['steps']} steps",
            )
        self._length = now

    @override
    def state_dict(self) -> dict:
        return dict(self._length)

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self._length = dict(state_dict)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""

    @classmethod
    def at_step(cls, step: int) -> NonFiniteLossError:
        """The error of a run stopped at optimizer step `step` (a run alone and a population member say the same)."""
        return cls(
            f"non-finite training loss at optimizer step {step}: run stopped, the last good checkpoint is kept "
            "(module.skip_nonfinite_loss=true skips such steps instead)"
        )


class NonFiniteGuard(L.Callback):
    """Stops the run at the first non-finite training loss, naming the optimizer step; the last good checkpoint stays.

    No host sync per step, and no tensor op either: each step's loss (Lightning's detached copy) is kept with its
    step, and the kept losses are read together every `check_every_n_steps` training batches and before each
    validation, so no checkpoint is written once the loss went bad. (To skip such steps instead of stopping, set
    `module.skip_nonfinite_loss=true`.)
    """

    def __init__(self, check_every_n_steps: int = 50):
        if not isinstance(check_every_n_steps, int) or check_every_n_steps < 1:
            raise ConfigError("callbacks.nonfinite_guard.check_every_n_steps", check_every_n_steps, "a positive integer")
        self.check_every_n_steps = check_every_n_steps
        self._losses: list[torch.Tensor] = []
        self._steps: list[int] = []  # the optimizer step each kept loss is for
        self._batch_step = 0

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_step = trainer.global_step  # the optimizer step this batch's loss is for

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # a step the module skipped
            return
        self._losses.append(loss.detach())
        self._steps.append(self._batch_step)
        if len(self._losses) >= self.check_every_n_steps:
            self._check()

    @override
    def on_validation_start(self, trainer, pl_module) -> None:
        self._check()

    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check()

    def _check(self) -> None:
        if not self._losses:
            return
        bad = (~torch.isfinite(torch.stack(self._losses))).nonzero()  # one host sync for all the kept losses
        steps, self._losses, self._steps = self._steps, [], []
        if len(bad):
            raise NonFiniteLossError.at_step(steps[int(bad[0])])
