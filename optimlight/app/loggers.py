"""Logger construction, the W&B run's lifecycle, and step metrics written straight to the loggers."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from optimlight.app.overrides import configuration_label
from optimlight.plugin.errors import ConfigError, first_line
from optimlight.plugin.nodes import to_dict

WANDB_MODES = ("auto", "online", "offline", "disabled")

log = logging.getLogger(__name__)


def is_logging_step(trainer) -> bool:
    """Every `log_every_n_steps`-th optimizer step, counted as Lightning counts it for its own step metrics
    (LearningRateMonitor's `lr-*`: steps n-1, 2n-1, ...), so all step metrics share W&B's step axis."""
    return bool(trainer.loggers) and (trainer.global_step + 1) % trainer.log_every_n_steps == 0


def log_step_metrics(trainer, metrics: dict) -> None:
    """Write step metrics straight to the loggers, at the optimizer step's index (cheaper than `self.log`)."""
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)


def build_loggers(cfg: Mapping | None) -> list:
    """One logger per entry of the `logger` node that has a `_target_`; an empty node means no logger."""
    return [instantiate(node) for node in (cfg or {}).values() if node and node.get("_target_")]


def check_logger(cfg: Mapping | None) -> None:
    """The `logger` group's values that W&B would only reject after training started, or never."""
    node = (cfg or {}).get("wandb")
    if not node:
        return
    mode = node.get("mode", "auto")
    if mode not in WANDB_MODES:
        raise ConfigError("logger.wandb.mode", mode, f"one of {', '.join(WANDB_MODES)}")
    timeout = node.get("init_timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError("logger.wandb.init_timeout", timeout, "a positive number of seconds")
    log_model = node.get("log_model", False)
    if not (isinstance(log_model, bool) or log_model == "all"):
        raise ConfigError("logger.wandb.log_model", log_model, "false, true (best and last checkpoint) or all")


def sweep_group_name(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's jobs and its comparison run: the sweep dir's name and a hash of its absolute path,
    so two sweeps started in the same second (the default dirs are named by time) get two groups."""
    path = Path(sweep_dir).resolve()
    return f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def sweep_group() -> str | None:
    """The sweep's group in a Hydra multirun (all its jobs share it); else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return sweep_group_name(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None


def _sync_hint(save_dir) -> str:
    return f"upload later with: wandb sync {Path(save_dir) / 'wandb'}/offline-run-*"


def start_mode(mode: str, save_dir=".") -> str:
    """The W&B mode to start in: `auto` and `online` become `offline` when W&B finds no credentials.

    `wandb.login(prompt=False)` looks for an API key (WANDB_API_KEY, netrc, `wandb login`) without asking for
    one, so a terminal never waits for input; the key itself never passes through here.
    """
    if mode == "offline":
        log.info("W&B: logging offline; %s", _sync_hint(save_dir))
    if mode not in ("auto", "online"):
        return mode
    import wandb

    if wandb.login(prompt=False, verify=False):
        return "online"
    say = log.info if mode == "auto" else log.warning
    say("W&B: no API key or login found, logging offline; %s", _sync_hint(save_dir))
    return "offline"


def run_dir_wandb_id(run_dir, renew: bool = False) -> str:
    """One W&B run per run dir: the id is kept in `<run dir>/wandb_run_id`, so a run resumed in its own dir
    (`ckpt_path=last`) continues the same W&B run. `renew` replaces it (a failed online start keeps its id busy)."""
    path = Path(run_dir) / "wandb_run_id"
    if renew or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4) + "\n")  # 8 characters of [0-9a-f], like W&B's own ids
    return path.read_text().strip()


def wandb_logger(
    mode: str = "auto",
    init_timeout: float = 30,
    group: str | None = None,
    job_type: str | None = None,
    save_dir=".",
    **kwargs,
):
    """Lightning's `WandbLogger` in the W&B mode that can work here; other arguments go to `wandb.init`.

    An online run starts at once, so that a missing network or a rejected key shows here, after at most
    `init_timeout` seconds, and the training goes on offline with a warning instead of failing later.
    Only rank 0 starts a run (Lightning gives other ranks a dummy), so only rank 0 looks for credentials.
    """
    kwargs.update(group=group or sweep_group(), save_dir=save_dir)
    if job_type is None and HydraConfig.initialized():  # the runs of one configuration, every seed, share it
        job_type = configuration_label(HydraConfig.get().overrides.task)
    kwargs["job_type"] = job_type
    if rank_zero_only.rank != 0:
        return WandbLogger(mode="disabled", **kwargs)
    kwargs.setdefault("id", run_dir_wandb_id(save_dir))
    kwargs.setdefault("resume", "allow")
    mode = start_mode(mode, save_dir)
    if mode == "online":
        logger = _wandb_logger("online", init_timeout, kwargs)
        try:
            logger.experiment  # noqa: B018 - starts the run now
            return logger
        except Exception as exc:  # no network, server down, key refused: keep training, lose only the live view
            hint = _sync_hint(save_dir)
            log.warning("W&B: the online run did not start (%s); logging offline, %s", first_line(exc), hint)
            mode, kwargs["id"] = "offline", run_dir_wandb_id(save_dir, renew=True)
    return _wandb_logger(mode, init_timeout, kwargs)


