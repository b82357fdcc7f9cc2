"""The run's objects from the composed config, built the same way by the run and by its preflight: the classifier
on its network, and the callbacks."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR_ALIAS_CONVERSION
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from optimlight.app.callbacks import EpochTimer, LoaderPosition, RunLength
from optimlight.app.csv_log import ResumeCSVHistory
from optimlight.app.module import Classifier
from optimlight.app.targets import TimeToTarget

#: The trainer.precision values a run takes, by Lightning's full names (`precision_name` reads its aliases), and the
#: dtype each gives the weights (mixed ones keep float32 weights).
PRECISIONS = {
    "64-true": torch.float64,
    "32-true": torch.float32,
    "16-mixed": torch.float32,
    "bf16-mixed": torch.float32,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}


def precision_name(value: object) -> str:
    """`trainer.precision` by Lightning's full name: its short forms (`32`, 16, `bf16`) read as Lightning reads them
    (`32-true`, `16-mixed`, `bf16-mixed`), so the checks and lookups compare one spelling."""
    return _PRECISION_INPUT_STR_ALIAS_CONVERSION.get(str(value), str(value))


def build_callbacks(
    cfg: DictConfig, interactive: bool, has_logger: bool, targets: Sequence[float] = (), schedule: str | None = None
) -> tuple[list[L.Callback], EpochTimer, TimeToTarget]:
    """The `callbacks` group's entries; the progress bar only on a terminal; LearningRateMonitor only when there
    is a logger to write to (Lightning refuses it otherwise); the epoch timer and the time-to-target record, which
    the run record reads; the CSV history's resume, the loader's position and the run-length guard of a schedule
    sized from the run."""
    callbacks = [
        instantiate(node)
        for name, node in (cfg or {}).items()
        if node and node.get("_target_") and (interactive or name != "progress_bar")
    ]
    if not has_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    timer = EpochTimer()
    reached = TimeToTarget(targets, timer)
    return [*callbacks, timer, reached, ResumeCSVHistory(), RunLength(schedule), LoaderPosition()], timer, reached


def build_module(cfg: DictConfig) -> Classifier:
    """The classifier for the composed config: the `model` network, the `optimizer`/`scheduler` nodes as dicts.

    Its `example_input_array` is one Fashion-MNIST image, from which Lightning's model summary measures each
    layer's FLOPs and shapes (without one it shows a column of zeros and `Total FLOPs: 0`), in the dtype the
    precision gives the weights (`64-true`, `bf16-true`, `16-true`): the summary's forward casts no input."""
    module = Classifier(
        instantiate(cfg.model),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        **cfg.module,
    )
    dtype = PRECISIONS.get(precision_name(cfg.trainer.precision), torch.float32)
    module.example_input_array = torch.zeros(1, 1, 28, 28, dtype=dtype)
    return module
