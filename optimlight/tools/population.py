"""Train several jobs of a sweep that share a network as one population: one batched forward and backward per
step for all members (`optimlight.tools.batched`), each member with its own optimizer, schedule, seed and data order.

A member is the job it stands for: built as `optimlight.app.run` builds a run (seeded the same way, so the same
initial weights; the same batches in the same order; the plugin's optimizer and scheduler, one instance per member)
and leaving what a run leaves: its run dir with results.json, csv/metrics.csv (the same rows and columns), W&B run,
checkpoints/best.ckpt and last.ckpt (every epoch, and at the step a SIGTERM arrives), and its train.log. A member
whose loss turns non-finite stops as a run alone would (status failed, its last good checkpoint kept); the others
go on. Which jobs may join, and how they are grouped, is `optimlight.tools.population_launcher`'s.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.core.optimizer import _configure_schedulers_automatic_opt
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.types import LRSchedulerConfig
from omegaconf import DictConfig, OmegaConf

from optimlight.app.audit import format_table, group_rows
from optimlight.app.build import PRECISIONS, build_module, precision_name
from optimlight.app.callbacks import NonFiniteLossError, checkpoint_file
from optimlight.app.csv_log import RunCSVLogger
from optimlight.app.dashboard import GradNorm, gradient_norm
from optimlight.app.data import TensorBatches
from optimlight.app.loggers import build_loggers, finish_wandb, log_config, start_wandb_run
from optimlight.app.plan import limit_batches, plan_run
from optimlight.app.run import record_run
from optimlight.app.runlog import RUN_LOG, metrics_line
from optimlight.app.targets import time_to_target
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import build_optimizer
from optimlight.plugin.schedulers import build_scheduler
from optimlight.tools.batched import BatchedNetwork
from optimlight.tools.tuning.pruning import TrialPruning, stops_trial, trial_from_environment

log = logging.getLogger(__name__)
#: The trainer.precision values a population trains in (Lightning's full names) and the dtype of each: the run's
#: full-precision ones (float32 or float64 weights, no autocast), since a member computes in its weights' dtype.
FULL_PRECISIONS = {
    value: dtype for value, dtype in PRECISIONS.items() if dtype in (torch.float32, torch.float64) and "mixed" not in value
}


@dataclass
class History:
    """What a member's run record and checkpoints carry beyond the weights: epoch times, validations, best."""

    epoch_times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # val/acc of each validation, for time to target
    epochs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best: float | None = None  # val/acc_best
    metrics: dict[str, float] = field(default_factory=dict)  # the latest epoch's metrics (callback_metrics)


@dataclass
class Member:
    """One job of the population: its resolved config, run dir, module, optimizer, schedulers and loggers."""

    cfg: DictConfig
    out_dir: Path
    module: Any = None
    optimizer: torch.optim.Optimizer | None = None
    schedulers: list[LRSchedulerConfig] = field(default_factory=list)
    lr_monitor: LearningRateMonitor | None = None  # the member's own callbacks whose rules it follows
    grad_norm: GradNorm | None = None
    pruning: TrialPruning | None = None  # a tuning trial's: its study may stop it after an epoch
    loggers: list[Logger] = field(default_factory=list)
    log: logging.Logger | None = None
    history: History = field(default_factory=History)
    status: str = "running"
    error: str | None = None
    best_checkpoint: Path | None = None

    @property
    def active(self) -> bool:
        return self.status == "running"

    def has(self, callback: str) -> bool:
        node = (self.cfg.get("callbacks") or {}).get(callback)
        return bool(node and node.get("_target_"))


