"""Time-to-target: the first epoch, optimizer step and training seconds at which validation accuracy reached
each target (the "speed" of DeepOBS, AlgoPerf's time-to-result), recorded by every run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from optimlight.app.callbacks import EpochTimer
from optimlight.app.record import epoch_metrics
from optimlight.plugin.errors import ConfigError

MONITOR = "val/acc"


def target_key(target: float) -> str:
    """How a target names its entry: `0.9`, `0.85`."""
    return f"{target:g}"


def time_to_target(
    values: Sequence[float],
    steps: Sequence[int],
    seconds: Sequence[float],
    targets: Sequence[float],
    epochs: Sequence[int] | None = None,
) -> dict[str, dict[str, float] | None]:
    """For each target, the first validation whose value is >= the target: its 1-based epoch (`epochs`, by default
    one validation per epoch), optimizer steps taken and cumulative training seconds; None where none reached it."""
    epochs = list(epochs) if epochs is not None else list(range(1, len(values) + 1))
    reached: dict[str, dict[str, float] | None] = {}
    for target in targets:
        first = next((i for i, value in enumerate(values) if value >= target), None)
        reached[target_key(target)] = (
            None
            if first is None
            else {"epoch": int(epochs[first]), "step": int(steps[first]), "seconds": round(seconds[first], 4)}
        )
    return reached


def time_to_target_from_metrics(run_dir: Path, targets: Sequence[float]) -> dict[str, dict[str, float] | None]:
    """`time_to_target` rebuilt from the run's csv/metrics.csv (per epoch: val/acc, the step, train/epoch_time),
    for runs whose results.json predates it or for targets the run did not record."""
    frame = epoch_metrics(run_dir, (MONITOR, "train/epoch_time", "step"))
    if MONITOR not in frame or not len(frame):
        return {target_key(t): None for t in targets}
    # training seconds so far, summed over every epoch before dropping the epochs without a validation
    seconds = frame["train/epoch_time"].fillna(0.0).cumsum() if "train/epoch_time" in frame else frame[MONITOR] * 0
    validated = frame[MONITOR].notna()
    frame, seconds = frame[validated], seconds[validated]
    steps = frame["step"].astype(int) + 1  # the CSV's step is the last step's 0-based index: steps taken = it + 1
    return time_to_target(list(frame[MONITOR]), list(steps), list(seconds), targets, epochs=list(frame.index))


def check_targets(targets: Any) -> None:
    if not isinstance(targets, (list, tuple)) or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1 for t in targets
    ):
        raise ConfigError("report.targets", targets, "a list of validation accuracies in (0, 1], e.g. [0.85, 0.9]")


class TimeToTarget(L.Callback):
    """After each validation, keeps (val/acc, optimizer step, training seconds so far); `record()` gives
    `time_to_target`. The history is part of every checkpoint, so a resumed run reports the uninterrupted run's."""

    def __init__(self, targets: Sequence[float], timer: EpochTimer):
        check_targets(list(targets))
        self.targets = list(targets)
        self.timer = timer
        self.values: list[float] = []
        self.epochs: list[int] = []
        self.steps: list[int] = []
        self.seconds: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(MONITOR)
        if trainer.sanity_checking or value is None:
            return
        self.values.append(float(value))
        self.epochs.append(trainer.current_epoch + 1)
        self.steps.append(trainer.global_step)
        self.seconds.append(self.timer.training_seconds())

    def record(self) -> dict[str, dict[str, float] | None]:
        return time_to_target(self.values, self.steps, self.seconds, self.targets, self.epochs)

    def state_dict(self) -> dict:
        return {"values": self.values, "epochs": self.epochs, "steps": self.steps, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values, self.epochs = list(state_dict["values"]), list(state_dict["epochs"])
        self.steps, self.seconds = list(state_dict["steps"]), list(state_dict["seconds"])
