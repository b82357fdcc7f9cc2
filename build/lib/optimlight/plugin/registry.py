"""What the builders and checks must know of each optimizer and scheduler class beyond its constructor's
signature, as one table each (the shape of timm's `OptimInfo`).

Adding an optimizer torch ships is one YAML file in `conf/optimizer/`; a class with special needs (a closure,
no parameter groups, no mixed precision, train/eval modes) also gets one row in `OPTIMIZERS`. A class without a
row (a user's own, a subclass of none listed) is described from its signature by `optimizer_info`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import constructor_defaults

Interval = Literal["epoch", "step"]


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer class's needs.

    Attributes:
        closure: its `step(closure)` re-evaluates the loss several times (L-BFGS's line search).
        param_groups: it accepts several parameter groups, so the no-decay grouping applies.
        mixed_precision: it may run under AMP (`16-mixed`, `bf16-mixed`); a closure optimizer cannot, since the
            gradient scaler cannot drive its inner evaluations.
        momentum: what OneCycleLR's `cycle_momentum` cycles: `betas` (beta1), `momentum` (only when it is on,
            else cycling would switch it on), or None.
        train_eval: it must be put in `train()` mode before training steps and `eval()` mode before evaluation
            and checkpoints (schedule-free optimizers).
        lr_must_stay_positive: a step at lr 0 fails (L-BFGS's line search divides by the step size).
    """

    closure: bool = False
    param_groups: bool = True
    mixed_precision: bool = True
    momentum: Literal["betas", "momentum"] | None = None
    train_eval: bool = False
    lr_must_stay_positive: bool = False


#: The optimizers of the seed documents (docs/optimizers.md has their update rules and defaults).
OPTIMIZERS: dict[type[torch.optim.Optimizer], OptimizerInfo] = {
    torch.optim.SGD: OptimizerInfo(momentum="momentum"),
    torch.optim.ASGD: OptimizerInfo(),
    torch.optim.Adagrad: OptimizerInfo(),
    torch.optim.Adadelta: OptimizerInfo(),
    torch.optim.RMSprop: OptimizerInfo(momentum="momentum"),
    torch.optim.Adam: OptimizerInfo(momentum="betas"),
    torch.optim.AdamW: OptimizerInfo(momentum="betas"),
    torch.optim.NAdam: OptimizerInfo(momentum="betas"),
    torch.optim.LBFGS: OptimizerInfo(closure=True, param_groups=False, mixed_precision=False, lr_must_stay_positive=True),
}


def optimizer_info(cls: type) -> OptimizerInfo:
    """The row of `cls` or of its nearest listed base class; else what its signature says (betas, momentum)."""
    for base in cls.__mro__:
        if base in OPTIMIZERS:
            return OPTIMIZERS[base]
    args = constructor_defaults(cls)
    if "betas" in args:
        return OptimizerInfo(momentum="betas")
    return OptimizerInfo(momentum="momentum" if "momentum" in args else None)


def cycles_momentum(info: OptimizerInfo, settings: Mapping[str, Any]) -> bool:
    """Whether OneCycleLR can cycle this optimizer's momentum, given its settings (`momentum`, constructor
    defaults included)."""
    if info.momentum == "betas":
        return True
    return info.momentum == "momentum" and (settings.get("momentum") or 0) > 0


def plateau_mode(monitor: str | None) -> str:
    """`min` for a loss, `max` for an accuracy: the direction in which the monitored metric improves."""
    name = str(monitor).rsplit("/", 1)[-1]
    if "loss" in name:
        return "min"
    if "acc" in name:
        return "max"
    raise ConfigError("scheduler.mode", None, f"min or max: monitor={monitor!r} names neither a loss nor an accuracy")


#: `fill(kwargs, optimizer, settings, remaining)`: set the null run-sized arguments in place, from the optimizer,
#: Lightning's scheduler settings and `remaining()`, the scheduler steps the run has after warmup.
Fill = Callable[[dict, torch.optim.Optimizer, Mapping, Callable[[], int]], None]


def _cosine_fill(kwargs: dict, optimizer: torch.optim.Optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("T_max") is None:
        kwargs["T_max"] = max(1, remaining() - 1)  # the last epoch (or step) runs at eta_min


def _onecycle_fill(kwargs: dict, optimizer: torch.optim.Optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("max_lr") is None:
        kwargs["max_lr"] = [group["lr"] for group in optimizer.param_groups]
    if kwargs.get("total_steps") is None and kwargs.get("epochs") is None:
        kwargs["total_steps"] = remaining()
    if kwargs.get("cycle_momentum") is None:
        kwargs["cycle_momentum"] = cycles_momentum(optimizer_info(type(optimizer)), optimizer.defaults)


def _plateau_fill(kwargs: dict, optimizer: torch.optim.Optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("mode") is None:
        kwargs["mode"] = plateau_mode(settings.get("monitor"))


@dataclass(frozen=True)
class SchedulerInfo:
    """One scheduler class's needs.

    Attributes:
        interval: when Lightning steps it unless the node says (`epoch` or `step`).
        no_warmup: why no linear warmup can go in front of it; None when one can.
        run_sized: the arguments that, left null, are filled from the run by `fill`.
        fill: sets those arguments (see `Fill`).
        sized_from_run: whether, given the constructor arguments, the schedule's length is counted from the run.
        monitors: it steps on a metric (`scheduler.monitor`).
        cycles_momentum: it may cycle the optimizer's momentum (`cycle_momentum`).
        reaches_zero_lr: whether, given the constructor arguments, the schedule ends at lr 0.
    """

    interval: Interval = "epoch"
    no_warmup: str | None = None
    run_sized: tuple[str, ...] = ()
    fill: Fill | None = None
    sized_from_run: Callable[[Mapping], bool] = lambda kwargs: False
    monitors: bool = False
    cycles_momentum: bool = False
    reaches_zero_lr: Callable[[Mapping], bool] = lambda kwargs: False


SCHEDULERS: dict[type, SchedulerInfo] = {
    lr_scheduler.CosineAnnealingLR: SchedulerInfo(
        run_sized=("T_max",),
        fill=_cosine_fill,
        sized_from_run=lambda kwargs: kwargs.get("T_max") is None,
        reaches_zero_lr=lambda kwargs: not kwargs.get("eta_min"),
    ),
    lr_scheduler.OneCycleLR: SchedulerInfo(
        interval="step",
        no_warmup="OneCycleLR warms up itself over pct_start",
        run_sized=("total_steps", "max_lr", "cycle_momentum"),
        fill=_onecycle_fill,
        sized_from_run=lambda kwargs: kwargs.get("total_steps") is None and kwargs.get("epochs") is None,
        cycles_momentum=True,
    ),
    lr_scheduler.ReduceLROnPlateau: SchedulerInfo(
        no_warmup="ReduceLROnPlateau steps on a metric, which SequentialLR cannot pass on",
        run_sized=("mode",),
        fill=_plateau_fill,
        monitors=True,
    ),
}


def scheduler_info(cls: type) -> SchedulerInfo:
    """The row of `cls` or of its nearest listed base class; the defaults for any other scheduler."""
    for base in cls.__mro__:
        if base in SCHEDULERS:
            return SCHEDULERS[base]
    return SchedulerInfo()
