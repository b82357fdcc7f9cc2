"""Every option of every config group composes, and the composed objects build."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from optimlight.train import CONFIG_DIR, build_module
from optimlight.validate import validate

GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    validate(cfg)
    if group in ("model", "optimizer", "scheduler", "data"):
        build_module(cfg)
        instantiate(cfg.data)


def test_defaults(compose_cfg):
    cfg = compose_cfg([])
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.optimizer, choices.scheduler) == ("mlp", "adamw", "none")
    assert cfg.seed == 42 and cfg.ckpt_path is None
    assert cfg.optimizer.lr == 1e-3 and cfg.optimizer.weight_decay == 0.01
