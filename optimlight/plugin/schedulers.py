"""The learning-rate scheduler of a config node, wrapped in Lightning's scheduler config.

A node is `{_target_: torch.optim.lr_scheduler.X, <constructor args>, interval, frequency, monitor, strict, name,
warmup_steps, warmup_epochs, warmup_start_factor}`; `_target_: null` means no scheduler. Constructor arguments
left null that depend on the run are filled as the registry's row for the class says (`SchedulerInfo.fill`): the
run's length from the trainer, OneCycleLR's peak from the optimizer, ReduceLROnPlateau's mode from the metric.

`trainer` is a Lightning Trainer or anything with the same four attributes (`max_epochs`,
`estimated_stepping_batches`, `num_training_batches`, `accumulate_grad_batches`), such as the preview's plan.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LinearLR, SequentialLR

from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import (
    constructor_args,
    constructor_defaults,
    import_object,
    is_integer,
    is_number,
    to_dict,
)
from optimlight.plugin.optimizers import optimizer_class
from optimlight.plugin.registry import Interval, cycles_momentum, optimizer_info, plateau_mode, scheduler_info
from optimlight.plugin.wsd import DECAYS

#: Keys of a scheduler node that go to Lightning's scheduler config rather than to the constructor, with their types.
LIGHTNING_KEYS: dict[str, Any] = {
    "interval": Interval,
    "frequency": int,
    "monitor": str | None,
    "strict": bool,
    "name": str | None,
}
#: Keys of a scheduler node that put a linear warmup in front of the scheduler, with their types.
WARMUP_KEYS: dict[str, Any] = {"warmup_steps": int | None, "warmup_epochs": int | None, "warmup_start_factor": float | None}
INTERVALS: tuple[str, ...] = typing.get_args(Interval)
#: The warmup's first learning rate as a fraction of the optimizer's, when the node does not say.
WARMUP_START_FACTOR = 0.01

#: Argument -> (test, what is allowed), checked wherever a node sets it (null means "the default").
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "step_size": (lambda v: is_integer(v) and v > 0, "a positive integer"),
    "gamma": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "T_max": (lambda v: is_integer(v) and v > 0, "a positive integer (or null: the run's length)"),
    "eta_min": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "max_lr": (lambda v: is_number(v) and v > 0, "a number > 0 (or null: the optimizer's lr)"),
    "total_steps": (lambda v: is_integer(v) and v > 0, "a positive integer (or null: the run's length)"),
    "pct_start": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "anneal_strategy": (lambda v: v in ("cos", "linear"), "cos or linear"),
    "div_factor": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "final_div_factor": (lambda v: is_number(v) and v > 0, "a number > 0"),
    "base_momentum": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "max_momentum": (lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "mode": (lambda v: v in ("min", "max"), "min or max (or null: from the monitored metric)"),
    "factor": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "patience": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "threshold": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "threshold_mode": (lambda v: v in ("rel", "abs"), "rel or abs"),
    "cooldown": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "min_lr": (lambda v: is_number(v) and v >= 0, "a number >= 0"),
    "T_0": (lambda v: is_integer(v) and v > 0, "a positive integer"),
    "T_mult": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "milestones": (
        lambda v: isinstance(v, (list, tuple)) and all(is_integer(m) and m > 0 for m in v) and list(v) == sorted(set(v)),
        "increasing positive integers (or null: 50% and 75% of the run)",
    ),
    "start_factor": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "end_factor": (lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "total_iters": (lambda v: is_integer(v) and v > 0, "a positive integer (or null: the run's length)"),
    "decay_fraction": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "decay": (lambda v: v in DECAYS, f"one of {', '.join(DECAYS)}"),
    "warmup_steps": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "warmup_epochs": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "warmup_start_factor": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
}


def steps_per_epoch(trainer: Any) -> int:
    """Optimizer steps in one epoch: Lightning steps every accumulate_grad_batches-th batch and on the last one."""
    # a Trainer loads its training data (counting num_training_batches) when asked for estimated_stepping_batches
    if trainer.max_epochs == -1 or math.isinf(trainer.estimated_stepping_batches):
        raise ConfigError("trainer.max_epochs", trainer.max_epochs, "a finite number of epochs")
    return math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)


def run_length(trainer: Any, interval: str) -> int:
    """How many epochs or optimizer steps the whole run has (Lightning's own estimate; max_steps may end it early)."""
    steps = trainer.estimated_stepping_batches
    if steps is None or steps < 0 or math.isinf(steps):
        allowed = "a finite run length (set trainer.max_epochs or trainer.max_steps)"
        raise ConfigError("trainer.max_epochs", trainer.max_epochs, allowed)
    return int(steps) if interval == "step" else math.ceil(steps / steps_per_epoch(trainer))


def scheduler_kwargs(cfg: Mapping, cls: type) -> dict:
    """The constructor arguments of the node: unknown names refused, lists turned into tuples."""
    allowed = constructor_args(cls)
    kwargs = {}
    for key, value in cfg.items():
        if key == "_target_" or key in LIGHTNING_KEYS or key in WARMUP_KEYS:
            continue
        if key not in allowed or key == "optimizer":
            raise ConfigError(f"scheduler.{key}", value, f"an argument of {cls.__name__}: {', '.join(allowed)}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


def lightning_settings(cfg: Mapping, cls: type) -> dict:
    """Lightning's scheduler settings of the node, checked; only the keys that are set are passed on."""
    settings = {key: cfg[key] for key in LIGHTNING_KEYS if cfg.get(key) is not None}
    settings.setdefault("interval", scheduler_info(cls).interval)
    if settings["interval"] not in INTERVALS:
        raise ConfigError("scheduler.interval", settings["interval"], f"one of {', '.join(INTERVALS)}")
    frequency = settings.get("frequency", 1)
    if not is_integer(frequency) or frequency < 1:
        raise ConfigError("scheduler.frequency", frequency, "a positive integer")
    return settings


def warmup_setting(cfg: Mapping) -> tuple[str, int]:
    """The warmup key the node sets and its value (`scheduler.warmup_steps`, 0 when there is no warmup)."""
    if cfg.get("warmup_epochs"):
        return "scheduler.warmup_epochs", cfg["warmup_epochs"]
    return "scheduler.warmup_steps", cfg.get("warmup_steps") or 0


def warmup_length(cfg: Mapping, interval: str, trainer: Any) -> int:
    """Warmup in scheduler steps: warmup_epochs counts epochs, or their optimizer steps when interval=step."""
    key, value = warmup_setting(cfg)
    if key == "scheduler.warmup_epochs" and interval == "step":
        return value * steps_per_epoch(trainer)
    return value


def with_warmup(optimizer: torch.optim.Optimizer, scheduler: Any, warmup: int, start_factor: float) -> SequentialLR:
    """Linear warmup from start_factor * lr to lr over `warmup` scheduler steps, then `scheduler` from its start."""
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])


