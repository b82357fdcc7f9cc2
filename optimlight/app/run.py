"""One training run from a composed config: validate, build, fit, test the best checkpoint, write the run record.

The command line (`optimlight.cli`) and the tools (`optimlight.tools.api`) both call `run`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from optimlight.app.build import build_callbacks, build_module
from optimlight.app.callbacks import checkpoint_file, stop_status
from optimlight.app.config import config_choices
from optimlight.app.failures import error_text
from optimlight.app.hooks import skip_idle_batch_hooks
from optimlight.app.loggers import build_loggers, log_config, log_summary, tracked
from optimlight.app.preflight import preflight
from optimlight.app.quiet import lightning_info_off, quiet_dependencies
from optimlight.app.record import read_results, record_failure, write_results
from optimlight.app.runlog import metrics_line, shown
from optimlight.app.threads import auto_threads, busy_cores, launcher_jobs, step_flops
from optimlight.app.tune import tune
from optimlight.plugin.cuda_probe import skip_failing_nvml_check
from optimlight.plugin.schedulers import sized_schedule

log = logging.getLogger(__name__)
#: A failed run's error line, for train.log only: the command line prints it on stderr as the last line.
failure_log = logging.getLogger("optimlight.failure")


def thread_count(cfg: DictConfig, processes: int = 1, networks: int = 1) -> int | None:
    """`speed.num_threads`, with `auto` worked out for this process: its training step's work (`networks` copies
    of the model, for a population trained as one batched model), the cores it may use less those other processes
    keep busy now, and the processes it shares them with (the joblib launcher's jobs x `processes`, the trainer's
    DDP processes on this node). None: torch's default."""
    threads = (cfg.get("speed") or {}).get("num_threads")
    if threads != "auto":
        return threads
    jobs = launcher_jobs(HydraConfig.get().launcher) * processes
    return auto_threads(networks * step_flops(cfg.model, cfg.data.batch_size), jobs, busy=busy_cores())


def apply_speed_settings(cfg: DictConfig, processes: int = 1, networks: int = 1) -> None:
    """Thread count, float32 matmul precision and CUDA's availability check: process-wide torch settings, set once
    the trainer is built (auto counts its processes) and before anything trains.

    With several processes on the node (DDP), OMP_NUM_THREADS carries the count: Lightning's launcher would
    otherwise set its own (cores // processes) in this process, and the ranks it starts read it."""
    skip_failing_nvml_check()
    speed = cfg.get("speed") or {}
    threads, matmul = thread_count(cfg, processes, networks), speed.get("float32_matmul_precision")
    if threads:
        torch.set_num_threads(threads)
        if processes > 1:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if matmul:
        torch.set_float32_matmul_precision(matmul)
    log.info("torch threads: %d (speed.num_threads=%s)", torch.get_num_threads(), speed.get("num_threads"))


def restore_spawned_callbacks(trainer: L.Trainer, callbacks: Sequence[L.Callback]) -> None:
    """ddp_spawn fits in child processes, so this process's callbacks still hold their state from before the fit:
    take it from the last checkpoint the children saved (epoch times, time to target)."""
    if not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    paths = [checkpoint_file(cb.dirpath, cb.filename) for cb in trainer.checkpoint_callbacks if cb.monitor is None]
    last = next((path for path in paths if path.exists()), None)
    if last is None:
        return
    states = torch.load(last, map_location="cpu", weights_only=False).get("callbacks", {})
    for callback in callbacks:
        if callback.state_key in states:
            callback.load_state_dict(states[callback.state_key])


def record_run(
    out_dir: Path, loggers: Sequence[Logger], metrics: Mapping, epoch_times: Sequence[float], status: str, **extra: Any
) -> dict:
    """The run record (results.json) from the run's final metrics, epoch times and status, made the W&B runs'
    summary too: what a run alone and a population member leave, written by this one function."""
    record = write_results(out_dir, metrics, epoch_times, config_choices(), status, **extra)
    log_summary(loggers, record)
    return record


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return `val/acc_best` (what a sweeper maximizes).

    Every failure, a bad value found before training included, leaves results.json with status `failed` and the
    `error` (and the error in train.log); a preempted run (SIGTERM) leaves status `preempted` and its checkpoint.
    """
    quiet_dependencies()
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with shown(out_dir):
        try:
            return train_and_test(cfg, out_dir)
        except SIGTERMException:
            raise
        except Exception as exc:
            if rank_zero_only.rank == 0:
                record_failure(out_dir, error_text(exc), config_choices())
                failure_log.error("error: %s", error_text(exc))
            raise


def train_and_test(cfg: DictConfig, out_dir: Path) -> float | None:
    with lightning_info_off():
        preflight(cfg)
    if cfg.get("skip_completed"):
        done = read_results(out_dir)
        if done.get("status") == "completed":
            log.info("skip_completed: %s already holds a completed run", out_dir)
            return done["metrics"].get("val/acc_best")
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    interactive = sys.stdout.isatty()
    loggers = build_loggers(cfg.logger)
    targets = (cfg.get("report") or {}).get("targets") or ()
    callbacks, timer, reached = build_callbacks(
        cfg.callbacks, interactive, has_logger=bool(loggers), targets=targets, schedule=sized_schedule(cfg.scheduler)
    )
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=interactive)
    apply_speed_settings(cfg, trainer.num_devices)
    skip_idle_batch_hooks(trainer.callbacks)  # Lightning's own too (checkpoints, model summary, progress bar)
    # the W&B run is finished on the way out, even when a step fails
    with tracked(trainer.loggers):
        train = tune(cfg.get("tune"), trainer, module, datamodule, out_dir)
        log_config(trainer.loggers, cfg, module.hparams.optimizer)  # after tuning: the lr the run trains with
        if not train:
            return None  # tune=lr_find without apply: lr_find.json is the result
        status, metrics, epoch_times, time_to_target = "failed", {}, None, None
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            restore_spawned_callbacks(trainer, [timer, reached])
            # testing the best checkpoint restores the callbacks' state to that epoch: keep what the fit ended with
            epoch_times, time_to_target = list(timer.epoch_times), reached.record()
            metrics.update(trainer.callback_metrics)  # testing replaces callback_metrics: keep val/acc_best
            stopped = stop_status(trainer.callbacks)
            if stopped is None:
                # the best checkpoint if one was saved; else the final weights (callbacks=swa saves none: save_top_k 0)
                saved_best = getattr(trainer.checkpoint_callback, "best_model_path", None)
                # the path itself: "best" makes Lightning warn that it picks the first of the two ModelCheckpoints
                trainer.test(module, datamodule=datamodule, ckpt_path=saved_best or None)
                metrics.update(trainer.callback_metrics)
                if trainer.is_global_zero:
                    log.info("test: %s", metrics_line({k: v for k, v in metrics.items() if k.startswith("test/")}))
            status = stopped or "completed"
        except SIGTERMException:
            status = "preempted"
            raise
        finally:
            if trainer.is_global_zero:
                record_run(
                    out_dir,
                    trainer.loggers,
                    metrics or trainer.callback_metrics,
                    timer.epoch_times if epoch_times is None else epoch_times,
                    status,
                    best_checkpoint=getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
                    time_to_target=reached.record() if time_to_target is None else time_to_target,
                )
    if trainer.is_global_zero:  # last, after W&B's closing lines: what the run left
        log.info("results: %s (run dir %s)", out_dir / "results.json", out_dir)
    best = metrics.get("val/acc_best")
    return None if best is None else float(best)
