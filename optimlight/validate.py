"""Every config value checked before anything heavy is built: one `ConfigError` line per mistake.

Each group's checks live beside the code that reads the group; this module only runs them in order.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from optimlight.data import check_data_args
from optimlight.ema import check_averaging
from optimlight.errors import ConfigError
from optimlight.loggers import check_logger
from optimlight.module import LOGGED_METRICS
from optimlight.optim import check_optimizer
from optimlight.schedulers import check_scheduler
from optimlight.tune import check_tune

PRECISIONS = ("64-true", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", 64, 32)


def check_trainer(cfg: DictConfig) -> None:
    precision = cfg.get("precision", "32-true")
    if precision not in PRECISIONS:
        raise ConfigError("trainer.precision", precision, f"one of {', '.join(map(str, PRECISIONS))}")
    max_epochs = cfg.get("max_epochs")
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < -1 or max_epochs == 0):
        raise ConfigError("trainer.max_epochs", max_epochs, "a positive integer (or -1 for no epoch limit)")


def validate(cfg: DictConfig) -> None:
    """Raise the first `ConfigError` found in the composed config."""
    data = cfg.data
    check_data_args(
        batch_size=data.batch_size, val_size=data.val_size, num_workers=data.num_workers, loader=data.loader
    )
    check_trainer(cfg.trainer)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    check_optimizer(optimizer, precision=str(cfg.trainer.get("precision", "32-true")))
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    check_scheduler(scheduler, optimizer, trainer=cfg.trainer, logged_metrics=LOGGED_METRICS)
    check_averaging(cfg.callbacks or {})
    check_tune(cfg.get("tune"))
    check_logger(cfg.get("logger"))
