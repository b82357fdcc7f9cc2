"""The schedules beyond the seeds': cosine_restarts, wsd, linear, exponential, multistep. Each YAML against its
constructor; the LR LearningRateMonitor logged at every optimizer step of a tiny run against the closed form;
a run resumed from its epoch-0 checkpoint logs the uninterrupted run's LRs; the preview draws the same curve."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from optimlight.plugin.nodes import import_object
from optimlight.plugin.schedulers import LIGHTNING_KEYS, WARMUP_KEYS
from optimlight.tools.preview import schedule_curves
from tests.conftest import keep_every_epoch
from tests.metrics_csv import logged

CONF = Path(__file__).resolve().parent.parent / "conf"
NEW = ("cosine_restarts", "wsd", "linear", "exponential", "multistep")
EVERY_STEP = ["trainer.log_every_n_steps=1"]
RTOL = 1e-6
#: Where a YAML departs from the class's defaults (the YAML comments say why).
CHOSEN = {"cosine_restarts": {"T_0": 5}, "exponential": {"gamma": 0.8}, "linear": {"start_factor": 1.0, "end_factor": 0.0}}


def node(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "scheduler" / f"{name}.yaml"))  # type: ignore[return-value]


@pytest.mark.parametrize("name", NEW)
def test_yaml_is_the_constructor_signature(name):
    cfg = node(name)
    cls = import_object(cfg["_target_"], "scheduler._target_")
    args = {n: p for n, p in inspect.signature(cls.__init__).parameters.items()}
    own = set(args) - {"self", "optimizer", "last_epoch", "verbose"}
    assert set(cfg) - {"_target_", *LIGHTNING_KEYS, *WARMUP_KEYS} == own
    for key in own:  # the class's defaults, except the run-sized ones (null) and the documented choices
        if cfg[key] is not None and args[key].default is not inspect.Parameter.empty:
            assert cfg[key] == CHOSEN.get(name, {}).get(key, args[key].default), key


def lrs(train_run, name: str, epochs: int, batches: int, *overrides: str) -> tuple[np.ndarray, object]:
    cfg, results = train_run(
        [f"scheduler={name}", f"trainer.max_epochs={epochs}", f"trainer.limit_train_batches={batches}", *overrides, *EVERY_STEP]
    )
    assert results["status"] == "completed"
    return logged(Path(cfg.hydra.runtime.output_dir), "lr-AdamW/decay"), cfg


def cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def test_cosine_restarts_per_step_against_sgdr(train_run):
    epochs, batches, t0, t_mult, eta_min = 2, 7, 3, 2, 1e-5
    lr, cfg = lrs(
        train_run,
        "cosine_restarts",
        epochs,
        batches,
        "scheduler.interval=step",
        f"scheduler.T_0={t0}",
        f"scheduler.T_mult={t_mult}",
        f"scheduler.eta_min={eta_min}",
    )
    expected, cycle, start = [], t0, 0
    for t in range(epochs * batches):
        if t - start == cycle:
            start, cycle = t, cycle * t_mult
        expected.append(cos_anneal(cfg.optimizer.lr, eta_min, (t - start) / cycle))
    np.testing.assert_allclose(lr, expected, rtol=RTOL)
    assert [t for t in range(1, len(lr)) if lr[t] > lr[t - 1]] == [3, 9]  # the restarts: cycles of 3, 6, 12 steps
    assert np.all(lr > eta_min)


@pytest.mark.parametrize("decay", ["linear", "cosine", "1-sqrt"])
def test_wsd_warms_up_holds_then_decays_the_final_fraction(train_run, decay):
    epochs, batches, warmup, fraction, end, start_factor = 2, 8, 3, 0.25, 0.1, 0.1
    lr, cfg = lrs(
        train_run,
        "wsd",
        epochs,
        batches,
        "scheduler.warmup_epochs=0",
        f"scheduler.warmup_steps={warmup}",
        f"scheduler.warmup_start_factor={start_factor}",
        f"scheduler.decay_fraction={fraction}",
        f"scheduler.end_factor={end}",
        f"scheduler.decay={decay}",
    )
    base, total = cfg.optimizer.lr, epochs * batches
    after = total - warmup  # StableDecayLR's steps
    decay_steps = round(fraction * after)
    shape = {"linear": lambda p: 1 - p, "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2, "1-sqrt": lambda p: 1 - p**0.5}
    expected = []
    for t in range(total):
        if t < warmup:
            expected.append(base * (start_factor + (1 - start_factor) * t / warmup))
            continue
        into = (t - warmup) - (after - decay_steps)
        expected.append(base if into <= 0 else base * (end + (1 - end) * shape[decay](into / decay_steps)))
    np.testing.assert_allclose(lr, expected, rtol=RTOL)
    assert np.sum(lr == base) == after - decay_steps + 1 and lr[-1] > base * end


def test_linear_decays_every_epoch_and_reaches_its_floor_after_the_last(train_run):
    epochs, batches, end = 4, 2, 0.0
    lr, cfg = lrs(train_run, "linear", epochs, batches, f"scheduler.end_factor={end}")
    epoch = np.arange(epochs * batches) // batches
    np.testing.assert_allclose(lr, cfg.optimizer.lr * (1 - epoch / epochs), rtol=RTOL)
    assert lr.min() == pytest.approx(cfg.optimizer.lr / epochs, rel=RTOL)  # the last epoch still learns


def test_exponential_after_a_warmup_epoch(train_run):
    epochs, gamma, start_factor = 4, 0.5, 0.25
    lr, cfg = lrs(
        train_run,
        "exponential",
        epochs,
        1,
        f"scheduler.gamma={gamma}",
        "scheduler.warmup_epochs=1",
        f"scheduler.warmup_start_factor={start_factor}",
    )
    base = cfg.optimizer.lr
    np.testing.assert_allclose(lr, [base * start_factor, base, base * gamma, base * gamma**2], rtol=RTOL)


def test_multistep_milestones_from_the_run(train_run):
    epochs, gamma = 8, 0.1
    lr, cfg = lrs(train_run, "multistep", epochs, 1, f"scheduler.gamma={gamma}")  # null: at epochs 4 and 6
    base = cfg.optimizer.lr
    np.testing.assert_allclose(lr, [base] * 4 + [base * gamma] * 2 + [base * gamma**2] * 2, rtol=RTOL)


RESUMED = {
    "cosine_restarts": ["scheduler.T_0=2"],
    "wsd": ["scheduler.warmup_epochs=1", "scheduler.decay_fraction=0.5"],
    "linear": [],
    "exponential": ["scheduler.warmup_epochs=1"],
    "multistep": [],
}


@pytest.mark.parametrize("name", NEW)
def test_a_resumed_run_logs_the_uninterrupted_runs_lrs(train_run, tmp_path, name):
    common = [f"scheduler={name}", "trainer.max_epochs=3", "trainer.limit_train_batches=3", *RESUMED[name], *EVERY_STEP]
    full_cfg, _ = train_run([*common, *keep_every_epoch(tmp_path / "kept")], tmp_path / "full")
    resumed_cfg, resumed = train_run([*common, f"ckpt_path={tmp_path / 'kept' / 'e0.ckpt'}"], tmp_path / "resumed")
    assert resumed["status"] == "completed"
    full = logged(Path(full_cfg.hydra.runtime.output_dir), "lr-AdamW/decay")
    frame = pd.read_csv(Path(resumed_cfg.hydra.runtime.output_dir) / "csv" / "metrics.csv")
    rows = frame.dropna(subset=["lr-AdamW/decay"]).drop_duplicates("step")
    assert list(rows["step"]) == list(range(3, 9))  # epochs 1 and 2
    np.testing.assert_allclose(rows["lr-AdamW/decay"].to_numpy(), full[3:], rtol=RTOL)
    assert full.min() < full.max()


@pytest.mark.parametrize("name", NEW)
def test_the_preview_draws_each_new_schedule_as_the_run_logs_it(train_run, name):
    overrides = [f"scheduler={name}", "trainer.max_epochs=3", "trainer.limit_train_batches=3", *RESUMED[name], *EVERY_STEP]
    cfg, _ = train_run(overrides)
    curves = schedule_curves(cfg)
    np.testing.assert_allclose(curves["lr/decay"], logged(Path(cfg.hydra.runtime.output_dir), "lr-AdamW/decay"), rtol=RTOL)
