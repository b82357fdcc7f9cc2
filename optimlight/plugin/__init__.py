"""The plugin layer: parameter groups, optimizer and scheduler builders, the per-class registry and config errors.

It imports torch and nothing of the app (data, models, Hydra's entry point), so any LightningModule can use it.
"""

from optimlight.plugin.configure import configure_optimizers
from optimlight.plugin.cuda_probe import skip_failing_nvml_check
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import build_optimizer, check_optimizer
from optimlight.plugin.param_groups import no_decay_names, param_groups
from optimlight.plugin.registry import OPTIMIZERS, SCHEDULERS, OptimizerInfo, SchedulerInfo, register
from optimlight.plugin.schedulers import build_scheduler, check_scheduler

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "ConfigError",
    "OptimizerInfo",
    "SchedulerInfo",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer",
    "check_scheduler",
    "configure_optimizers",
    "no_decay_names",
    "param_groups",
    "register",
    "skip_failing_nvml_check",
]