def wandb_settings(mode: str, init_timeout: float = 30):
    """W&B's console output cut to what optimlight does not say itself: `quiet` drops the history and summary
    panel (results.json and the test table hold them) and keeps an online run's link; an offline run is `silent`
    (optimlight's own line says it is offline and how to sync it). W&B's warnings show either way."""
    import wandb

    return wandb.Settings(init_timeout=init_timeout, quiet=True, silent=mode == "offline")


def _wandb_logger(mode: str, init_timeout: float, kwargs: dict) -> WandbLogger:
    """`WandbLogger` with `wandb_settings`. Lightning passes `anonymous=None` to `wandb.init`, on which W&B
    0.30-0.31 warn that the setting has no effect: left out."""
    logger = WandbLogger(mode=mode, settings=wandb_settings(mode, init_timeout), **kwargs)
    logger._wandb_init.pop("anonymous", None)
    import_wandb_telemetry()
    return logger


def start_wandb_run(logger: WandbLogger) -> None:
    """Start the logger's W&B run as a new run beside those already open in this process (a population trains
    several runs at once); Lightning's logger would otherwise join the process's current run."""
    import wandb

    logger._experiment = wandb.init(**logger._wandb_init, reinit="create_new")
    logger._experiment.define_metric("trainer/global_step")
    logger._experiment.define_metric("*", step_metric="trainer/global_step", step_sync=True)


def import_wandb_telemetry() -> None:
    """W&B 0.31 imports its OpenTelemetry exporters at a process's first `log` (60 ms here), which fell in the
    first training epoch's clock: imported with the logger instead. Nothing to do for a W&B without them."""
    with suppress(ImportError):
        import opentelemetry.exporter.otlp.proto.http._log_exporter  # noqa: F401
        import opentelemetry.exporter.otlp.proto.http.metric_exporter  # noqa: F401
        import opentelemetry.sdk._logs.export  # noqa: F401
        import opentelemetry.sdk.metrics.export  # noqa: F401


def _wandb_loggers(loggers: Iterable[Logger]) -> list[WandbLogger]:
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def log_config(loggers: Iterable[Logger], cfg, optimizer: Mapping) -> None:
    """The full resolved config as every logger's hyperparameters, with the optimizer node the run trains with
    (after `tune=lr_find tune.apply=true` its lr is the suggestion, not the config's)."""
    config = to_dict(cfg)
    config["optimizer"] = dict(optimizer)
    for logger in loggers:
        logger.log_hyperparams(config)


@contextmanager
def tracked(loggers: Iterable[Logger]) -> Iterator[None]:
    """Finish the W&B runs on the way out, marked failed when the body raised: Lightning never finishes them, and
    a run left open would swallow the next job of a multirun (the basic and joblib launchers run several jobs in
    one process)."""
    loggers, exit_code = list(loggers), 1
    try:
        yield
        exit_code = 0
    finally:
        finish_wandb(loggers, exit_code)


def finish_wandb(loggers: Iterable[Logger], exit_code: int) -> None:
    """Finish the loggers' W&B runs with `exit_code` (0: the run completed)."""
    for logger in _wandb_loggers(loggers):
        logger.experiment.finish(exit_code=exit_code)


def log_summary(loggers: Iterable[Logger], record: Mapping) -> None:
    """Make the run's record (final metrics, mean seconds per epoch, status) the W&B runs' summary."""
    summary = {**record["metrics"], "mean_epoch_time": record["mean_epoch_time"], "status": record["status"]}
    for target, reached in (record.get("time_to_target") or {}).items():
        for unit in ("epoch", "step", "seconds"):
            summary[f"time_to_target/{target}/{unit}"] = None if reached is None else reached[unit]
    for logger in _wandb_loggers(loggers):
        logger.experiment.summary.update(summary)
