"""The one call a LightningModule makes in `configure_optimizers`: config nodes in, Lightning's return value out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optimlight.plugin.cuda_probe import skip_failing_nvml_check
from optimlight.plugin.optimizers import build_optimizer
from optimlight.plugin.schedulers import build_scheduler


def configure_optimizers(module: Any, optimizer: Mapping, scheduler: Mapping | None = None) -> Any:
    """Build the optimizer (with no-decay parameter groups) and its scheduler for `module`.

    Args:
        module: any LightningModule, attached to a Trainer (which sizes run-length dependent schedules).
        optimizer: the node of the `optimizer` config group, as DictConfig or dict.
        scheduler: the node of the `scheduler` config group; None for no scheduler.

    Returns:
        What Lightning's `configure_optimizers` expects: the optimizer, or `{"optimizer", "lr_scheduler"}`.

    It also turns off the failing NVML load that importing Lightning puts in every optimizer step on a machine
    without NVIDIA's driver (`skip_failing_nvml_check`); the answer of `torch.cuda.is_available()` stays the same.
    """
    skip_failing_nvml_check()
    opt = build_optimizer(module, optimizer)
    lr_scheduler = build_scheduler(opt, scheduler, module.trainer)
    return opt if lr_scheduler is None else {"optimizer": opt, "lr_scheduler": lr_scheduler}
