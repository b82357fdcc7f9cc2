"""optimlight: compare optimizers and learning-rate schedules with Lightning, Hydra and Weights & Biases.

The plugin, usable from any LightningModule: `configure_optimizers(module, optimizer_cfg, scheduler_cfg)`,
and `param_groups(model, weight_decay, no_decay)` for the weight-decay grouping alone.
"""

from optimlight.optim import build_optimizer, no_decay_names, param_groups
from optimlight.plugin import configure_optimizers
from optimlight.schedulers import build_scheduler

__all__ = ["configure_optimizers", "param_groups", "no_decay_names", "build_optimizer", "build_scheduler"]