def scheduler_class(cfg: Mapping) -> type | None:
    """The class the node's `_target_` names; None for `_target_: null` (scheduler=none)."""
    target = cfg.get("_target_")
    return import_object(target, "scheduler._target_") if target else None


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping | None, trainer: Any) -> dict | None:
    """Lightning's `lr_scheduler` config for the node.

    Args:
        optimizer: the optimizer the schedule drives.
        cfg: the scheduler node (DictConfig or dict); None or `_target_: null` means no scheduler.
        trainer: the Lightning Trainer (or the preview's plan) whose run length sizes the schedule.

    Returns:
        `{"scheduler": ..., "interval": ..., ...}`, or None when the node names no scheduler.
    """
    cfg = to_dict(cfg)
    cls = scheduler_class(cfg)
    if cls is None:
        return None
    settings = lightning_settings(cfg, cls)
    kwargs = scheduler_kwargs(cfg, cls)
    warmup = warmup_length(cfg, settings["interval"], trainer)

    def remaining() -> int:
        total = run_length(trainer, settings["interval"])
        if warmup >= total:
            raise ConfigError(*warmup_setting(cfg), f"fewer than the run's {total} {settings['interval']}s")
        return total - warmup

    fill = scheduler_info(cls).fill
    if fill is not None:
        fill(kwargs, optimizer, settings, remaining)
    scheduler = cls(optimizer, **kwargs)
    if warmup:
        scheduler = with_warmup(optimizer, scheduler, warmup, cfg.get("warmup_start_factor") or WARMUP_START_FACTOR)
    return {"scheduler": scheduler, **settings}


