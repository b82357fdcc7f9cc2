"""Schedulers on real Lightning runs with tiny limits: the LR that LearningRateMonitor logged at every optimizer
step, read back from metrics.csv, against the closed-form schedule; and bad nodes refused before training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from optimlight.app.module import LOGGED_METRICS, Classifier
from optimlight.app.run import run
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.schedulers import build_scheduler
from tests.metrics_csv import logged

EVERY_STEP = ["trainer.log_every_n_steps=1"]
RTOL = 1e-6


def run_dir_of(cfg) -> Path:
    return Path(cfg.hydra.runtime.output_dir)


def last_scheduler_state(cfg) -> dict:
    checkpoint = torch.load(run_dir_of(cfg) / "checkpoints" / "last.ckpt", weights_only=False)
    return checkpoint["lr_schedulers"][0]


def cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def onecycle_closed_form(total, max_lr, pct_start, div, final_div, base_m, max_m):
    """Smith's one cycle (two phases, cosine): LR and momentum used at each of `total` optimizer steps."""
    initial, final = max_lr / div, max_lr / (div * final_div)
    peak = pct_start * total - 1  # 0-based index of the step that runs at max_lr
    lrs, moms = [], []
    for t in range(total):
        if t <= peak:
            lrs.append(cos_anneal(initial, max_lr, t / peak))
            moms.append(cos_anneal(max_m, base_m, t / peak))
        else:
            pct = (t - peak) / (total - 1 - peak)
            lrs.append(cos_anneal(max_lr, final, pct))
            moms.append(cos_anneal(base_m, max_m, pct))
    return np.array(lrs), np.array(moms)


def stepping_batches(limit_train_batches, accumulate, max_epochs, max_steps=-1) -> int:
    per_epoch = math.ceil(limit_train_batches / accumulate)
    total = per_epoch * max_epochs
    return total if max_steps == -1 else min(total, max_steps)


def test_onecycle_sgd_peaks_at_max_lr_and_ends_at_its_floor_cycling_momentum(train_run):
    epochs, batches, pct_start = 2, 10, 0.25
    cfg, results = train_run(
        [
            "scheduler=onecycle",
            "optimizer=sgd",
            "optimizer.momentum=0.9",
            f"scheduler.pct_start={pct_start}",
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={batches}",
            "+callbacks.lr_monitor.log_momentum=true",
            *EVERY_STEP,
        ]
    )
    assert results["status"] == "completed"
    node = cfg.scheduler
    total = stepping_batches(batches, 1, epochs)
    max_lr = cfg.optimizer.lr  # max_lr: null -> the optimizer's lr
    lr, momentum = logged(run_dir_of(cfg), "lr-SGD/decay"), logged(run_dir_of(cfg), "lr-SGD/decay-momentum")
    expected_lr, expected_momentum = onecycle_closed_form(
        total, max_lr, pct_start, node.div_factor, node.final_div_factor, node.base_momentum, node.max_momentum
    )
    np.testing.assert_allclose(lr, expected_lr, rtol=RTOL)
    np.testing.assert_allclose(momentum, expected_momentum, rtol=RTOL)
    # the round(pct_start * total)-th optimizer step runs at max_lr (logged at 0-based step one less)
    assert int(np.argmax(lr)) + 1 == round(pct_start * total)
    assert lr.max() == pytest.approx(max_lr, rel=RTOL)
    assert lr[-1] == pytest.approx(max_lr / (node.div_factor * node.final_div_factor), rel=RTOL)
    assert momentum[int(np.argmax(lr))] == pytest.approx(node.base_momentum, rel=RTOL)
    assert last_scheduler_state(cfg)["last_epoch"] == total  # one scheduler step per optimizer step


