"""A run's length counted from its config, before any data is loaded: what a scheduler reads of a Trainer."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from lightning.pytorch.trainer.connectors.data_connector import _parse_num_batches
from lightning.pytorch.trainer.states import RunningStage
from omegaconf import DictConfig

from optimlight.app.data import TRAIN_SIZE
from optimlight.plugin.schedulers import max_epochs_of


@dataclass(frozen=True)
class RunPlan:
    """What a scheduler reads of a Trainer, counted from the config as Lightning will count it once data is loaded."""

    num_training_batches: int
    accumulate_grad_batches: int
    max_epochs: int
    max_steps: int

    @property
    def estimated_stepping_batches(self) -> float:
        """Lightning's `Trainer.estimated_stepping_batches`, the same formula."""
        if self.max_epochs == -1:
            return math.inf if self.max_steps == -1 else self.max_steps
        total = math.ceil(self.num_training_batches / self.accumulate_grad_batches) * max(self.max_epochs, 1)
        return total if self.max_steps == -1 else min(total, self.max_steps)


def world_size(trainer: Mapping) -> int:
    """Processes the trainer node starts: each gets 1/world_size of the training set (DistributedSampler)."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        devices = len(devices)
    elif not isinstance(devices, int) or devices < 1:  # "auto" / -1: every GPU when training on GPUs, else one
        on_gpu = trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if on_gpu else 1
    return devices * (trainer.get("num_nodes") or 1)


def limit_batches(batches: int, limit: int | float | None, stage: RunningStage = RunningStage.TRAINING) -> int:
    """What a trainer's `limit_<stage>_batches` leaves of `batches`, read by Lightning's own loops' function (an int
    caps the count, a float keeps that fraction rounded down, one that leaves no batch is refused); unset is 1.0."""
    return int(_parse_num_batches(stage, batches, 1.0 if limit is None else limit))


def plan_run(cfg: DictConfig) -> RunPlan:
    """The run's batches per epoch, accumulation and limits from the `data` and `trainer` nodes."""
    per_device = math.ceil((TRAIN_SIZE - cfg.data.val_size) / world_size(cfg.trainer))
    batches = limit_batches(math.ceil(per_device / cfg.data.batch_size), cfg.trainer.get("limit_train_batches"))
    return RunPlan(
        num_training_batches=batches,
        accumulate_grad_batches=cfg.trainer.get("accumulate_grad_batches") or 1,
        max_epochs=max_epochs_of(cfg.trainer),
        max_steps=cfg.trainer.get("max_steps", -1),
    )
