"""Runs from Python (notebooks, benchmarks, tests): compose the same config `python train.py` would, then run it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from optimlight.train import CONFIG_DIR, run


def compose_config(overrides: Sequence[str] = (), run_dir: str | Path = "outputs/api") -> DictConfig:
    """The config of `python train.py <overrides>`, with Hydra's runtime (output dir, choices) set to `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(run_dir).resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def train(overrides: Sequence[str] = (), run_dir: str | Path = "outputs/api") -> dict:
    """Train and test one configuration in this process; return its results.json record."""
    cfg = compose_config(overrides, run_dir)
    Path(cfg.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
    run(cfg)
    return json.loads((Path(cfg.hydra.runtime.output_dir) / "results.json").read_text())
