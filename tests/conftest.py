"""Shared fixtures: compose the real Hydra config in-process and run it, without a subprocess per test."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from optimlight.api import compose_config
from optimlight.train import run

#: The nine optimizers of the seeds: config option -> torch class.
TORCH_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "asgd": torch.optim.ASGD,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "lbfgs": torch.optim.LBFGS,
}
REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("OPTIMLIGHT_DATA_DIR", REPO.parent / "shared" / "data"))
#: Overrides that make a run take seconds: a few batches of real data, one epoch.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
]


def load_bench(name: str):
    """`bench/<name>.py` as a module: the bench scripts are no package, the tests call their functions."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.fail(f"Fashion-MNIST not found under {DATA_DIR}; set OPTIMLIGHT_DATA_DIR")
    return DATA_DIR


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """`compose_cfg(overrides)` -> composed config whose run dir is a fresh temporary folder, real data."""

    def _compose(overrides=(), run_dir: Path | None = None):
        return compose_config([f"data.data_dir={data_dir}", *overrides], run_dir or tmp_path / "run")

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def train_run(compose_cfg):
    """`train_run(overrides)` -> (config, results.json as a dict) of an in-process run with TINY limits first."""

    def _run(overrides=(), run_dir: Path | None = None):
        cfg = compose_cfg([*TINY, *overrides], run_dir)
        run(cfg)
        return cfg, json.loads((Path(cfg.hydra.runtime.output_dir) / "results.json").read_text())

    return _run