@pytest.mark.parametrize(
    ("epochs", "batches", "accumulate", "max_steps"),
    [(2, 7, 2, -1), (4, 3, 1, 9)],
    ids=["accumulate2-limit7", "max_steps-before-max_epochs"],
)
def test_onecycle_steps_follow_estimated_stepping_batches_and_cycle_adam_beta1(train_run, epochs, batches, accumulate, max_steps):
    pct_start = 0.5
    cfg, results = train_run(
        [
            "scheduler=onecycle",
            f"scheduler.pct_start={pct_start}",
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={batches}",
            f"trainer.accumulate_grad_batches={accumulate}",
            f"trainer.max_steps={max_steps}",
            "+callbacks.lr_monitor.log_momentum=true",
            *EVERY_STEP,
        ]
    )
    assert results["status"] == "completed"
    node, total = cfg.scheduler, stepping_batches(batches, accumulate, epochs, max_steps)
    lr, beta1 = logged(run_dir_of(cfg), "lr-AdamW/decay"), logged(run_dir_of(cfg), "lr-AdamW/decay-momentum")
    expected_lr, expected_beta1 = onecycle_closed_form(
        total,
        cfg.optimizer.lr,
        pct_start,
        node.div_factor,
        node.final_div_factor,
        node.base_momentum,
        node.max_momentum,
    )
    assert len(lr) == total
    np.testing.assert_allclose(lr, expected_lr, rtol=RTOL)
    np.testing.assert_allclose(logged(run_dir_of(cfg), "lr-AdamW/no_decay"), expected_lr, rtol=RTOL)  # both groups
    np.testing.assert_allclose(beta1, expected_beta1, rtol=RTOL)
    assert last_scheduler_state(cfg)["last_epoch"] == total


