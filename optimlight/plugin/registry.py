"""What the builders and checks must know of each optimizer and scheduler class beyond its constructor's
signature, as one table each (the shape of timm's `OptimInfo`).

Adding an optimizer torch ships is one YAML file in `conf/optimizer/`; a class with special needs (a closure,
no parameter groups, no mixed precision, train/eval modes) also gets one row: `register(cls, OptimizerInfo(...))`,
for a user's own class as for optimlight's. A class without a row (a subclass of none listed) is described from
its signature by `optimizer_info`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import lr_scheduler

from optimlight.plugin import muon
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import constructor_defaults, is_number
from optimlight.plugin.wsd import StableDecayLR

Interval = Literal["epoch", "step"]
#: A value rule: (test of a value, what is allowed).
Rule = tuple[Callable[[Any], bool], str]
#: `groups(model, constructor kwargs, no_decay)`: an optimizer's parameter groups, built by the class's own rule.
Groups = Callable[[nn.Module, Mapping[str, Any], Iterable[str]], list[dict]]


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
        groups: builds the parameter groups itself (Muon's routing) instead of the decay/no_decay split.
        nested: constructor arguments that are the arguments of another optimizer class (MuonAdamW's `adamw`),
            checked against that class's signature.
        sparse_only: it updates sparse gradients only (nn.Embedding(sparse=True)), so a model without them is
            refused.
        no_scheduler: why it takes no LR scheduler; None when it does.
        rules: value rules that replace the shared ones for this class (argument -> rule).
    """

    closure: bool = False
    param_groups: bool = True
    mixed_precision: bool = True
    momentum: Literal["betas", "momentum"] | None = None
    train_eval: bool = False
    lr_must_stay_positive: bool = False
    groups: Groups | None = None
    nested: Mapping[str, type] = field(default_factory=dict)
    sparse_only: bool = False
    no_scheduler: str | None = None
    rules: Mapping[str, Rule] = field(default_factory=dict)


def _adafactor_eps(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and (value[0] is None or (is_number(value[0]) and value[0] > 0))
        and is_number(value[1])
        and value[1] > 0
    )


def _rprop_pair(low_below_one: bool) -> Callable[[Any], bool]:
    def ok(value: object) -> bool:
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)):
            return False
        low, high = value
        return 0 < low < 1 < high if low_below_one else 0 < low <= high

    return ok


SCHEDULE_FREE = OptimizerInfo(
    train_eval=True,
    no_scheduler="a schedule-free optimizer replaces the schedule (its warmup is optimizer.warmup_steps)",
)


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
    # beyond the nine: the rest of torch.optim, and the combinations this plugin builds
    torch.optim.RAdam: OptimizerInfo(momentum="betas"),
    torch.optim.Adamax: OptimizerInfo(momentum="betas"),
    torch.optim.Rprop: OptimizerInfo(
        rules={
            "etas": (_rprop_pair(True), "two numbers 0 < etaminus < 1 < etaplus, e.g. [0.5, 1.2]"),
            "step_sizes": (_rprop_pair(False), "two numbers 0 < min_step <= max_step, e.g. [1e-6, 50]"),
        }
    ),
    torch.optim.Adafactor: OptimizerInfo(
        rules={"eps": (_adafactor_eps, "two numbers [eps1, eps2]: eps1 null or > 0, eps2 > 0, e.g. [null, 0.001]")}
    ),
    torch.optim.SparseAdam: OptimizerInfo(momentum="betas", sparse_only=True),
    muon.MuonAdamW: OptimizerInfo(momentum="momentum", groups=muon.groups_of, nested={"adamw": torch.optim.AdamW}),
}
#: Classes of optional packages, by `module.Class` where they are defined (importing them would need the package).
OPTIONAL_OPTIMIZERS: dict[str, OptimizerInfo] = {
    "schedulefree.adamw_schedulefree.AdamWScheduleFree": SCHEDULE_FREE,
    "schedulefree.sgd_schedulefree.SGDScheduleFree": SCHEDULE_FREE,
    "schedulefree.radam_schedulefree.RAdamScheduleFree": SCHEDULE_FREE,
}
#: Top-level package of an optional optimizer -> the extra of this project that installs it.
EXTRAS = {"schedulefree": "extra-optimizers", "lion_pytorch": "extra-optimizers"}


