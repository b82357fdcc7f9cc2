"""The learning-rate scheduler of a config node, wrapped in Lightning's scheduler config.

A node is `{_target_: torch.optim.lr_scheduler.X, <constructor args>, interval, frequency, monitor, strict, name}`;
`_target_: null` means no scheduler. Constructor arguments left null that depend on the run's length are filled
from the trainer by one small function per scheduler class (`RUN_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from optimlight.errors import ConfigError
from optimlight.optim import constructor_args, import_object, to_dict

#: Keys of a scheduler node that go to Lightning's scheduler config rather than to the constructor.
LIGHTNING_KEYS = ("interval", "frequency", "monitor", "strict", "name")
INTERVALS = ("epoch", "step")


def run_length(trainer, interval: str) -> int:
    """How many times a scheduler with this interval steps in the whole run (Lightning's own estimate)."""
    if interval == "step":
        total = trainer.estimated_stepping_batches
    else:
        total = trainer.max_epochs
    if total is None or total < 0 or total == float("inf"):
        raise ConfigError(
            "trainer.max_epochs", trainer.max_epochs, "a finite run length (set trainer.max_epochs or trainer.max_steps)"
        )
    return int(total)


def _cosine_defaults(kwargs: dict, optimizer, trainer, interval: str) -> None:
    if kwargs.get("T_max") is None:
        kwargs["T_max"] = run_length(trainer, interval)


#: scheduler class name -> fills run-dependent arguments in place
RUN_DEFAULTS: dict[str, Callable] = {"CosineAnnealingLR": _cosine_defaults}


def scheduler_kwargs(cfg: Mapping, cls: type) -> dict:
    allowed = constructor_args(cls)
    kwargs = {}
    for key, value in cfg.items():
        if key == "_target_" or key in LIGHTNING_KEYS:
            continue
        if key not in allowed or key == "optimizer":
            raise ConfigError(f"scheduler.{key}", value, f"an argument of {cls.__name__}: {', '.join(allowed)}")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


def lightning_settings(cfg: Mapping) -> dict:
    """Lightning's scheduler settings of the node, checked; only the keys that are set are passed on."""
    settings = {key: cfg[key] for key in LIGHTNING_KEYS if cfg.get(key) is not None}
    settings.setdefault("interval", "epoch")
    if settings["interval"] not in INTERVALS:
        raise ConfigError("scheduler.interval", settings["interval"], f"one of {', '.join(INTERVALS)}")
    frequency = settings.get("frequency", 1)
    if not isinstance(frequency, int) or frequency < 1:
        raise ConfigError("scheduler.frequency", frequency, "a positive integer")
    return settings


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping | None, trainer) -> dict | None:
    """Lightning's `lr_scheduler` config for the node, or None when the node names no scheduler."""
    cfg = to_dict(cfg)
    if not cfg.get("_target_"):
        return None
    cls = import_object(cfg["_target_"], "scheduler._target_")
    settings = lightning_settings(cfg)
    kwargs = scheduler_kwargs(cfg, cls)
    fill = RUN_DEFAULTS.get(cls.__name__)
    if fill is not None:
        fill(kwargs, optimizer, trainer, settings["interval"])
    return {"scheduler": cls(optimizer, **kwargs), **settings}


def check_scheduler(cfg: Mapping | None, optimizer_cfg: Mapping | None = None) -> None:
    """Refuse a scheduler node that cannot work, before the run builds anything."""
    cfg = to_dict(cfg)
    if not cfg.get("_target_"):
        return
    cls = import_object(cfg["_target_"], "scheduler._target_")
    lightning_settings(cfg)
    scheduler_kwargs(cfg, cls)
