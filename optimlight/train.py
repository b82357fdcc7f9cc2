"""One training run from a composed config: validate, build, fit, test the best checkpoint, write results.json.

`main` is the Hydra entry point shared by `python train.py` and the `optimlight-train` console script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from optimlight.callbacks import EpochTimer, NonFiniteLossError
from optimlight.errors import ConfigError, DataError
from optimlight.loggers import build_loggers, log_summary, tracked, write_results
from optimlight.module import Classifier
from optimlight.tune import tune
from optimlight.validate import validate

EXIT_BAD_INPUT, EXIT_TRAINING_FAILED, EXIT_PREEMPTED = 2, 3, 143  # 143 = 128 + SIGTERM, what schedulers expect
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def config_choices() -> dict:
    """The option chosen in each config group (`optimizer: adamw`, ...), Hydra's own groups left out."""
    choices = HydraConfig.get().runtime.choices
    return {group: choice for group, choice in choices.items() if not group.startswith("hydra/")}


def build_callbacks(cfg: DictConfig, interactive: bool, has_logger: bool) -> tuple[list[L.Callback], EpochTimer]:
    """The `callbacks` group's entries; the progress bar only on a terminal, a plain epoch line otherwise;
    LearningRateMonitor only when there is a logger to write to (Lightning refuses it otherwise)."""
    callbacks = [
        instantiate(node)
        for name, node in (cfg or {}).items()
        if node and node.get("_target_") and (interactive or name != "progress_bar")
    ]
    if not has_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    timer = EpochTimer(print_epochs=not interactive)
    return callbacks + [timer], timer


def build_module(cfg: DictConfig) -> Classifier:
    """The classifier for the composed config: the `model` network, the `optimizer`/`scheduler` nodes as dicts."""
    return Classifier(
        instantiate(cfg.model),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        **cfg.module,
    )


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return `val/acc_best` (what a sweeper maximizes)."""
    validate(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    interactive = sys.stdout.isatty()
    loggers = build_loggers(cfg.logger)
    callbacks, timer = build_callbacks(cfg.callbacks, interactive, has_logger=bool(loggers))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive
    )
    # the full config to every logger; the W&B run is finished on the way out, even when a step fails
    with tracked(trainer.loggers, OmegaConf.to_container(cfg, resolve=True)):
        if not tune(cfg.get("tune"), trainer, module, datamodule, out_dir):
            return None  # tune=lr_find without apply: lr_find.json is the result
        status, metrics = "failed", {}
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            metrics.update(trainer.callback_metrics)  # testing replaces callback_metrics: keep val/acc_best
            # the best checkpoint if one was saved; else the final weights (callbacks=swa saves none: save_top_k 0)
            saved_best = getattr(trainer.checkpoint_callback, "best_model_path", None)
            trainer.test(module, datamodule=datamodule, ckpt_path="best" if saved_best else None)
            metrics.update(trainer.callback_metrics)
            status = "completed"
        except SIGTERMException:
            status = "preempted"
            raise
        finally:
            if trainer.is_global_zero:
                record = write_results(
                    out_dir / "results.json",
                    metrics or trainer.callback_metrics,
                    timer.epoch_times,
                    config_choices(),
                    status,
                    best_checkpoint=getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
                )
                log_summary(trainer.loggers, record)
    best = metrics.get("val/acc_best")
    return None if best is None else float(best)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run, turning a bad config value or missing data into one line on stderr and exit code 2.

    In a multirun the error is raised instead, so the sweep records the job as failed and goes on.
    """
    try:
        return run(cfg)
    except SIGTERMException:
        run_dir = HydraConfig.get().runtime.output_dir
        print(f"preempted (SIGTERM): saved {run_dir}/checkpoints/last.ckpt; resume by running the same command "
              f"with hydra.run.dir={run_dir} ckpt_path=last", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except (ConfigError, DataError, NonFiniteLossError) as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_TRAINING_FAILED if isinstance(exc, NonFiniteLossError) else EXIT_BAD_INPUT)
