"""One training run from a composed config: validate, build, fit, test the best checkpoint, write the run record.

The command line (`optimlight.app.cli`) and the tools (`optimlight.tools.api`) both call `run`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from optimlight.app.callbacks import EpochTimer
from optimlight.app.config import config_choices
from optimlight.app.loggers import build_loggers, log_summary, tracked
from optimlight.app.module import Classifier
from optimlight.app.quiet import quiet_dependencies
from optimlight.app.record import read_results, write_results
from optimlight.app.runlog import metrics_line, shown
from optimlight.app.targets import TimeToTarget
from optimlight.app.tune import tune
from optimlight.app.validate import validate

log = logging.getLogger(__name__)


def build_callbacks(
    cfg: DictConfig, interactive: bool, has_logger: bool, targets: Sequence[float] = ()
) -> tuple[list[L.Callback], EpochTimer, TimeToTarget]:
    """The `callbacks` group's entries; the progress bar only on a terminal; LearningRateMonitor only when there
    is a logger to write to (Lightning refuses it otherwise); the epoch timer and the time-to-target record, which
    the run record reads."""
    callbacks = [
        instantiate(node)
        for name, node in (cfg or {}).items()
        if node and node.get("_target_") and (interactive or name != "progress_bar")
    ]
    if not has_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    timer = EpochTimer()
    reached = TimeToTarget(targets, timer)
    return [*callbacks, timer, reached], timer, reached


def build_module(cfg: DictConfig) -> Classifier:
    """The classifier for the composed config: the `model` network, the `optimizer`/`scheduler` nodes as dicts.

    Its `example_input_array` is one Fashion-MNIST image, from which Lightning's model summary measures each
    layer's FLOPs and shapes (without one it shows a column of zeros and `Total FLOPs: 0`)."""
    module = Classifier(
        instantiate(cfg.model),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        **cfg.module,
    )
    module.example_input_array = torch.zeros(1, 1, 28, 28)
    return module


def apply_speed_settings(cfg: DictConfig | None) -> None:
    """Thread count and float32 matmul precision: process-wide torch settings, so they are set before building."""
    cfg = cfg or {}
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return `val/acc_best` (what a sweeper maximizes)."""
    quiet_dependencies()
    validate(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with shown(out_dir):
        return _run(cfg, out_dir)


def _run(cfg: DictConfig, out_dir: Path) -> float | None:
    """`run` once the config is valid, with the run's log lines shown."""
    if cfg.get("skip_completed"):
        done = read_results(out_dir)
        if done.get("status") == "completed":
            log.info("skip_completed: %s already holds a completed run", out_dir)
            return done["metrics"].get("val/acc_best")
    apply_speed_settings(cfg.get("speed"))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    interactive = sys.stdout.isatty()
    loggers = build_loggers(cfg.logger)
    targets = (cfg.get("report") or {}).get("targets") or ()
    callbacks, timer, reached = build_callbacks(cfg.callbacks, interactive, has_logger=bool(loggers), targets=targets)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive)
    # the full config to every logger; the W&B run is finished on the way out, even when a step fails
    with tracked(trainer.loggers, OmegaConf.to_container(cfg, resolve=True)):
        if not tune(cfg.get("tune"), trainer, module, datamodule, out_dir):
            return None  # tune=lr_find without apply: lr_find.json is the result
        status, metrics, epoch_times, time_to_target = "failed", {}, None, None
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            # testing the best checkpoint restores the callbacks' state to that epoch: keep what the fit ended with
            epoch_times, time_to_target = list(timer.epoch_times), reached.record()
            metrics.update(trainer.callback_metrics)  # testing replaces callback_metrics: keep val/acc_best
            # the best checkpoint if one was saved; else the final weights (callbacks=swa saves none: save_top_k 0)
            saved_best = getattr(trainer.checkpoint_callback, "best_model_path", None)
            # the path itself: "best" makes Lightning warn that it picks the first of the two ModelCheckpoints
            trainer.test(module, datamodule=datamodule, ckpt_path=saved_best or None)
            metrics.update(trainer.callback_metrics)
            if trainer.is_global_zero:
                log.info("test: %s", metrics_line({k: v for k, v in metrics.items() if k.startswith("test/")}))
            status = "completed"
        except SIGTERMException:
            status = "preempted"
            raise
        finally:
            if trainer.is_global_zero:
                record = write_results(
                    out_dir,
                    metrics or trainer.callback_metrics,
                    timer.epoch_times if epoch_times is None else epoch_times,
                    config_choices(),
                    status,
                    best_checkpoint=getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
                    time_to_target=reached.record() if time_to_target is None else time_to_target,
                )
                log_summary(trainer.loggers, record)
    if trainer.is_global_zero:  # last, after W&B's closing lines: what the run left
        log.info("results: %s (run dir %s)", out_dir / "results.json", out_dir)
    best = metrics.get("val/acc_best")
    return None if best is None else float(best)
