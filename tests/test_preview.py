"""The schedule preview: the curve Lightning logs and the run length it counts, without training."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from lightning import Callback
from matplotlib.image import imread

from optimlight.app.build import build_module
from optimlight.app.data import TRAIN_SIZE
from optimlight.app.plan import plan_run
from optimlight.plugin.errors import ConfigError
from optimlight.tools.preview import format_table, plot_curves, schedule_curves
from tests.conftest import REPO
from tests.metrics_csv import logged


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler=onecycle", "optimizer=sgd", "trainer.limit_train_batches=7", "trainer.accumulate_grad_batches=2"],
        # Lightning counts `frequency` in batches of the epoch: with accumulation some optimizer steps are skipped
        [
            "scheduler=step",
            "scheduler.interval=step",
            "scheduler.step_size=1",
            "scheduler.gamma=0.8",
            "scheduler.frequency=2",
            "trainer.limit_train_batches=7",
            "trainer.accumulate_grad_batches=2",
        ],
        [
            "scheduler=cosine",
            "scheduler.interval=step",
            "scheduler.warmup_epochs=1",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=3",
            "trainer.max_steps=8",
        ],
    ],
    ids=["onecycle-sgd-accumulate", "step-frequency2", "cosine-warmup-max_steps"],
)
def test_preview_is_the_curve_a_real_run_logs(train_run, overrides):
    cfg, _ = train_run(
        ["trainer.max_epochs=2", *overrides, "trainer.log_every_n_steps=1", "+callbacks.lr_monitor.log_momentum=true"]
    )
    curves = schedule_curves(cfg)
    run_dir, name = Path(cfg.hydra.runtime.output_dir), cfg.optimizer._target_.rsplit(".", 1)[-1]
    np.testing.assert_allclose(curves["lr/decay"], logged(run_dir, f"lr-{name}/decay"), rtol=1e-6)
    np.testing.assert_allclose(curves["momentum/decay"], logged(run_dir, f"lr-{name}/decay-momentum"), rtol=1e-6)
    assert curves["lr/decay"].min() < curves["lr/decay"].max()


class Counted(Exception):
    """Raised at the start of training with what Lightning counted, so the test stops before any step."""


class CountBatches(Callback):
    def on_train_start(self, trainer, pl_module):
        raise Counted(trainer.num_training_batches, trainer.estimated_stepping_batches)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["data.batch_size=100", "trainer.limit_train_batches=0.3", "trainer.accumulate_grad_batches=3"],
        ["trainer.max_epochs=-1", "trainer.max_steps=1000", "trainer.limit_train_batches=500"],
    ],
    ids=["defaults", "fraction-accumulate", "max_steps"],
)
def test_plan_counts_what_lightning_counts_on_the_full_data(compose_real_cfg, overrides):
    cfg = compose_real_cfg(overrides)
    trainer = instantiate(
        cfg.trainer,
        callbacks=[CountBatches()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with pytest.raises(Counted) as counted:
        trainer.fit(build_module(cfg), datamodule=instantiate(cfg.data))
    plan = plan_run(cfg)
    assert (plan.num_training_batches, plan.estimated_stepping_batches) == counted.value.args
    if not overrides:
        assert plan.num_training_batches == math.ceil((TRAIN_SIZE - cfg.data.val_size) / cfg.data.batch_size)


@pytest.mark.parametrize(
    ("monitor", "metrics", "factors"),
    [
        ("val/loss", [3.0, 2.0], [1, 1, 1, 1, 1, 0.5, 0.5, 0.5]),  # improves once, then flat from epoch 2
        ("val/acc", [0.5, 0.6], [1, 1, 1, 1, 1, 0.5, 0.5, 0.5]),  # max mode: rising is improving
        ("val/loss", [2.0, 3.0], [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25]),  # min mode: rising is no improvement
    ],
)
def test_plateau_preview_follows_a_made_up_metric(compose_cfg, monitor, metrics, factors):
    cfg = compose_cfg(
        [
            "scheduler=plateau",
            f"scheduler.monitor={monitor}",
            "scheduler.patience=2",
            "scheduler.factor=0.5",
            "scheduler.threshold=0",
            "trainer.max_epochs=8",
            "trainer.limit_train_batches=2",
        ]
    )
    curves = schedule_curves(cfg, metrics)  # the list's last value repeats: a plateau after it
    per_epoch = curves["lr/decay"][::2]
    np.testing.assert_allclose(per_epoch, cfg.optimizer.lr * np.array(factors), rtol=1e-6)


def test_plateau_preview_needs_the_made_up_metric(compose_cfg):
    with pytest.raises(ConfigError) as caught:
        schedule_curves(compose_cfg(["scheduler=plateau", "trainer.max_epochs=2"]))
    assert caught.value.key == "preview.metrics" and "val/loss" in str(caught.value)


def test_plot_and_table_show_momentum_only_where_it_cycles(compose_cfg):
    small = ["trainer.max_epochs=2", "trainer.limit_train_batches=10"]
    cfg = compose_cfg(["scheduler=onecycle", "optimizer=sgd", *small])
    sgd = schedule_curves(cfg)
    adamw = schedule_curves(compose_cfg(["scheduler=cosine", *small]))  # beta1 stays 0.9
    assert len(plot_curves(sgd).axes) == 2 and len(plot_curves(adamw).axes) == 1
    header, *rows = [line.split() for line in format_table(sgd).splitlines()]
    assert header == ["step", "epoch", "lr", "momentum"]
    peak = int(np.argmax(sgd["lr/decay"]))
    assert [str(peak), "0", f"{cfg.optimizer.lr:.4g}", f"{cfg.scheduler.base_momentum:.4g}"] in rows
    assert format_table(adamw).splitlines()[0].split() == ["step", "epoch", "lr"]


def preview_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "optimlight.tools.preview", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_writes_the_png_and_prints_the_table(compose_cfg, tmp_path):
    overrides = ["scheduler=onecycle", "optimizer=sgd", "trainer.max_epochs=10"]
    cfg = compose_cfg(overrides)
    proc = preview_cli(*overrides, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    per_epoch = math.ceil((TRAIN_SIZE - cfg.data.val_size) / cfg.data.batch_size)
    assert f"OneCycleLR on SGD (lr {cfg.optimizer.lr:g}): {per_epoch * 10} optimizer steps, {per_epoch} per epoch" in proc.stdout
    assert f"{cfg.optimizer.lr / (cfg.scheduler.div_factor * cfg.scheduler.final_div_factor):.4g}" in proc.stdout
    image = imread(tmp_path / "lr_schedule.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.std() > 0


@pytest.mark.slow
def test_cli_bad_value_is_one_line_and_exit_code_2(tmp_path):
    proc = preview_cli("scheduler=onecycle", "scheduler.pct_start=1.5", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: scheduler.pct_start=1.5 is not allowed: expected a number in (0, 1)")
    assert not (tmp_path / "lr_schedule.png").exists()
