"""The one call a LightningModule makes in `configure_optimizers`: config nodes in, Lightning's return value out."""

from __future__ import annotations

from collections.abc import Mapping

from optimlight.optim import build_optimizer
from optimlight.schedulers import build_scheduler


def configure_optimizers(module, optimizer: Mapping, scheduler: Mapping | None = None):
    """Build the optimizer (with no-decay parameter groups) and its scheduler for `module`.

    `module` is any LightningModule (attached to a Trainer, which sizes run-length dependent schedules);
    `optimizer` and `scheduler` are the nodes of the `optimizer`/`scheduler` config groups, as DictConfig or dict.
    Returns what Lightning's `configure_optimizers` expects: the optimizer, or `{"optimizer", "lr_scheduler"}`.
    """
    opt = build_optimizer(module, optimizer)
    lr_scheduler = build_scheduler(opt, scheduler, module.trainer)
    return opt if lr_scheduler is None else {"optimizer": opt, "lr_scheduler": lr_scheduler}