@pytest.mark.parametrize(("interval", "eta_min"), [("epoch", 0.0), ("epoch", 1.0e-5), ("step", 0.0)])
def test_cosine_reaches_eta_min_only_after_the_last_epoch_or_step(train_run, interval, eta_min):
    """Every epoch (or step) trains above eta_min: the cosine is sized to end one scheduler step after the run."""
    epochs, batches = 3, 3
    cfg, _ = train_run(
        [
            "scheduler=cosine",
            f"scheduler.interval={interval}",
            f"scheduler.eta_min={eta_min}",
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={batches}",
            *EVERY_STEP,
        ]
    )
    base = cfg.optimizer.lr
    lr = logged(run_dir_of(cfg), "lr-AdamW/decay")
    steps = np.arange(epochs * batches)
    position, length = (steps // batches, epochs) if interval == "epoch" else (steps, epochs * batches)
    np.testing.assert_allclose(lr, [cos_anneal(base, eta_min, p / length) for p in position], rtol=RTOL)
    assert lr[0] == pytest.approx(base, rel=RTOL) and np.all(lr > eta_min)
    if interval == "epoch":
        per_epoch = lr.reshape(epochs, batches)
        assert np.all(per_epoch == per_epoch[:, :1]) and np.all(np.diff(per_epoch[:, 0]) < 0)
    state = last_scheduler_state(cfg)  # after the last epoch (or step): eta_min
    assert state["last_epoch"] == length and state["_last_lr"] == pytest.approx([eta_min, eta_min], abs=1e-12)


def test_step_drops_by_gamma_every_step_size_epochs(train_run):
    epochs, step_size, gamma = 5, 2, 0.5
    cfg, _ = train_run(
        [
            "scheduler=step",
            f"scheduler.step_size={step_size}",
            f"scheduler.gamma={gamma}",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_train_batches=2",
            *EVERY_STEP,
        ]
    )
    lr = logged(run_dir_of(cfg), "lr-AdamW/decay")
    epoch = np.arange(len(lr)) // 2
    np.testing.assert_allclose(lr, cfg.optimizer.lr * gamma ** (epoch // step_size), rtol=RTOL)


@pytest.mark.parametrize("warmup", ["warmup_steps=3", "warmup_epochs=1"])
def test_warmup_is_linear_to_the_base_lr_then_cosine_towards_eta_min(train_run, warmup):
    epochs, batches, start_factor, eta_min = 2, 5, 0.1, 1.0e-5
    cfg, _ = train_run(
        [
            "scheduler=cosine",
            "scheduler.interval=step",
            f"scheduler.{warmup}",
            f"scheduler.eta_min={eta_min}",
            f"scheduler.warmup_start_factor={start_factor}",
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={batches}",
            *EVERY_STEP,
        ]
    )
    base, total = cfg.optimizer.lr, epochs * batches
    w = cfg.scheduler.warmup_steps or cfg.scheduler.warmup_epochs * batches
    lr = logged(run_dir_of(cfg), "lr-AdamW/decay")
    expected = [
        base * (start_factor + (1 - start_factor) * t / w) if t < w else cos_anneal(base, eta_min, (t - w) / (total - w))
        for t in range(total)
    ]
    np.testing.assert_allclose(lr, expected, rtol=RTOL)
    assert lr[0] == pytest.approx(start_factor * base, rel=RTOL) and lr[w] == pytest.approx(base, rel=RTOL)
    assert lr[-1] > eta_min


def test_warmup_epochs_in_front_of_step(train_run):
    epochs, start_factor, gamma = 5, 0.2, 0.5
    cfg, _ = train_run(
        [
            "scheduler=step",
            "scheduler.warmup_epochs=2",
            "scheduler.step_size=1",
            f"scheduler.gamma={gamma}",
            f"scheduler.warmup_start_factor={start_factor}",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_train_batches=1",
            *EVERY_STEP,
        ]
    )
    base = cfg.optimizer.lr
    lr = logged(run_dir_of(cfg), "lr-AdamW/decay")  # one step per epoch
    halfway = start_factor + (1 - start_factor) / 2
    expected = [base * start_factor, base * halfway, base, base * gamma, base * gamma**2]
    np.testing.assert_allclose(lr, expected, rtol=RTOL)


def plateau_reference(values, mode, patience, factor, lr, threshold=0.0):
    """The documented ReduceLROnPlateau rule (relative threshold, no cooldown): the LR each epoch runs at, given
    the monitored value at the end of every epoch. `patience` epochs without improvement are tolerated; the next
    one multiplies the LR by `factor`."""

    def improves(value, best):
        return value < best * (1 - threshold) if mode == "min" else value > best * (1 + threshold)

    best, bad, lrs = None, 0, []
    for value in values:
        lrs.append(lr)
        if best is None or improves(value, best):
            best, bad = value, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = lr * factor, 0
    return np.array(lrs)


class ScriptedMetric(Classifier):
    """The classifier whose validation logs `key` from a script (one value per epoch): a monitored metric we control."""

    def __init__(self, net, key: str, values: list[float], **kwargs):
        super().__init__(net, **kwargs)
        self.key, self.values = key, values

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log(self.key, float(self.values[self.current_epoch]))


@pytest.mark.parametrize(("monitor", "drops"), [("val/loss", [5]), ("val/acc", [4, 7])], ids=["min-mode", "max-mode"])
def test_plateau_drops_after_patience_epochs_without_improvement(compose_cfg, tmp_path, monitor, drops):
    values, patience, factor = [3.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0], 2, 0.5
    cfg = compose_cfg(
        [
            "scheduler=plateau",
            f"scheduler.monitor={monitor}",
            f"scheduler.patience={patience}",
            f"scheduler.factor={factor}",
            "scheduler.threshold=0.0",
            f"trainer.max_epochs={len(values)}",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            *EVERY_STEP,
        ]
    )
    validate(cfg)
    module = ScriptedMetric(
        instantiate(cfg.model),
        monitor,
        values,
        optimizer=OmegaConf.to_container(cfg.optimizer),
        scheduler=OmegaConf.to_container(cfg.scheduler),
    )
    trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(cfg.callbacks.lr_monitor)],
        logger=CSVLogger(tmp_path, name="csv", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    lr = logged(tmp_path, "lr-AdamW/decay")  # one step per epoch
    mode = "min" if monitor.endswith("loss") else "max"  # what scheduler.mode: null must infer
    np.testing.assert_allclose(lr, plateau_reference(values, mode, patience, factor, cfg.optimizer.lr), rtol=RTOL)
    assert [e for e in range(1, len(lr)) if lr[e] < lr[e - 1]] == drops


def test_plateau_on_the_classifiers_val_loss(train_run):
    """The real module's val/loss drives it: with a tiny LR val/loss moves less than the 1% threshold, so with
    patience 0 the LR is cut after every epoch but the first (which sets the best)."""
    cfg, results = train_run(
        [
            "scheduler=plateau",
            "scheduler.patience=0",
            "scheduler.factor=0.5",
            "scheduler.threshold=0.01",
            "optimizer.lr=1.0e-6",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=2",
            *EVERY_STEP,
        ]
    )
    assert results["status"] == "completed"
    frame = pd.read_csv(run_dir_of(cfg) / "csv" / "metrics.csv")
    assert set(LOGGED_METRICS) <= set(frame.columns)  # the names validate() accepts for scheduler.monitor
    val_loss = frame["val/loss"].dropna().to_numpy()
    lr = logged(run_dir_of(cfg), "lr-AdamW/decay")[::2]  # two steps per epoch
    expected = plateau_reference(val_loss, "min", 0, 0.5, cfg.optimizer.lr, threshold=cfg.scheduler.threshold)
    np.testing.assert_allclose(lr, expected, rtol=RTOL)
    assert lr[2] < lr[1]


@pytest.mark.parametrize(("monitor", "mode"), [("val/loss", "min"), ("val/acc_best", "max"), ("train/acc", "max")])
def test_plateau_mode_follows_the_monitored_metric(monitor, mode):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    node = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": None, "monitor": monitor}
    config = build_scheduler(optimizer, node, trainer=None)
    assert config["scheduler"].mode == mode and config["monitor"] == monitor and config["interval"] == "epoch"


def test_onecycle_steps_per_batch_unless_told():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    node = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "total_steps": 10}
    config = build_scheduler(optimizer, node, trainer=None)
    assert config["interval"] == "step" and optimizer.param_groups[0]["max_lr"] == 0.1


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["scheduler=plateau", "scheduler.monitor=val/accuracy"], "scheduler.monitor", ", ".join(LOGGED_METRICS)),
        (["scheduler=plateau", "scheduler.monitor=test/acc"], "scheduler.monitor", "a metric the module logs"),
        (["scheduler=plateau", "scheduler.monitor=val/acc", "scheduler.mode=up"], "scheduler.mode", "one of min, max"),
        (["scheduler=onecycle", "trainer.max_epochs=-1"], "trainer.max_epochs", "a finite number of steps"),
        (["scheduler=cosine", "trainer.max_epochs=-1", "trainer.max_steps=50"], "trainer.max_epochs", "epochs"),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size", "a positive integer"),
        (["scheduler=step", "scheduler.step_size=-2"], "scheduler.step_size", "a positive integer"),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma", "a number > 0"),
        (["scheduler=step", "scheduler.gamma=-0.5"], "scheduler.gamma", "a number > 0"),
        (["scheduler=onecycle", "scheduler.pct_start=0"], "scheduler.pct_start", "(0, 1)"),
        (["scheduler=onecycle", "scheduler.pct_start=1.0"], "scheduler.pct_start", "(0, 1)"),
        (["scheduler=onecycle", "scheduler.pct_start=1.5"], "scheduler.pct_start", "(0, 1)"),
        (["scheduler=cosine", "scheduler.interval=batch"], "scheduler.interval", "epoch, step"),
        (["scheduler=onecycle", "scheduler.interval=Step"], "scheduler.interval", "epoch, step"),
        (["scheduler=cosine", "scheduler.frequency=2"], "scheduler.frequency", "1 when"),
        (["scheduler=cosine", "scheduler.warmup_steps=10"], "scheduler.warmup_steps", "interval=step"),
        (["scheduler=cosine", "scheduler.warmup_epochs=10"], "scheduler.warmup_epochs", "fewer than"),
        (["scheduler=onecycle", "+scheduler.warmup_steps=10"], "scheduler.warmup_steps", "pct_start"),
        (["scheduler=plateau", "+scheduler.warmup_epochs=1"], "scheduler.warmup_epochs", "SequentialLR"),
        (["scheduler=none", "+scheduler.warmup_epochs=1"], "scheduler.warmup_epochs", "pick a scheduler"),
        (
            ["scheduler=onecycle", "optimizer=rmsprop", "scheduler.cycle_momentum=true"],
            "scheduler.cycle_momentum",
            "RMSprop runs without momentum",
        ),
        (
            ["scheduler=onecycle", "optimizer=sgd", "optimizer.momentum=0", "scheduler.cycle_momentum=true"],
            "scheduler.cycle_momentum",
            "SGD runs without momentum",
        ),
    ],
)
def test_bad_scheduler_values_are_one_line_before_training(compose_cfg, overrides, key, allowed):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as caught:
        run(cfg)  # validate() comes first: nothing is built, no log is written
    message = str(caught.value)
    assert caught.value.key == key and "\n" not in message
    assert message.startswith(f"{key}=") and "is not allowed: expected" in message and allowed in message
    assert not (run_dir_of(cfg) / "csv").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler=onecycle", "optimizer=sgd"],
        ["scheduler=onecycle", "optimizer=rmsprop"],  # no momentum: cycle_momentum null leaves it alone
        ["scheduler=onecycle", "trainer.max_epochs=-1", "trainer.max_steps=100"],
        ["scheduler=plateau", "scheduler.monitor=val/acc_best"],
        ["scheduler=step", "scheduler.interval=step", "scheduler.warmup_steps=100"],
    ],
)
def test_good_scheduler_nodes_pass_validation(compose_cfg, overrides):
    validate(compose_cfg(overrides))
