"""optimlight: compare optimizers and learning-rate schedules with Lightning, Hydra and Weights & Biases.

Three layers, imports pointing down only: `optimlight.tools` (sweeps, comparisons, reports, preview, notebooks)
-> `optimlight.app` (the Fashion-MNIST training run) -> `optimlight.plugin` (what any LightningModule can use).
The plugin's public calls are re-exported here: `configure_optimizers(module, optimizer_cfg, scheduler_cfg)`,
`param_groups(model, weight_decay, no_decay)` for the weight-decay grouping alone, and `register(cls, info)` to
give an optimizer or scheduler class of one's own its registry row.
"""

from optimlight.plugin import (
    OPTIMIZERS,
    SCHEDULERS,
    ConfigError,
    build_optimizer,
    build_scheduler,
    configure_optimizers,
    no_decay_names,
    param_groups,
    register,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "ConfigError",
    "build_optimizer",
    "build_scheduler",
    "configure_optimizers",
    "no_decay_names",
    "param_groups",
    "register",
]
