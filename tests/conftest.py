"""Shared fixtures: compose the real Hydra config in-process and run it, without a subprocess per test.

Two datasets: `data_dir` is a synthetic Fashion-MNIST (tests/idx.py) that every test may use and that needs no
download; `fashion_mnist` is the real one, found through OPTIMLIGHT_DATA_DIR, then ./data, then a torchvision
download, and the test that asks for it is skipped with one line when all three fail.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import wandb
from hydra.core.global_hydra import GlobalHydra

from optimlight.app.config import compose_config
from optimlight.app.data import DataError, ensure_raw_files, raw_dir
from optimlight.app.run import run
from optimlight.cli import multirun as run_multirun
from tests.idx import write_synthetic_fashion_mnist

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
#: Overrides that make a run take seconds: a few batches, one epoch.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
]


def keep_every_epoch(dirpath: Path) -> list[str]:
    """Overrides that keep a checkpoint of every epoch as `<dirpath>/e<epoch>.ckpt`, to resume from mid-run."""
    return [
        "+callbacks.every_epoch._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        f"+callbacks.every_epoch.dirpath={dirpath}",
        "+callbacks.every_epoch.save_top_k=-1",
        "+callbacks.every_epoch.filename='e{epoch}'",
        "+callbacks.every_epoch.auto_insert_metric_name=false",
        "+callbacks.every_epoch.mode=max",  # no monitor: only makes its state key differ from last_checkpoint's
    ]


def load_bench(name: str):
    """`bench/<name>.py` as a module: the bench scripts are no package, the tests call their functions. While it
    loads, bench/ leads sys.path as it does for `python bench/<name>.py`, so a bench imports another's helpers."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "bench"))
    return module


@functools.cache
def find_fashion_mnist() -> tuple[Path | None, str]:
    """(the real data's dir, "") or (None, why not): OPTIMLIGHT_DATA_DIR, then ./data, then a download to ./data."""
    env = os.environ.get("OPTIMLIGHT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path("data").resolve())
    for candidate in candidates:
        if (raw_dir(candidate) / "train-images-idx3-ubyte").exists():
            return candidate, ""
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        ensure_raw_files(candidates[-1], download=True)
        return candidates[-1], ""
    except DataError as exc:
        tried = ", ".join(str(c) for c in candidates)
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "DataError"
        return None, f"real Fashion-MNIST not found ({tried}) and the torchvision download failed ({cause})"
    finally:
        socket.setdefaulttimeout(timeout)


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """The real Fashion-MNIST (60,000 + 10,000 images); the test is skipped, with the reason, without it."""
    found, why = find_fashion_mnist()
    if found is None:
        pytest.skip(why)
    return found


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A synthetic Fashion-MNIST in torchvision's layout: 10,000 training (5,000 after the validation split) and 1,000 test images."""
    return write_synthetic_fashion_mnist(tmp_path_factory.mktemp("synthetic_fashion_mnist"))


def composer(data: Path, tmp_path: Path):
    """`compose(overrides)` -> composed config on `data` whose run dir is a fresh temporary folder."""

    def _compose(overrides=(), run_dir: Path | None = None):
        return compose_config([f"data.data_dir={data}", *overrides], run_dir or tmp_path / "run")

    return _compose


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """`compose_cfg(overrides)` -> composed config on the synthetic data."""
    yield composer(data_dir, tmp_path)
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_real_cfg(tmp_path, fashion_mnist):
    """`compose_real_cfg(overrides)` -> composed config on the real Fashion-MNIST."""
    yield composer(fashion_mnist, tmp_path)
    GlobalHydra.instance().clear()


@pytest.fixture
def restore_torch_settings():
    """torch's thread count and matmul precision are process-wide: put back what the test found."""
    threads, matmul = torch.get_num_threads(), torch.get_float32_matmul_precision()
    yield
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(matmul)


@pytest.fixture
def train_run(compose_cfg):
    """`train_run(overrides)` -> (config, results.json as a dict) of an in-process run with TINY limits first."""

    def _run(overrides=(), run_dir: Path | None = None):
        cfg = compose_cfg([*TINY, *overrides], run_dir)
        run(cfg)
        return cfg, json.loads((Path(cfg.hydra.runtime.output_dir) / "results.json").read_text())

    return _run


@pytest.fixture
def multirun(monkeypatch, data_dir):
    """`multirun(overrides, sweep_dir)` -> exit code of `python train.py -m <overrides>`, run in this process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def _multirun(overrides, sweep_dir: Path) -> int:
        monkeypatch.setattr(sys, "argv", ["train.py"])
        wandb.teardown()
        try:
            run_multirun([f"data.data_dir={data_dir}", *overrides], sweep_dir)
        except SystemExit as exit:  # Hydra exits 1 when a job failed, after running the others
            return exit.code
        finally:
            wandb.teardown()
        return 0

    yield _multirun
    root.handlers[:], root.level = handlers, level  # Hydra configured logging for the jobs
