"""The `tune` step before training: Lightning's learning-rate range test for the configured optimizer.

`tune=lr_find` runs `Tuner.lr_find` on the run's own module, data and trainer (the finder restores the initial
weights afterwards), writes `lr_find.json` and `lr_find.png` (loss vs LR, the suggestion marked in red) to the run
dir, logs the suggestion and the plot to the loggers and writes the `optimizer.lr=` override to the run's log.
With `tune.apply=true` training follows with the suggested LR; otherwise the run ends there, so a sweep over
optimizers gives one suggestion each at the cost of `num_training` steps per optimizer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.tuner import Tuner

from optimlight.app.overrides import override_key
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import to_dict

#: Keys of the `tune` node that go to `Tuner.lr_find` as they are.
LR_FIND_ARGS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
LR_FIND_MODES = ("exponential", "linear")
#: Lightning's suggestion skips the first 10 and the last point and needs two more to take a gradient.
MIN_NUM_TRAINING = 13

log = logging.getLogger(__name__)


def check_tune(node: Mapping | None) -> None:
    """Refuse a `tune` node that the range test would reject or that could not yield a suggestion."""
    cfg = to_dict(node)
    if not cfg:
        return
    min_lr, max_lr = cfg.get("min_lr"), cfg.get("max_lr")
    if not isinstance(min_lr, (int, float)) or min_lr <= 0:
        raise ConfigError("tune.min_lr", min_lr, "a positive number")
    if not isinstance(max_lr, (int, float)) or max_lr <= min_lr:
        raise ConfigError("tune.max_lr", max_lr, f"a number above tune.min_lr={min_lr}")
    steps = cfg.get("num_training")
    if not isinstance(steps, int) or steps < MIN_NUM_TRAINING:
        raise ConfigError("tune.num_training", steps, f"an integer >= {MIN_NUM_TRAINING}")
    if cfg.get("mode") not in LR_FIND_MODES:
        raise ConfigError("tune.mode", cfg.get("mode"), f"one of {', '.join(LR_FIND_MODES)}")
    threshold = cfg.get("early_stop_threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or threshold <= 1):
        raise ConfigError("tune.early_stop_threshold", threshold, "null or a number > 1")
    if not isinstance(cfg.get("apply"), bool):
        raise ConfigError("tune.apply", cfg.get("apply"), "true or false")


def rerun_command(lr_override: str) -> str:
    """This job's command line with the suggested `optimizer.lr=` override in place of the tuning step."""
    kept = [
        o
        for o in HydraConfig.get().overrides.task
        if override_key(o).split(".")[0] != "tune" and override_key(o) != "optimizer.lr"
    ]
    return " ".join(["python train.py", *kept, lr_override])


def save_lr_find(finder, out_dir: Path, record: dict) -> Path:
    """Write `lr_find.json` (the record plus every tested LR and its loss) and `lr_find.png`; return the PNG."""
    import matplotlib.pyplot as plt

    (out_dir / "lr_find.json").write_text(json.dumps({**record, **finder.results}, indent=2) + "\n")
    fig = finder.plot(suggest=True)
    suggestion = record["suggestion"]
    shown = "none" if suggestion is None else f"{suggestion:.3g}"
    fig.axes[0].set_title(f"{record['optimizer']}: suggested lr {shown}")
    png = out_dir / "lr_find.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png


def log_lr_find(loggers, suggestion: float, png: Path) -> None:
    """The suggestion as metric `tune/lr_suggestion`; the plot as image `tune/lr_find` where the logger takes images."""
    for logger in loggers:
        logger.log_metrics({"tune/lr_suggestion": suggestion}, step=0)
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key="tune/lr_find", images=[str(png)])
        logger.save()


def tune(node: Mapping | None, trainer, module, datamodule, out_dir: Path) -> bool:
    """Run the `tune` step, if any, before fit; return whether training should follow.

    With `apply`, Lightning sets `module.lr` (the optimizer node's lr) to the suggestion.
    """
    cfg = to_dict(node)
    if not cfg:
        return True
    finder = Tuner(trainer).lr_find(
        module, datamodule=datamodule, update_attr=cfg["apply"], attr_name="lr", **{k: cfg[k] for k in LR_FIND_ARGS}
    )
    suggestion = finder.suggestion()
    record = {
        "optimizer": module.hparams.optimizer["_target_"],
        "suggestion": suggestion,
        "override": None if suggestion is None else f"optimizer.lr={suggestion:.3g}",
        "applied": cfg["apply"],
        "search": {k: cfg[k] for k in LR_FIND_ARGS},
        "steps": len(finder.results["lr"]),
    }
    if trainer.is_global_zero:
        png = save_lr_find(finder, out_dir, record)
        if suggestion is not None:
            log_lr_find(trainer.loggers, suggestion, png)
            command = rerun_command(record["override"])
            log.info(
                "lr_find: suggested lr %.3g for %s (%s, lr_find.png); train with: %s",
                suggestion,
                record["optimizer"],
                out_dir / "lr_find.json",
                command,
            )
    if suggestion is None:
        raise RuntimeError(
            f"lr_find: no suggestion after {record['steps']} steps (the loss diverged early); "
            f"lower tune.max_lr or raise tune.early_stop_threshold / tune.num_training ({out_dir / 'lr_find.png'})"
        )
    return cfg["apply"]
