"""Every option of every config group composes, and the composed objects build."""

from pathlib import Path

import pytest
import torch

from optimlight.app.config import CONFIG_DIR
from optimlight.app.preflight import preflight
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError

GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks", "averaging", "tune", "experiment", "debug")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.accelerator='gpu'"):
            validate(cfg)  # refused before anything is built, with one line
        return
    if (group, option) == ("optimizer", "sparse_adam"):
        with pytest.raises(ConfigError, match="SparseAdam updates sparse gradients only"):
            preflight(cfg)  # sparse gradients only; the default network has none
        return
    preflight(cfg)  # every object of the run built once


def test_defaults(compose_cfg):
    cfg = compose_cfg([])
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.optimizer, choices.scheduler) == ("mlp", "adamw", "none")
    assert cfg.seed == 42 and cfg.ckpt_path is None
    assert cfg.optimizer.lr == 1e-3 and cfg.optimizer.weight_decay == 0.01


@pytest.mark.parametrize(
    "precision, dtype", [("bf16", torch.float32), ("16", torch.float32), (64, torch.float64), ("16-true", torch.float16)]
)
def test_lightnings_short_precisions_are_read_as_lightning_reads_them(compose_cfg, precision, dtype):
    """`bf16`, `16` and 64 are Lightning's names for bf16-mixed, 16-mixed and 64-true: accepted, and the model
    summary's example input takes the weights' dtype of the full name."""
    from optimlight.app.build import build_module

    cfg = compose_cfg([f"trainer.precision={precision}"])
    validate(cfg)
    assert build_module(cfg).example_input_array.dtype == dtype