def sized_schedule(scheduler: Mapping | None) -> str | None:
    """The scheduler's class name when its length or warmup is counted from the run's length, else None."""
    node = to_dict(scheduler)
    cls = scheduler_class(node)
    if cls is None:
        return None
    sized = scheduler_info(cls).sized_from_run(scheduler_kwargs(node, cls)) or warmup_setting(node)[1]
    return cls.__name__ if sized else None


def check_values(cfg: Mapping) -> None:
    for key, value in cfg.items():
        if is_number(value) and not math.isfinite(value):
            raise ConfigError(f"scheduler.{key}", value, "a finite number")
        rule = VALUE_RULES.get(key)
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(f"scheduler.{key}", value, rule[1])


def check_warmup(cfg: Mapping, cls: type, interval: str, trainer: Mapping | None) -> None:
    key, value = warmup_setting(cfg)
    if not value:
        return
    reason = scheduler_info(cls).no_warmup
    if reason:
        raise ConfigError(key, value, f"0 ({reason})")
    if cfg.get("warmup_steps") and cfg.get("warmup_epochs"):
        raise ConfigError(key, value, "0 when scheduler.warmup_steps is set (one or the other)")
    if key == "scheduler.warmup_steps" and interval == "epoch":
        raise ConfigError(key, value, "0 with interval=epoch (use scheduler.warmup_epochs, or interval=step)")
    max_epochs = max_epochs_of(trainer) if trainer is not None else -1
    if key == "scheduler.warmup_epochs" and max_epochs > 0 and value >= max_epochs:
        raise ConfigError(key, value, f"fewer than trainer.max_epochs={max_epochs}")


def max_epochs_of(trainer: Mapping) -> int:
    """The trainer node's epoch limit as Lightning reads it: null is 1000 epochs, or no limit beside max_steps."""
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None:
        return 1000 if trainer.get("max_steps", -1) == -1 else -1
    return max_epochs


def check_run_length(name: str, trainer: Mapping, counts_epochs: bool) -> None:
    """Refuse a run that never ends (or whose epochs are unknown) when the schedule is sized from it."""
    max_epochs, max_steps = max_epochs_of(trainer), trainer.get("max_steps", -1)
    if max_epochs == -1 and (max_steps in (-1, None) or counts_epochs):
        unit = "epochs" if counts_epochs else "steps"
        raise ConfigError("trainer.max_epochs", max_epochs, f"a finite number of {unit} to size {name} from")


#: When a metric the module logs exists: after every training epoch, or only after the epochs that validate.
TRAIN_EPOCH, VALIDATION = "train_epoch", "validation"


def check_monitor(settings: Mapping, trainer: Mapping | None, logged_metrics: Mapping[str, str] | None) -> None:
    """Refuse a monitor that will not exist when Lightning steps the scheduler (it would stop the run there).

    `logged_metrics` maps each name the module logs through `self.log` to when it exists (TRAIN_EPOCH or
    VALIDATION); metrics written straight to the loggers (`train/loss_step`) cannot be monitored at all.
    """
    monitor, interval, frequency = settings.get("monitor"), settings["interval"], settings.get("frequency", 1)
    if monitor is None:
        raise ConfigError("scheduler.monitor", monitor, "the metric ReduceLROnPlateau watches, e.g. val/loss")
    if logged_metrics is None:
        return
    if monitor not in logged_metrics:
        raise ConfigError("scheduler.monitor", monitor, f"a metric the module logs: {', '.join(logged_metrics)}")
    if interval != "epoch":
        allowed = f"epoch: {monitor} is logged once per epoch, so a scheduler stepping every {interval} has no value"
        raise ConfigError("scheduler.interval", interval, allowed)
    if logged_metrics[monitor] != VALIDATION or trainer is None:
        return
    if trainer.get("limit_val_batches") == 0:
        raise ConfigError("scheduler.monitor", monitor, "a train/ metric: trainer.limit_val_batches=0 never validates")
    every = trainer.get("check_val_every_n_epoch", 1)
    if isinstance(every, int) and every > 1 and frequency % every:
        allowed = (
            f"a multiple of trainer.check_val_every_n_epoch={every}: {monitor} exists only on the epochs that "
            "validate (or monitor a train/ metric)"
        )
        raise ConfigError("scheduler.frequency", frequency, allowed)


