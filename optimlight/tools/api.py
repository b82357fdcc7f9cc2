"""Runs from Python (notebooks, benchmarks, tests): compose the same config `python train.py` would, then run it.
A multirun from Python is `optimlight.cli.multirun`, beside the command line that registers the Hydra plugins."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optimlight.app.config import compose_config
from optimlight.app.record import read_results
from optimlight.app.run import run

__all__ = ["compose_config", "train"]


def train(overrides: Sequence[str] = (), run_dir: str | Path = "outputs/api") -> dict:
    """Train and test one configuration in this process; return its results.json record."""
    cfg = compose_config(overrides, run_dir)
    Path(cfg.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
    run(cfg)
    return read_results(Path(cfg.hydra.runtime.output_dir))
