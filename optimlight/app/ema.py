"""Weight averaging for evaluation: an exponential moving average of the parameters (`averaging=ema`), and the
check that a run averages one way at a time (`callbacks.ema`, `callbacks.swa`).

Built on Lightning's `WeightAveraging`, as its `EMAWeightAveraging` is: the average lives in a
`torch.optim.swa_utils.AveragedModel`, every checkpoint stores it as `state_dict` (the raw weights under
`current_model_state`, the update count under `averaging_state`) and a resumed fit restores both.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torchmetrics.classification import MulticlassAccuracy

from optimlight.app.ranges import Fraction, NonNegativeInt, PositiveInt
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import to_dict
from optimlight.plugin.schedulers import VALIDATION


def warmup_decay(decay: float, num_updates: int) -> float:
    """The decay of an update after `num_updates` earlier ones: min(decay, (1 + n) / (10 + n)).

    The warmup of TensorFlow's ExponentialMovingAverage: early averages follow the weights closely instead of
    being dominated by the random initialization for ~1 / (1 - decay) steps.
    """
    return min(decay, (1 + num_updates) / (10 + num_updates))


def ema_multi_avg_fn(decay: float, warmup: bool):
    """`AveragedModel`'s `multi_avg_fn` for an EMA with a fixed decay, or one that warms up as `warmup_decay` says."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    def update(ema_params, params, num_averaged: torch.Tensor) -> None:
        get_ema_multi_avg_fn(warmup_decay(decay, int(num_averaged)))(ema_params, params, num_averaged)

    return update


class EMA(WeightAveraging):
    """theta_ema <- decay * theta_ema + (1 - decay) * theta after every `update_every_n_steps`-th optimizer step.

    The first update copies the weights. Validation runs on the raw weights, so `val/acc` means the same with and
    without EMA, and batch by batch on the average, logged as `val/acc_ema`. Checkpoints hold the average, and a
    test or validate run from a checkpoint evaluates it (Lightning would load the raw weights back).
    """

    #: What it logs through `pl_module.log`, and when: a metric a checkpoint, scheduler or early stop may monitor.
    LOGGED_METRICS = {"val/acc_ema": VALIDATION}

    def __init__(
        self,
        decay: Fraction = 0.999,
        warmup: bool = False,
        update_every_n_steps: PositiveInt = 1,
        update_starting_at_step: NonNegativeInt | None = None,
        num_classes: int = 10,
    ):
        super().__init__(multi_avg_fn=ema_multi_avg_fn(decay, warmup))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step or 0
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After optimizer steps (0-based) from `update_starting_at_step` on, every `update_every_n_steps`-th."""
        if step_idx is None:
            return False
        return step_idx >= self.update_starting_at_step and step_idx % self.update_every_n_steps == 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.val_accuracy = self.val_accuracy.to(pl_module.device)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        """Keep the raw weights in place (the base class swaps the average in); evaluate the average beside them."""
        if self._average_model is not None:
            self._average_model.eval()
            self.val_accuracy.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._average_model is not None:
            x, y = batch
            self.val_accuracy.update(self._average_model(x), y)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._average_model is not None:
            # compute() already gathers every rank's counts; sync_dist averages equal values (Lightning asks for it)
            pl_module.log("val/acc_ema", self.val_accuracy.compute(), prog_bar=True, sync_dist=True)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Resuming a fit restores the average and the raw weights; any other stage keeps the average loaded."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def check_averaging(callbacks: Mapping) -> None:
    """At most one of the `callbacks` node's `ema` and `swa`. Their values are checked where every callback's are:
    EMA's ranges are its signature's (`schema.check_types`), StochasticWeightAveraging's its constructor's own."""
    if to_dict(callbacks.get("ema")) and to_dict(callbacks.get("swa")):
        raise ConfigError("callbacks.swa", "set", "null while callbacks.ema is set: one weight average at a time")
