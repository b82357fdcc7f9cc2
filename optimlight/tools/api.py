"""Runs from Python (notebooks, benchmarks, tests): compose the same config `python train.py` would, then run it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from optimlight.app.config import CONFIG_DIR, compose_config, register_launchers
from optimlight.app.record import read_results
from optimlight.app.run import run

__all__ = ["compose_config", "multirun", "train"]


def train(overrides: Sequence[str] = (), run_dir: str | Path = "outputs/api") -> dict:
    """Train and test one configuration in this process; return its results.json record."""
    cfg = compose_config(overrides, run_dir)
    Path(cfg.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
    run(cfg)
    return read_results(Path(cfg.hydra.runtime.output_dir))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _job(cfg: DictConfig) -> float | None:
    return run(cfg)


def multirun(overrides: Sequence[str], sweep_dir: str | Path) -> None:
    """`python train.py -m <overrides>` in this process, into `sweep_dir`: the sweep's jobs, summary and report.
    A failed job raises once the sweep is done (Hydra exits with code 1, as on the command line)."""
    register_launchers()
    argv = sys.argv
    sys.argv = [argv[0] if argv else "optimlight", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    try:
        _job()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