def check_cycle_momentum(cfg: Mapping, optimizer_cls: type, optimizer_cfg: Mapping) -> None:
    """Refuse `cycle_momentum: true` where cycling would switch momentum on (SGD momentum 0, RMSprop, Adagrad)."""
    if cfg.get("cycle_momentum") is not True:
        return
    if not cycles_momentum(optimizer_info(optimizer_cls), constructor_defaults(optimizer_cls) | dict(optimizer_cfg)):
        allowed = f"false or null: {optimizer_cls.__name__} runs without momentum (or give it momentum)"
        raise ConfigError("scheduler.cycle_momentum", True, allowed)


def check_lr_floor(kwargs: Mapping, cls: type, optimizer_cls: type) -> None:
    """Refuse a schedule that ends at lr 0 for an optimizer whose step fails there (L-BFGS's line search)."""
    if scheduler_info(cls).reaches_zero_lr(kwargs) and optimizer_info(optimizer_cls).lr_must_stay_positive:
        floor = scheduler_info(cls).floor
        allowed = f"a number > 0 with {optimizer_cls.__name__} (e.g. 1e-5): its step divides by the step size"
        raise ConfigError(f"scheduler.{floor}", kwargs.get(floor), allowed)


def check_takes_scheduler(cfg: Mapping, optimizer_cls: type) -> None:
    """Refuse a scheduler for an optimizer that replaces the schedule (schedule-free)."""
    reason = optimizer_info(optimizer_cls).no_scheduler
    if reason:
        raise ConfigError("scheduler._target_", cfg["_target_"], f"null (scheduler=none) with {optimizer_cls.__name__}: {reason}")


def check_scheduler(
    cfg: Mapping | None,
    optimizer_cfg: Mapping | None = None,
    trainer: Mapping | None = None,
    logged_metrics: Mapping[str, str] | None = None,
) -> None:
    """Refuse a scheduler node that cannot work, before the run builds anything.

    Args:
        cfg: the scheduler node.
        optimizer_cfg: the optimizer node, for the checks that depend on the optimizer.
        trainer: the trainer node (max_epochs, max_steps), for the checks that size the schedule.
        logged_metrics: what the module logs through `self.log` while fitting, and when (see `check_monitor`).

    Raises:
        ConfigError: naming the first bad key, its value and what is allowed.
    """
    cfg = to_dict(cfg)
    optimizer_cfg = optimizer_cfg or {}
    cls = scheduler_class(cfg)
    if cls is None:
        extra = {key: value for key, value in cfg.items() if key != "_target_" and value}
        if extra:
            key, value = next(iter(extra.items()))
            raise ConfigError(f"scheduler.{key}", value, "nothing: scheduler=none takes no settings (pick a scheduler)")
        return
    optimizer_cls = optimizer_class(optimizer_cfg) if optimizer_cfg.get("_target_") else None
    if optimizer_cls is not None:
        check_takes_scheduler(cfg, optimizer_cls)
    info = scheduler_info(cls)
    settings = lightning_settings(cfg, cls)
    kwargs = scheduler_kwargs(cfg, cls)
    check_values(cfg)
    check_warmup(cfg, cls, settings["interval"], trainer)
    if info.monitors:
        check_monitor(settings, trainer, logged_metrics)
        if kwargs.get("mode") is None:
            plateau_mode(settings["monitor"])  # raises when the metric's direction cannot be told
    if optimizer_cls is not None:
        if info.cycles_momentum:
            check_cycle_momentum(cfg, optimizer_cls, optimizer_cfg)
        check_lr_floor(kwargs, cls, optimizer_cls)
    sized, (warmup_key, warmup) = info.sized_from_run(kwargs), warmup_setting(cfg)
    if (sized or warmup) and settings.get("frequency", 1) != 1:
        allowed = "1 when the schedule's length or warmup is counted from the run"
        raise ConfigError("scheduler.frequency", settings["frequency"], allowed)
    epochs_in_steps = warmup_key == "scheduler.warmup_epochs" and settings["interval"] == "step"
    if trainer is not None and (sized or epochs_in_steps):
        check_run_length(cls.__name__, trainer, counts_epochs=epochs_in_steps or settings["interval"] == "epoch")
