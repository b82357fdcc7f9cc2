"""Lightning's per-batch callback calls, without the ones that can only do nothing.

Lightning calls every batch hook of every callback, overridden or not, each inside its profiler's context and with
the callback's state key formatted into the action name: with a default run's 16 callbacks and six hooks a training
step, a measurable share of a small MLP's step (docs/explanation/benchmarks.md). Its dispatcher skips
an attribute that is not callable (`if callable(fn)`), so a hook set to None on the callback is never called.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

#: The callback hooks Lightning calls once per batch: six per training step, two per evaluation batch.
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def saves_per_batch(checkpoint: ModelCheckpoint) -> bool:
    """Whether a ModelCheckpoint may save after a training batch: only with `every_n_train_steps` or
    `train_time_interval`, which are all its `on_train_batch_end` looks at; else it saves at epoch and validation ends."""
    return checkpoint._every_n_train_steps > 0 or checkpoint._train_time_interval is not None


def skip_idle_batch_hooks(callbacks: Iterable[L.Callback]) -> None:
    """Set to None, on the callback itself, each batch hook it inherits from `Callback` (a no-op), and the
    `on_train_batch_end` of a ModelCheckpoint that saves at epoch and validation ends only; the others stay."""
    for callback in callbacks:
        idle = [hook for hook in BATCH_HOOKS if getattr(type(callback), hook) is getattr(L.Callback, hook)]
        if isinstance(callback, ModelCheckpoint) and not saves_per_batch(callback):
            idle.append("on_train_batch_end")
        for hook in idle:
            if hook not in vars(callback):  # a hook the instance defines itself stays
                setattr(callback, hook, None)
