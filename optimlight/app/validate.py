"""Every config value checked before anything heavy is built: one `ConfigError` line per mistake.

Each group's checks live beside the code that reads the group; this module only runs them in order.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from optimlight.app.data import check_data_args
from optimlight.app.ema import check_averaging
from optimlight.app.loggers import check_logger
from optimlight.app.module import LOGGED_METRICS
from optimlight.app.targets import check_targets
from optimlight.app.tune import check_tune
from optimlight.plugin import ConfigError, check_optimizer, check_scheduler
from optimlight.plugin.optimizers import check_model

PRECISIONS = ("64-true", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", 64, 32)


def check_trainer(cfg: DictConfig) -> None:
    precision = cfg.get("precision", "32-true")
    if precision not in PRECISIONS:
        raise ConfigError("trainer.precision", precision, f"one of {', '.join(map(str, PRECISIONS))}")
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


MATMUL_PRECISIONS = ("highest", "high", "medium")


def check_speed(cfg: DictConfig | None) -> None:
    cfg = cfg or {}
    threads, matmul = cfg.get("num_threads"), cfg.get("float32_matmul_precision")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError("speed.num_threads", threads, "a positive integer or null")
    if matmul is not None and matmul not in MATMUL_PRECISIONS:
        raise ConfigError("speed.float32_matmul_precision", matmul, f"one of {', '.join(MATMUL_PRECISIONS)} or null")


def validate(cfg: DictConfig) -> None:
    """Raise the first `ConfigError` found in the composed config."""
    data = cfg.data
    check_data_args(batch_size=data.batch_size, val_size=data.val_size, num_workers=data.num_workers, loader=data.loader)
    check_trainer(cfg.trainer)
    check_speed(cfg.get("speed"))
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    check_optimizer(
        optimizer,
        precision=str(cfg.trainer.get("precision", "32-true")),
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
    )
    check_model(optimizer, instantiate(cfg.model))  # a network the optimizer cannot train (SparseAdam's)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    check_scheduler(scheduler, optimizer, trainer=cfg.trainer, logged_metrics=LOGGED_METRICS)
    check_averaging(cfg.callbacks or {})
    check_tune(cfg.get("tune"))
    check_logger(cfg.get("logger"))
    check_targets(list((cfg.get("report") or {}).get("targets") or []))