def optimizer_info(cls: type) -> OptimizerInfo:
    """The row of `cls` or of its nearest listed base class; else what its signature says (betas, momentum)."""
    for base in cls.__mro__:
        if base in OPTIMIZERS:
            return OPTIMIZERS[base]
        if f"{base.__module__}.{base.__qualname__}" in OPTIONAL_OPTIMIZERS:
            return OPTIONAL_OPTIMIZERS[f"{base.__module__}.{base.__qualname__}"]
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


def _run_sized(key: str) -> Fill:
    """A fill that sets `key`, when null, to the run's scheduler steps: a decaying schedule reaches its floor after
    the run's last epoch (or step), so every epoch trains at an lr above the floor."""

    def fill(kwargs: dict, optimizer: torch.optim.Optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
        if kwargs.get(key) is None:
            kwargs[key] = remaining()

    return fill


#: MultiStepLR's milestones when null: the lr drops at these fractions of the run (the ResNet-style 50%/75%).
MILESTONE_FRACTIONS = (0.5, 0.75)


def _multistep_fill(kwargs: dict, optimizer: torch.optim.Optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("milestones") is None:
        total = remaining()
        kwargs["milestones"] = sorted({max(1, round(f * total)) for f in MILESTONE_FRACTIONS})


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
        reaches_zero_lr: whether, given the constructor arguments, the schedule reaches lr 0 within the run.
        floor: the argument that sets the lr the schedule decays to (named when reaches_zero_lr refuses it).
    """

    interval: Interval = "epoch"
    no_warmup: str | None = None
    run_sized: tuple[str, ...] = ()
    fill: Fill | None = None
    sized_from_run: Callable[[Mapping], bool] = lambda kwargs: False
    monitors: bool = False
    cycles_momentum: bool = False
    reaches_zero_lr: Callable[[Mapping], bool] = lambda kwargs: False
    floor: str = "eta_min"


SCHEDULERS: dict[type, SchedulerInfo] = {
    lr_scheduler.CosineAnnealingLR: SchedulerInfo(
        run_sized=("T_max",),
        fill=_run_sized("T_max"),
        sized_from_run=lambda kwargs: kwargs.get("T_max") is None,
        # sized from the run, eta_min comes after the last step; a set T_max reaches it within the run
        reaches_zero_lr=lambda kwargs: not kwargs.get("eta_min") and kwargs.get("T_max") is not None,
    ),
    lr_scheduler.LinearLR: SchedulerInfo(
        run_sized=("total_iters",),
        fill=_run_sized("total_iters"),
        sized_from_run=lambda kwargs: kwargs.get("total_iters") is None,
        reaches_zero_lr=lambda kwargs: not kwargs.get("end_factor") and kwargs.get("total_iters") is not None,
        floor="end_factor",
    ),
    StableDecayLR: SchedulerInfo(
        run_sized=("total_steps",),
        fill=_run_sized("total_steps"),
        sized_from_run=lambda kwargs: kwargs.get("total_steps") is None,
        reaches_zero_lr=lambda kwargs: not kwargs.get("end_factor") and kwargs.get("total_steps") is not None,
        floor="end_factor",
    ),
    lr_scheduler.MultiStepLR: SchedulerInfo(
        run_sized=("milestones",),
        fill=_multistep_fill,
        sized_from_run=lambda kwargs: kwargs.get("milestones") is None,
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


def register(cls: type, info: OptimizerInfo | SchedulerInfo) -> None:
    """Give an optimizer or scheduler class its row: what the builders and checks must know beyond its signature.

    A class without a row is described from its signature; a subclass uses its nearest listed base's row. A row
    registered for a class already listed replaces it. Register before building (e.g. beside the class).

    Args:
        cls: the optimizer (`torch.optim.Optimizer` subclass) or scheduler class a config's `_target_` names.
        info: its row: an `OptimizerInfo` for an optimizer, a `SchedulerInfo` for a scheduler.

    Raises:
        TypeError: `cls` is not a class, or `info` is neither row type.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register() takes a class, not {cls!r}")
    if isinstance(info, OptimizerInfo):
        OPTIMIZERS[cls] = info
    elif isinstance(info, SchedulerInfo):
        SCHEDULERS[cls] = info
    else:
        raise TypeError(f"register() takes an OptimizerInfo or a SchedulerInfo, not {type(info).__name__}")


def scheduler_info(cls: type) -> SchedulerInfo:
    """The row of `cls` or of its nearest listed base class; the defaults for any other scheduler."""
    for base in cls.__mro__:
        if base in SCHEDULERS:
            return SCHEDULERS[base]
    return SchedulerInfo()
