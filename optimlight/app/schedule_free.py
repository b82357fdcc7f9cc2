"""Schedule-free optimizers' two points: `train()` before training steps, `eval()` before everything else.

A schedule-free optimizer (the registry's `train_eval`) trains at an interpolation of its fast iterate and its
average but is meant to be evaluated, tested and saved at the average. `optimizer.eval()` swaps the weights to the
average, `optimizer.train()` swaps them back; each is a no-op in its own mode, and the mode is part of the
optimizer's state, so a checkpoint restores weights and mode together.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

from optimlight.plugin.registry import optimizer_info


def train_eval_optimizers(trainer: L.Trainer) -> list:
    """The trainer's optimizers that have the two modes."""
    return [optimizer for optimizer in trainer.optimizers if optimizer_info(type(optimizer)).train_eval]


def set_mode(trainer: L.Trainer, mode: str) -> None:
    """`optimizer.train()` or `optimizer.eval()` on each of the trainer's optimizers that has the two modes."""
    for optimizer in train_eval_optimizers(trainer):
        getattr(optimizer, mode)()


class ScheduleFreeModes(L.Callback):
    """Train mode from the first training batch on; eval mode for validation, testing, prediction, the end of
    every epoch and of the fit, and an exception (Lightning runs checkpoint callbacks after this one, and the
    preemption callback after it in the config), so every checkpoint holds the averaged weights.

    The fit's schedule-free optimizers are found once, when training starts, not at every batch."""

    def __init__(self) -> None:
        self._train_eval: list = []

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_eval = train_eval_optimizers(trainer)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        for optimizer in self._train_eval:
            optimizer.train()

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_mode(trainer, "eval")

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_mode(trainer, "eval")

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_mode(trainer, "eval")

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_mode(trainer, "eval")

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        set_mode(trainer, "eval")

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        set_mode(trainer, "eval")
