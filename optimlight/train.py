"""One training run from a composed config: validate, build, fit, test the best checkpoint, write results.json.

`main` is the Hydra entry point shared by `python train.py` and the `optimlight-train` console script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

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


def apply_speed_settings(cfg: DictConfig | None) -> None:
    """Thread count and float32 matmul precision: process-wide torch settings, so they are set before building."""
    cfg = cfg or {}
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)


def run(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return `val/acc_best` (what a sweeper maximizes)."""
    validate(cfg)
    apply_speed_settings(cfg.get("speed"))
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
        status, metrics, epoch_times = "failed", {}, None
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            epoch_times = list(timer.epoch_times)  # testing the best checkpoint restores the timer to that epoch
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
                    timer.epoch_times if epoch_times is None else epoch_times,
                    config_choices(),
                    status,
                    best_checkpoint=getattr(trainer.checkpoint_callback, "best_model_path", None) or None,
                )
                log_summary(trainer.loggers, record)
    best = metrics.get("val/acc_best")
    return None if best is None else float(best)


def hydra_error_line(exc: HydraException) -> str:
    """Hydra's multi-line composition errors as one line: the key, the bad value and what is allowed."""
    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, f"one of {', '.join(exc.options)}"))
    if isinstance(exc, OverrideParseException):
        return f"{exc.override!r} is not a valid override ({exc.message.splitlines()[0]}): expected key=value"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"{cause.full_key} is not a config key: check the spelling, or add a new key with +{cause.full_key}=..."
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def check_overrides(overrides: list[str]) -> None:
    """Compose the command line's config once before Hydra does, so unknown keys and options get one line and
    exit code 2 like every other bad value. Multiruns and Hydra's own flags are left to Hydra."""
    if any(arg.startswith("-") for arg in overrides) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as exc:
        print(f"error: {hydra_error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        GlobalHydra.instance().clear()


def main() -> float | None:
    """`python train.py` / `optimlight-train`: check the overrides, then hand over to Hydra."""
    check_overrides(sys.argv[1:])
    return hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
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
