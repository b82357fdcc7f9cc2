"""The learning-rate scheduler of a config node, wrapped in Lightning's scheduler config.

A node is `{_target_: torch.optim.lr_scheduler.X, <constructor args>, interval, frequency, monitor, strict, name,
warmup_steps, warmup_epochs, warmup_start_factor}`; `_target_: null` means no scheduler. Constructor arguments
left null that depend on the run are filled by one small function per scheduler class (`RUN_DEFAULTS`): the run's
length from the trainer, OneCycleLR's peak from the optimizer, ReduceLROnPlateau's mode from the monitored metric.

`trainer` is a Lightning Trainer or anything with the same four attributes (`max_epochs`,
`estimated_stepping_batches`, `num_training_batches`, `accumulate_grad_batches`), such as the preview's plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch.optim.lr_scheduler import LinearLR, SequentialLR

from optimlight.errors import ConfigError
from optimlight.optim import constructor_args, import_object, to_dict

#: Keys of a scheduler node that go to Lightning's scheduler config rather than to the constructor.
LIGHTNING_KEYS = ("interval", "frequency", "monitor", "strict", "name")
#: Keys of a scheduler node that put a linear warmup in front of the scheduler.
WARMUP_KEYS = ("warmup_steps", "warmup_epochs", "warmup_start_factor")
INTERVALS = ("epoch", "step")
#: The warmup's first learning rate as a fraction of the optimizer's, when the node does not say.
WARMUP_START_FACTOR = 0.01
#: Lightning steps every scheduler once per epoch unless told otherwise; these are defined per optimizer step.
DEFAULT_INTERVALS = {"OneCycleLR": "step"}
#: Schedulers that take no warmup in front, and why.
NO_WARMUP = {
    "OneCycleLR": "OneCycleLR warms up itself over pct_start",
    "ReduceLROnPlateau": "ReduceLROnPlateau steps on a metric, which SequentialLR cannot pass on",
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Argument -> (test, what is allowed), checked wherever a node sets it (null means "the default").
VALUE_RULES: dict[str, tuple[Callable, str]] = {
    "step_size": (lambda v: _integer(v) and v > 0, "a positive integer"),
    "gamma": (lambda v: _number(v) and v > 0, "a number > 0"),
    "T_max": (lambda v: _integer(v) and v > 0, "a positive integer (or null: the run's length)"),
    "eta_min": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "max_lr": (lambda v: _number(v) and v > 0, "a number > 0 (or null: the optimizer's lr)"),
    "total_steps": (lambda v: _integer(v) and v > 0, "a positive integer (or null: the run's length)"),
    "pct_start": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "anneal_strategy": (lambda v: v in ("cos", "linear"), "cos or linear"),
    "div_factor": (lambda v: _number(v) and v > 0, "a number > 0"),
    "final_div_factor": (lambda v: _number(v) and v > 0, "a number > 0"),
    "base_momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "max_momentum": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "mode": (lambda v: v in ("min", "max"), "min or max (or null: from the monitored metric)"),
    "factor": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "patience": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "threshold": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "threshold_mode": (lambda v: v in ("rel", "abs"), "rel or abs"),
    "cooldown": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "min_lr": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "warmup_steps": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "warmup_epochs": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "warmup_start_factor": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
}


def steps_per_epoch(trainer) -> int:
    """Optimizer steps in one epoch: Lightning steps every accumulate_grad_batches-th batch and on the last one."""
    # a Trainer loads its training data (counting num_training_batches) when asked for estimated_stepping_batches
    if trainer.max_epochs == -1 or math.isinf(trainer.estimated_stepping_batches):
        raise ConfigError("trainer.max_epochs", trainer.max_epochs, "a finite number of epochs")
    return math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)


def run_length(trainer, interval: str) -> int:
    """How many epochs or optimizer steps the whole run has (Lightning's own estimate; max_steps may end it early)."""
    steps = trainer.estimated_stepping_batches
    if steps is None or steps < 0 or math.isinf(steps):
        allowed = "a finite run length (set trainer.max_epochs or trainer.max_steps)"
        raise ConfigError("trainer.max_epochs", trainer.max_epochs, allowed)
    return int(steps) if interval == "step" else math.ceil(steps / steps_per_epoch(trainer))


def plateau_mode(monitor: str | None) -> str:
    """`min` for a loss, `max` for an accuracy: the direction in which the monitored metric improves."""
    name = str(monitor).rsplit("/", 1)[-1]
    if "loss" in name:
        return "min"
    if "acc" in name:
        return "max"
    raise ConfigError("scheduler.mode", None, f"min or max: monitor={monitor!r} names neither a loss nor an accuracy")


def cycles_momentum(optimizer_defaults: Mapping) -> bool:
    """Whether OneCycleLR can cycle this optimizer's momentum (Adam's beta1, or SGD's momentum when it is on)."""
    return "betas" in optimizer_defaults or (optimizer_defaults.get("momentum") or 0) > 0


def _needs_length(name: str, kwargs: Mapping) -> bool:
    """Whether the schedule's length is left to the run (CosineAnnealingLR's T_max, OneCycleLR's total_steps)."""
    if name == "CosineAnnealingLR":
        return kwargs.get("T_max") is None
    if name == "OneCycleLR":
        return kwargs.get("total_steps") is None and kwargs.get("epochs") is None
    return False


def _cosine_defaults(kwargs: dict, optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if _needs_length("CosineAnnealingLR", kwargs):
        kwargs["T_max"] = max(1, remaining() - 1)  # the last epoch (or step) runs at eta_min


def _onecycle_defaults(kwargs: dict, optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("max_lr") is None:
        kwargs["max_lr"] = [group["lr"] for group in optimizer.param_groups]
    if _needs_length("OneCycleLR", kwargs):
        kwargs["total_steps"] = remaining()
    if kwargs.get("cycle_momentum") is None:
        kwargs["cycle_momentum"] = cycles_momentum(optimizer.defaults)


def _plateau_defaults(kwargs: dict, optimizer, settings: Mapping, remaining: Callable[[], int]) -> None:
    if kwargs.get("mode") is None:
        kwargs["mode"] = plateau_mode(settings.get("monitor"))


#: scheduler class name -> fills null arguments in place from the optimizer, the Lightning settings and the
#: number of scheduler steps left after warmup
RUN_DEFAULTS: dict[str, Callable] = {
    "CosineAnnealingLR": _cosine_defaults,
    "OneCycleLR": _onecycle_defaults,
    "ReduceLROnPlateau": _plateau_defaults,
}


def scheduler_kwargs(cfg: Mapping, cls: type) -> dict:
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
    settings.setdefault("interval", DEFAULT_INTERVALS.get(cls.__name__, "epoch"))
    if settings["interval"] not in INTERVALS:
        raise ConfigError("scheduler.interval", settings["interval"], f"one of {', '.join(INTERVALS)}")
    frequency = settings.get("frequency", 1)
    if not _integer(frequency) or frequency < 1:
        raise ConfigError("scheduler.frequency", frequency, "a positive integer")
    return settings


def warmup_setting(cfg: Mapping) -> tuple[str, int]:
    """The warmup key the node sets and its value (`scheduler.warmup_steps`, 0 when there is no warmup)."""
    if cfg.get("warmup_epochs"):
        return "scheduler.warmup_epochs", cfg["warmup_epochs"]
    return "scheduler.warmup_steps", cfg.get("warmup_steps") or 0


def warmup_length(cfg: Mapping, interval: str, trainer) -> int:
    """Warmup in scheduler steps: warmup_epochs counts epochs, or their optimizer steps when interval=step."""
    key, value = warmup_setting(cfg)
    if key == "scheduler.warmup_epochs" and interval == "step":
        return value * steps_per_epoch(trainer)
    return value


def with_warmup(optimizer, scheduler, warmup: int, start_factor: float) -> SequentialLR:
    """Linear warmup from start_factor * lr to lr over `warmup` scheduler steps, then `scheduler` from its start."""
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping | None, trainer) -> dict | None:
    """Lightning's `lr_scheduler` config for the node, or None when the node names no scheduler."""
    cfg = to_dict(cfg)
    if not cfg.get("_target_"):
        return None
    cls = import_object(cfg["_target_"], "scheduler._target_")
    settings = lightning_settings(cfg, cls)
    kwargs = scheduler_kwargs(cfg, cls)
    warmup = warmup_length(cfg, settings["interval"], trainer)

    def remaining() -> int:
        total = run_length(trainer, settings["interval"])
        if warmup >= total:
            raise ConfigError(*warmup_setting(cfg), f"fewer than the run's {total} {settings['interval']}s")
        return total - warmup

    fill = RUN_DEFAULTS.get(cls.__name__)
    if fill is not None:
        fill(kwargs, optimizer, settings, remaining)
    scheduler = cls(optimizer, **kwargs)
    if warmup:
        scheduler = with_warmup(optimizer, scheduler, warmup, cfg.get("warmup_start_factor") or WARMUP_START_FACTOR)
    return {"scheduler": scheduler, **settings}


def check_values(cfg: Mapping) -> None:
    for key, value in cfg.items():
        rule = VALUE_RULES.get(key)
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(f"scheduler.{key}", value, rule[1])


def check_warmup(cfg: Mapping, name: str, interval: str, trainer: Mapping | None) -> None:
    key, value = warmup_setting(cfg)
    if not value:
        return
    if name in NO_WARMUP:
        raise ConfigError(key, value, f"0 ({NO_WARMUP[name]})")
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


def check_monitor(monitor, logged_metrics) -> None:
    if logged_metrics is not None and monitor not in logged_metrics:
        raise ConfigError("scheduler.monitor", monitor, f"a metric the module logs: {', '.join(logged_metrics)}")
    if monitor is None:
        raise ConfigError("scheduler.monitor", monitor, "the metric ReduceLROnPlateau watches, e.g. val/loss")


def check_cycle_momentum(cfg: Mapping, optimizer_cfg: Mapping) -> None:
    """Refuse `cycle_momentum: true` where cycling would switch momentum on (SGD momentum 0, RMSprop, Adagrad)."""
    if cfg.get("cycle_momentum") is not True or not optimizer_cfg.get("_target_"):
        return
    cls = import_object(optimizer_cfg["_target_"], "optimizer._target_")
    defaults = {name: p.default for name, p in constructor_args(cls).items()} | dict(optimizer_cfg)
    if not cycles_momentum(defaults):
        allowed = f"false or null: {cls.__name__} runs without momentum (or give it momentum)"
        raise ConfigError("scheduler.cycle_momentum", True, allowed)


def check_scheduler(
    cfg: Mapping | None,
    optimizer_cfg: Mapping | None = None,
    trainer: Mapping | None = None,
    logged_metrics: tuple[str, ...] | None = None,
) -> None:
    """Refuse a scheduler node that cannot work, before the run builds anything.

    `trainer` (the trainer node: max_epochs, max_steps) and `logged_metrics` (what the module logs while fitting)
    enable the checks that need them.
    """
    cfg = to_dict(cfg)
    if not cfg.get("_target_"):
        extra = {key: value for key, value in cfg.items() if key != "_target_" and value}
        if extra:
            key, value = next(iter(extra.items()))
            raise ConfigError(f"scheduler.{key}", value, "nothing: scheduler=none takes no settings (pick a scheduler)")
        return
    cls = import_object(cfg["_target_"], "scheduler._target_")
    name = cls.__name__
    settings = lightning_settings(cfg, cls)
    kwargs = scheduler_kwargs(cfg, cls)
    check_values(cfg)
    check_warmup(cfg, name, settings["interval"], trainer)
    if name == "ReduceLROnPlateau":
        check_monitor(settings.get("monitor"), logged_metrics)
        if kwargs.get("mode") is None:
            plateau_mode(settings["monitor"])  # raises when the metric's direction cannot be told
    if name == "OneCycleLR":
        check_cycle_momentum(cfg, optimizer_cfg or {})
    if name == "CosineAnnealingLR" and not kwargs.get("eta_min") and "LBFGS" in str((optimizer_cfg or {}).get("_target_")):
        # the cosine's last epoch (or step) runs at eta_min, and LBFGS's line search divides by the step size
        raise ConfigError("scheduler.eta_min", kwargs.get("eta_min"), "a number > 0 with LBFGS (e.g. 1e-5)")
    sized, (warmup_key, warmup) = _needs_length(name, kwargs), warmup_setting(cfg)
    if (sized or warmup) and settings.get("frequency", 1) != 1:
        allowed = "1 when the schedule's length or warmup is counted from the run"
        raise ConfigError("scheduler.frequency", settings["frequency"], allowed)
    epochs_in_steps = warmup_key == "scheduler.warmup_epochs" and settings["interval"] == "step"
    if trainer is not None and (sized or epochs_in_steps):
        check_run_length(name, trainer, counts_epochs=epochs_in_steps or settings["interval"] == "epoch")
