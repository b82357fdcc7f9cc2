"""Every config value checked before anything heavy is built: one `ConfigError` line per mistake.

Each group's checks live beside the code that reads the group; this module only runs them in order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from optimlight.app.build import PRECISIONS, precision_name
from optimlight.app.ema import check_averaging
from optimlight.app.loggers import check_logger
from optimlight.app.module import LOGGED_METRICS
from optimlight.app.targets import check_targets
from optimlight.app.tune import check_tune
from optimlight.plugin import ConfigError, check_optimizer, check_scheduler
from optimlight.plugin.nodes import import_object
from optimlight.plugin.optimizers import optimizer_class
from optimlight.plugin.registry import optimizer_info


def check_trainer(cfg: DictConfig) -> None:
    precision = cfg.get("precision", "32-true")
    if precision_name(precision) not in PRECISIONS:
        raise ConfigError("trainer.precision", precision, f"one of {', '.join(PRECISIONS)} (or a short form: 32, 16, bf16)")
    devices, accelerator = cfg.get("devices", 1), str(cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError("trainer.accelerator", accelerator, "cpu or auto (this machine has no GPU)")
        if isinstance(devices, int) and devices > available:
            raise ConfigError("trainer.devices", devices, f"at most the {available} GPU(s) this machine has (-1: all)")
    max_epochs = cfg.get("max_epochs")
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < -1 or max_epochs == 0):
        raise ConfigError("trainer.max_epochs", max_epochs, "a positive integer (or -1 for no epoch limit)")


def check_module(cfg: DictConfig) -> None:
    """`module` settings that depend on the optimizer."""
    if not (cfg.get("module") or {}).get("skip_nonfinite_loss"):
        return
    cls = optimizer_class(cfg.optimizer)
    if optimizer_info(cls).closure:
        allowed = (
            f"false with {cls.__name__}: it evaluates the loss several times within one step (its line search), "
            "so one bad batch cannot be skipped; callbacks.nonfinite_guard stops the run at a NaN loss instead"
        )
        raise ConfigError("module.skip_nonfinite_loss", True, allowed)


def check_ckpt_path(ckpt_path: str | None) -> None:
    """A resume point Lightning would look for only once the run has started."""
    if ckpt_path is not None and ckpt_path != "last" and not os.path.isfile(ckpt_path):
        raise ConfigError(
            "ckpt_path", ckpt_path, "null, last (the run dir's checkpoints/last.ckpt) or an existing checkpoint file"
        )


def logged_metrics(callbacks: Mapping) -> dict[str, str]:
    """What the run logs through `self.log` while fitting, and when: the module's metrics and those of the
    configured callbacks that log their own (a class's `LOGGED_METRICS`, e.g. EMA's val/acc_ema)."""
    metrics = dict(LOGGED_METRICS)
    for key, node in callbacks.items():
        if node and node.get("_target_"):
            metrics.update(getattr(import_object(node["_target_"], f"callbacks.{key}._target_"), "LOGGED_METRICS", {}))
    return metrics


def check_monitors(cfg: DictConfig, metrics: Mapping[str, str]) -> None:
    """Every `monitor` (the scheduler's, each callback's) is null or a metric the run logs: Lightning only warns
    about a missing one, once training runs, and the checkpoint or early stop then never acts."""
    nodes = {"scheduler": cfg.scheduler, **{f"callbacks.{key}": node for key, node in (cfg.callbacks or {}).items()}}
    for path, node in nodes.items():
        monitor = (node or {}).get("monitor")
        if monitor is not None and monitor not in metrics:
            raise ConfigError(f"{path}.monitor", monitor, f"null or a metric the run logs: {', '.join(metrics)}")


def validate(cfg: DictConfig) -> None:
    """Raise the first `ConfigError` found in the composed config."""
    check_trainer(cfg.trainer)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    check_optimizer(
        optimizer,
        precision=str(cfg.trainer.get("precision", "32-true")),
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
    )
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    metrics = logged_metrics(cfg.callbacks or {})
    check_scheduler(scheduler, optimizer, trainer=cfg.trainer, logged_metrics=metrics)
    check_monitors(cfg, metrics)
    check_module(cfg)
    check_ckpt_path(cfg.get("ckpt_path"))
    check_averaging(cfg.callbacks or {})
    check_tune(cfg.get("tune"))
    check_logger(cfg.get("logger"))
    check_targets(list((cfg.get("report") or {}).get("targets") or []))