def member_log(out_dir: Path, name: str) -> logging.Logger:
    """A logger whose records go to the member's train.log (and, through the root logger, to the console)."""
    logger = logging.getLogger(f"optimlight.population.{name}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(out_dir / RUN_LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logger.handlers = [handler]
    logger.propagate = False  # the console gets one line per epoch for the whole population
    return logger


def build_member(member: Member) -> None:
    """The member's module, optimizer, schedulers and loggers, built as a run alone builds them (same seeding)."""
    cfg = member.cfg
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    instantiate(cfg.data)  # as the run alone does before the network (it draws nothing, the order is kept anyway)
    member.module = build_module(cfg)
    dtype = FULL_PRECISIONS[precision_name(cfg.trainer.precision)]
    if dtype == torch.float64:
        member.module.double()  # what Lightning's 64-true does (torchmetrics states keep their dtype)
    optimizer_node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    member.optimizer = build_optimizer(member.module, optimizer_node)
    schedule = build_scheduler(member.optimizer, OmegaConf.to_container(cfg.scheduler, resolve=True), plan_run(cfg))
    # Lightning's own reading of configure_optimizers' scheduler dict (defaults, reduce_on_plateau, monitor checks)
    member.schedulers = _configure_schedulers_automatic_opt([schedule], None) if schedule else []
    member.loggers = build_loggers(cfg.logger)
    if member.loggers and member.has("lr_monitor"):
        member.lr_monitor = instantiate(cfg.callbacks.lr_monitor)
    if member.loggers and member.has("grad_norm"):
        member.grad_norm = instantiate(cfg.callbacks.grad_norm)
    if member.has("tune_pruning"):  # the trial named in the job's environment (the sweeper's hydra.job.env_set)
        member.pruning = instantiate(cfg.callbacks.tune_pruning)
        member.pruning.trial = trial_from_environment(HydraConfig.get().job.env_set)
    for logger in member.loggers:
        if isinstance(logger, WandbLogger):
            start_wandb_run(logger)  # several W&B runs live in this process at once
    log_config(member.loggers, cfg, optimizer_node)
    member.log = member_log(member.out_dir, member.out_dir.name)
    if member.has("param_audit"):
        rows = group_rows([member.optimizer], member.module.named_parameters())
        member.log.info("%s", format_table(rows))


def lr_metrics(member: Member) -> dict[str, float]:
    """What the member's LearningRateMonitor logs at a training step, names and values as Lightning's callback
    makes them (`lr-AdamW/decay`, a scheduler's `name`, momentum and weight decay when the callback asks)."""
    monitor = member.lr_monitor
    if monitor is None or monitor.logging_interval == "epoch":
        return {}
    # what the callback reads of a Trainer in `on_train_batch_start`
    trainer = SimpleNamespace(
        lr_scheduler_configs=member.schedulers,
        optimizers=[member.optimizer],
        callback_metrics={},
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    return {
        name: float(value)
        for name, value in monitor._extract_stats(trainer, "any" if monitor.logging_interval else "step").items()
    }


def step_schedulers(member: Member, interval: str, index: int, plateau: bool) -> None:
    """Lightning's rule (`_TrainingEpochLoop._update_learning_rates`): after batch `index` (interval `step`) or
    epoch `index` (`epoch`), every scheduler of that interval whose frequency divides index + 1 steps through the
    module's `lr_scheduler_step` hook; `plateau` picks the metric-watching ones (after validation), which step on
    their monitored metric (a missing one fails the member when `strict`, else the step is skipped)."""
    for config in member.schedulers:
        if config.reduce_on_plateau != plateau or config.interval != interval or (index + 1) % config.frequency:
            continue
        value = None
        if config.reduce_on_plateau:
            value = member.history.metrics.get(config.monitor)
            if value is None:
                if config.strict:
                    raise ConfigError(
                        "scheduler.monitor", config.monitor, f"a metric of this run: {', '.join(member.history.metrics)}"
                    )
                continue
        member.module.lr_scheduler_step(config.scheduler, value)


def log_row(member: Member, metrics: dict[str, float], step: int) -> None:
    for logger in member.loggers:
        logger.log_metrics(metrics, step=step)


class Population:
    """Members that share network, data shapes, batch size, precision and run length, trained in lock step."""

    def __init__(self, members: Sequence[Member]):
        self.members = list(members)
        cfg = self.members[0].cfg
        self.cfg, self.trainer = cfg, cfg.trainer
        self.dtype = FULL_PRECISIONS[precision_name(cfg.trainer.precision)]
        on_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        self.device = torch.device("cuda" if on_gpu else "cpu")
        self.preempted = False
        self.first_bad = torch.full((len(self.members),), -1, device=self.device, dtype=torch.long)  # per member

    # --- data --------------------------------------------------------------------------------------------------
    def _data(self) -> None:
        datamodule = instantiate(self.cfg.data)
        datamodule.setup("fit")
        self.tensors = {split: tuple(t.to(self.device) for t in datamodule.tensors(split)) for split in ("train", "val", "test")}
        x, y = self.tensors["train"]
        self.loaders = [
            TensorBatches(
                x, y, self.cfg.data.batch_size, shuffle=True, seed=m.cfg.data.seed, standardize=self.cfg.data.standardize
            )
            for m in self.members
        ]
        self.eval_batch_size = datamodule.eval_batch_size
        self.train_batches = plan_run(self.cfg).num_training_batches

    # --- one epoch ---------------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, start: int, sums: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Train batches `start`.. of `epoch`; `sums` [K, 4]: loss sum, batches, correct, samples so far."""
        for loader in self.loaders:
            loader.set_epoch(epoch)
        orders = torch.stack([loader.order() for loader in self.loaders]).to(self.device)
        x, y = self.tensors["train"]
        batch, log_every, check_every = self.cfg.data.batch_size, self.trainer.log_every_n_steps, self._check_every()
        clock = time.perf_counter()
        for i in range(start, self.train_batches):
            idx = orders[:, i * batch : (i + 1) * batch]
            xb, yb = x[idx].to(self.dtype), y[idx]
            logging_step = (self.step + 1) % log_every == 0
            if logging_step:
                for m in self._logged("lr_monitor"):
                    lrs = lr_metrics(m)
                    m.history.metrics.update(lrs)  # as the callback's callback_metrics: the epoch line shows them
                    log_row(m, lrs, self.step)
            leaves = self.net.leaves()
            logits = self.net.forward(xb, leaves)
            losses = self._losses(logits, yb)
            losses.sum().backward()
            self.net.to_members(leaves)
            with torch.no_grad():
                correct = (logits.argmax(-1) == yb).sum(-1)
                sums += torch.stack([losses.detach(), torch.ones_like(losses), correct, torch.full_like(losses, yb.shape[1])], 1)
                self.first_bad = torch.where(~torch.isfinite(losses) & (self.first_bad < 0), self.step, self.first_bad)
            if logging_step:
                self._log_step(losses.detach())
            for m in self.members:
                if m.active:
                    m.optimizer.step()
                m.optimizer.zero_grad(set_to_none=True)
                if m.active:
                    step_schedulers(m, "step", i, plateau=False)
            self.step += 1
            if self.step % check_every == 0:
                self._check_finite()
            if self.preempted:
                self._elapsed += time.perf_counter() - clock
                self._save_all(epoch, position=i + 1, sums=sums)
                raise SIGTERMException()
        return sums, self._elapsed + time.perf_counter() - clock

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy over its batch (the classifier's criterion), [K]."""
        k, b = y.shape
        smoothing = self.members[0].module.criterion.label_smoothing
        flat = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=smoothing)
        return flat.view(k, b).mean(1)

    def _check_every(self) -> int:
        """How often the losses are read for a non-finite one: the members' NonFiniteGuard's setting."""
        node = (self.cfg.callbacks or {}).get("nonfinite_guard") or {}
        return instantiate(node).check_every_n_steps if node.get("_target_") else 1 << 62

    def _logged(self, callback: str) -> list[Member]:
        return [m for m in self.members if m.active and m.loggers and m.has(callback)]

    def _log_step(self, losses: torch.Tensor) -> None:
        """Each member's step metrics: its loss, and its gradient norm as its GradNorm callback computes it."""
        values = losses.tolist()
        for k, m in enumerate(self.members):
            if m.active and m.loggers:
                log_row(m, {"train/loss_step": values[k]}, self.step)
                if m.grad_norm is not None and (norm := gradient_norm(m.module, m.grad_norm.norm_type)) is not None:
                    log_row(m, {"train/grad_norm": float(norm)}, self.step)

    def _check_finite(self) -> None:
        bad = self.first_bad.tolist()
        for k, m in enumerate(self.members):
            if m.active and bad[k] >= 0:
                m.status = "failed"
                m.error = str(NonFiniteLossError.at_step(bad[k]))
                m.log.error("error: %s", m.error)

    # --- evaluation ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate(self, split: str, limit: int | float | None) -> tuple[list[float], list[float]]:
        """Each member's mean batch loss and accuracy on `split` (what MeanMetric and micro accuracy give)."""
        x, y = self.tensors[split]
        stage = RunningStage.VALIDATING if split == "val" else RunningStage.TESTING
        n_batches = limit_batches(math.ceil(len(x) / self.eval_batch_size), limit, stage)
        loss_sum = torch.zeros(len(self.members), device=self.device, dtype=self.dtype)
        correct = torch.zeros(len(self.members), device=self.device)
        seen = 0
        for i in range(n_batches):
            xb, yb = (
                x[i * self.eval_batch_size : (i + 1) * self.eval_batch_size],
                y[i * self.eval_batch_size : (i + 1) * self.eval_batch_size],
            )
            logits = self.net.forward(xb.to(self.dtype), shared=True)
            loss_sum += self._losses(logits, yb.expand(len(self.members), -1))
            correct += (logits.argmax(-1) == yb).sum(-1)
            seen += len(yb)
        return (loss_sum / max(n_batches, 1)).tolist(), (correct / max(seen, 1)).tolist()

    def _validate(self, epoch: int) -> None:
        self._check_finite()
        losses, accs = self._evaluate("val", self.trainer.limit_val_batches)
        for k, m in enumerate(self.members):
            if not m.active:
                continue
            h = m.history
            improved = h.best is None or accs[k] > h.best
            h.best = accs[k] if h.best is None else max(h.best, accs[k])
            m.module.val_acc_best.update(torch.tensor(accs[k]))  # the checkpoint's state, as the classifier keeps it
            h.metrics.update({"val/loss": losses[k], "val/acc": accs[k], "val/acc_best": h.best})
            h.values.append(accs[k])
            h.epochs.append(epoch + 1)
            h.steps.append(self.step)
            h.seconds.append(sum(h.epoch_times) + self._epoch_seconds)
            log_row(m, {"val/acc": accs[k], "val/acc_best": h.best, "val/loss": losses[k], "epoch": epoch}, self.step - 1)
            if improved and m.has("model_checkpoint"):
                m.best_checkpoint = config_checkpoint(m.cfg, "model_checkpoint")
                self._save(m, m.best_checkpoint, epoch + 1, 0)

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _save(self, m: Member, path: Path, next_epoch: int, position: int, sums: torch.Tensor | None = None) -> None:
        """A checkpoint with the keys of Lightning's (state_dict, optimizer_states, lr_schedulers, epoch, global_step,
        hyper_parameters), and the population's own progress (`population`) that a resume reads."""
        k = self.members.index(m)
        h = m.history
        checkpoint = {
            "epoch": next_epoch - 1 if position == 0 else next_epoch,
            "global_step": self.step,
            "pytorch-lightning_version": L.__version__,
            "state_dict": {name: value.detach().clone() for name, value in m.module.state_dict().items()},
            "optimizer_states": [m.optimizer.state_dict()],
            "lr_schedulers": [config.scheduler.state_dict() for config in m.schedulers],
            "hyper_parameters": dict(m.module.hparams),
            "population": {
                "next_epoch": next_epoch,
                "position": position,
                "sums": None if sums is None else sums[k].tolist(),
                "elapsed": self._elapsed if position else 0.0,
                "history": vars(h),
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(path)  # atomic: a kill mid-save leaves the previous checkpoint whole

    def _save_all(self, epoch: int, position: int = 0, sums: torch.Tensor | None = None) -> None:
        for m in self.members:
            if m.active and m.has("last_checkpoint"):
                self._save(m, config_checkpoint(m.cfg, "last_checkpoint"), epoch if position else epoch + 1, position, sums)

    def _resume(self) -> tuple[int, int, torch.Tensor | None]:
        """Every member from its last.ckpt (`ckpt_path=last` or a path): the launcher groups members by progress,
        so all resume at the same epoch and batch."""
        start = (0, 0, None)
        sums = []
        for m in self.members:
            path = resume_path(m.cfg)
            if path is None:  # ckpt_path=last before any checkpoint: a fresh start, its CSV history too
                sums.append([0.0] * 4)
                trim_csv(m, 0)
                continue
            checkpoint = torch.load(path, map_location=self.device, weights_only=False)
            m.module.load_state_dict(checkpoint["state_dict"])  # copies into the batched storage
            m.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
            for config, state in zip(m.schedulers, checkpoint["lr_schedulers"]):
                config.scheduler.load_state_dict(state)
            progress = checkpoint["population"]
            m.history = History(**progress["history"])
            best = config_checkpoint(m.cfg, "model_checkpoint") if m.has("model_checkpoint") else None
            m.best_checkpoint = best if best is not None and best.exists() else None
            self.step, self._elapsed = checkpoint["global_step"], progress["elapsed"]
            start = (progress["next_epoch"], progress["position"], None)
            sums.append(progress["sums"] or [0.0] * 4)
            trim_csv(m, self.step)
        running = torch.tensor(sums, device=self.device, dtype=self.dtype)
        return start[0], start[1], running if start[1] else None

    # --- the run -----------------------------------------------------------------------------------------------
    def fit_and_test(self) -> None:
        self._data()
        for m in self.members:
            m.module.to(self.device)
        self.net = BatchedNetwork([m.module.net for m in self.members])
        self.step, self._elapsed, self._epoch_seconds = 0, 0.0, 0.0
        first_epoch, position, sums = self._resume() if self.cfg.get("ckpt_path") else (0, 0, None)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            for epoch in range(first_epoch, self.trainer.max_epochs):
                if not any(m.active for m in self.members):
                    break
                if sums is None:
                    sums = torch.zeros(len(self.members), 4, device=self.device, dtype=self.dtype)
                    self._elapsed = 0.0
                sums, self._epoch_seconds = self._train_epoch(epoch, position, sums)
                self._end_epoch(epoch, sums)
                sums, position, self._elapsed = None, 0, 0.0
            self._check_finite()
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._test()

    def _on_sigterm(self, signum, frame) -> None:
        self.preempted = True  # saved and raised at the next batch boundary, as Lightning does

    def _end_epoch(self, epoch: int, sums: torch.Tensor) -> None:
        loss, acc = (sums[:, 0] / sums[:, 1]).tolist(), (sums[:, 2] / sums[:, 3]).tolist()
        for m in self.members:
            if m.active:
                m.history.epoch_times.append(self._epoch_seconds)
                step_schedulers(m, "epoch", epoch, plateau=False)
        every = self.trainer.check_val_every_n_epoch or 1
        if (epoch + 1) % every == 0 and self.trainer.limit_val_batches != 0:
            self._validate(epoch)
        self._check_finite()
        for k, m in enumerate(self.members):
            if not m.active:
                continue
            h = m.history
            h.metrics.update({"train/loss": loss[k], "train/acc": acc[k], "train/epoch_time": self._epoch_seconds})
            row = {"train/acc": acc[k], "train/epoch_time": self._epoch_seconds, "train/loss": loss[k], "epoch": epoch}
            log_row(m, row, self.step - 1)
            step_schedulers(m, "epoch", epoch, plateau=True)
            m.log.info("epoch %d: %s", epoch + 1, metrics_line(h.metrics))  # from 1, as a run alone counts
        self._save_all(epoch)
        log.info("epoch %d (%.2f s): %s", epoch + 1, self._epoch_seconds, self._line("val/acc"))
        self._prune(epoch)

    def _prune(self, epoch: int) -> None:
        """What TrialPruning does for a run alone: each tuning trial validated this epoch reports to its study,
        which may stop it (status `pruned`, not tested), its checkpoints and record kept."""
        for m in self.members:
            pruning, validated = m.pruning, m.history.epochs[-1:] == [epoch + 1]
            if not (m.active and validated and pruning is not None and pruning.trial is not None):
                continue
            value = m.history.metrics[pruning.monitor]
            if stops_trial(pruning.trial, pruning.monitor, value, epoch + 1, self.trainer.max_epochs):
                m.status = "pruned"
                m.log.info("pruned at epoch %d: its study stopped it", epoch + 1)

    def _test(self) -> None:
        testing = [m for m in self.members if m.active]
        if not testing:
            return
        for m in testing:
            if m.best_checkpoint is not None:
                state = torch.load(m.best_checkpoint, map_location=self.device, weights_only=False)["state_dict"]
                m.module.load_state_dict(state)
        losses, accs = self._evaluate("test", self.trainer.limit_test_batches)
        for k, m in enumerate(self.members):
            if m.active:
                m.history.metrics.update({"test/loss": losses[k], "test/acc": accs[k]})
                log_row(m, {"test/acc": accs[k], "test/loss": losses[k], "epoch": self.trainer.max_epochs}, self.step)
                m.log.info("test: %s", metrics_line({"test/acc": accs[k], "test/loss": losses[k]}))
                m.status = "completed"
        log.info("test: %s", self._line("test/acc"))

    def _line(self, metric: str) -> str:
        """`metric` of each member, named by its run dir: one console line for the population."""
        values = (
            f"{m.out_dir.name} {m.history.metrics[metric]:.4f}"
            if m.active or m.status == "completed"
            else f"{m.out_dir.name} {m.status}"
            for m in self.members
        )
        return f"{metric} " + "  ".join(values)


def trim_csv(member: Member, step: int) -> None:
    """What ResumeCSVHistory does for a run alone: drop the CSV rows logged at `step` or later (logged again)."""
    for logger in member.loggers:
        if isinstance(logger, RunCSVLogger):
            logger.keep_before(step)


def config_checkpoint(cfg: DictConfig, callback: str) -> Path:
    """The file the ModelCheckpoint node `callbacks.<callback>` of `cfg` writes: a member's checkpoints are where
    its run alone's would be."""
    node = cfg.callbacks[callback]
    return checkpoint_file(node.dirpath, node.filename)


def resume_path(cfg: DictConfig) -> Path | None:
    """The checkpoint a member resumes from: `ckpt_path=last` is its run dir's last.ckpt when one exists."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    if ckpt == "last":
        path = config_checkpoint(cfg, "last_checkpoint")
        return path if path.exists() else None
    return Path(ckpt)


def progress(cfg: DictConfig) -> tuple[int, int]:
    """(epoch, batch) a member resumes at: members train in lock step, so only equal progress shares a population."""
    path = resume_path(cfg)
    if path is None:
        return (0, 0)
    state = torch.load(path, map_location="cpu", weights_only=False).get("population") or {}
    return (state.get("next_epoch", -1), state.get("position", -1))


def write_record(member: Member, population_size: int, index: int) -> dict:
    """The member's run record and W&B summary, as a run alone writes them (under the job's HydraConfig, whose
    choices it records); the W&B run is finished."""
    h = member.history
    status = member.status if member.status in ("completed", "preempted", "pruned") else "failed"
    extra: dict[str, Any] = {
        "best_checkpoint": str(member.best_checkpoint) if member.best_checkpoint else None,
        "time_to_target": time_to_target(
            h.values, h.steps, h.seconds, (member.cfg.get("report") or {}).get("targets") or (), h.epochs
        ),
        "population": {"members": population_size, "member": index},
    }
    if member.error:
        extra["error"] = member.error
    record = record_run(member.out_dir, member.loggers, h.metrics, h.epoch_times, status, **extra)
    finish_wandb(member.loggers, 0 if status in ("completed", "pruned") else 1)
    member.log.info("results: %s (run dir %s)", member.out_dir / "results.json", member.out_dir)
    return record
