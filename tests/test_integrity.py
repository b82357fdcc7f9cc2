"""Run integrity: what a resumed, spawned or unusual run leaves is what an uninterrupted plain run would leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from optimlight.app.loggers import sweep_group_name
from optimlight.app.preflight import preflight
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.param_groups import no_decay_names
from tests.conftest import REPO, TINY

EVERY_STEP = ["trainer.log_every_n_steps=1"]


def history(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without the seconds, which no two runs share."""
    return pd.read_csv(run_dir / "csv" / "metrics.csv").drop(columns="train/epoch_time")


def test_resuming_with_more_epochs_keeps_the_earlier_epochs_rows(train_run, tmp_path):
    """Was: csv `version: ""` made the resumed run's CSVLogger delete metrics.csv, leaving only the new epoch."""
    _, straight = train_run(["trainer.max_epochs=2"], run_dir=tmp_path / "straight")
    train_run(["trainer.max_epochs=1"], run_dir=tmp_path / "resumed")
    _, resumed = train_run(["trainer.max_epochs=2", "ckpt_path=last"], run_dir=tmp_path / "resumed")
    assert sorted(history(tmp_path / "resumed")["epoch"].dropna().unique()) == [0, 1, 2]  # 2: the test row
    pd.testing.assert_frame_equal(history(tmp_path / "resumed"), history(tmp_path / "straight"))
    assert len(resumed["epoch_times"]) == len(straight["epoch_times"]) == 2
    assert resumed["metrics"] == straight["metrics"]


def test_a_fresh_run_in_a_used_dir_starts_its_history_anew(train_run, tmp_path):
    train_run(["trainer.max_epochs=2"], run_dir=tmp_path / "run")
    train_run([], run_dir=tmp_path / "run")
    assert sorted(history(tmp_path / "run")["epoch"].dropna().unique()) == [0, 1]  # one epoch and its test row


def test_ddp_spawn_completes_with_epoch_times_one_record_and_one_history(tmp_path, data_dir):
    """Was: the spawned test process's CSV writer failed on the fit's columns; epoch_times came back empty."""
    run_dir = tmp_path / "spawn"
    cmd = [sys.executable, "train.py", f"data.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *TINY]
    cmd += ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "trainer.max_epochs=2", "trainer.limit_train_batches=4"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and len(record["epoch_times"]) == 2 and min(record["epoch_times"]) > 0
    assert "test/acc" in record["metrics"]
    assert [p.relative_to(run_dir) for p in run_dir.rglob("results.json")] == [Path("results.json")]
    assert [p.relative_to(run_dir) for p in run_dir.rglob("metrics.csv")] == [Path("csv/metrics.csv")]
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert frame["test/acc"].notna().sum() == 1 and frame["val/acc"].notna().sum() == 2


#: A rank as Lightning makes it (a gloo group, as trainer=ddp_cpu's), whose classifier is set up for fit and test;
#: the handler registered first runs last at exit (atexit is LIFO) and says whether the group outlived the rank.
GLOO_RANK = """
import atexit
import torch.distributed as dist
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.fabric.utilities.distributed import _init_dist_connection
from torch import nn
from optimlight.app.module import Classifier
atexit.register(lambda: print("group alive at exit" if dist.is_initialized() else "group destroyed at exit"))
_init_dist_connection(LightningEnvironment(), "gloo", global_rank=0, world_size=1)
module = Classifier(nn.Linear(4, 10), optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
module.setup("fit")
module.setup("test")
"""


def test_a_gloo_rank_destroys_its_process_group_at_exit():
    """Was: Lightning destroys the group at exit for NCCL alone; a gloo rank exited with it alive, and its threads
    could abort the process at interpreter exit (pytorch/pytorch#65513), seen once with ddp_spawn in CI."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)  # a free port of its own (an earlier run in this process may have set one)
    proc = subprocess.run([sys.executable, "-c", GLOO_RANK], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "group destroyed at exit"


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["scheduler.monitor=train/loss_step"], "scheduler.monitor", "a metric the module logs: train/loss, train/acc"),
        (["trainer.check_val_every_n_epoch=2"], "scheduler.frequency", "a multiple of trainer.check_val_every_n_epoch=2"),
        (["scheduler.interval=step"], "scheduler.interval", "epoch: val/loss is logged once per epoch"),
        (["trainer.limit_val_batches=0"], "scheduler.monitor", "a train/ metric"),
    ],
)
def test_plateau_refuses_a_monitor_that_is_missing_when_it_steps(compose_cfg, overrides, key, allowed):
    """Was: accepted, then 'ReduceLROnPlateau conditioned on metric ... which is not available' after epoch 0."""
    with pytest.raises(ConfigError) as error:
        preflight(compose_cfg(["scheduler=plateau", *overrides]))
    assert error.value.key == key and allowed in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.check_val_every_n_epoch=2", "scheduler.frequency=2"],
        ["trainer.check_val_every_n_epoch=2", "scheduler.monitor=train/loss"],
        ["scheduler.monitor=train/epoch_time", "scheduler.mode=min"],
    ],
)
def test_plateau_runs_with_every_monitor_the_checks_accept(train_run, overrides):
    _, results = train_run(["scheduler=plateau", "trainer.max_epochs=2", "trainer.limit_train_batches=2", *overrides])
    assert results["status"] == "completed" and len(results["epoch_times"]) == 2


def test_epoch_clock_pauses_for_mid_epoch_validation(train_run):
    """Was: with val_check_interval < 1 the clock stopped at the first validation and never restarted."""
    sleep = ["+callbacks.sleep._target_=tests.signals.SleepIn", "+callbacks.sleep.train=0.02", "+callbacks.sleep.val=0.05"]
    _, results = train_run(["trainer.max_epochs=2", "trainer.val_check_interval=0.25", *sleep])
    trained, validated = 8 * 0.02, 4 * 2 * 0.05  # 8 batches a epoch; 4 validations of 2 batches
    assert len(results["epoch_times"]) == 2
    assert all(trained <= t < trained + validated for t in results["epoch_times"]), results["epoch_times"]


def test_lr_find_apply_logs_the_lr_it_trains_with(compose_cfg):
    """Was: the config went to the loggers before the range test: hparams.yaml said lr 0.001."""
    from optimlight.app.run import run

    lr_find = ["tune=lr_find", "tune.num_training=20", "tune.apply=true", "trainer.limit_train_batches=30"]
    cfg = compose_cfg([*TINY, *lr_find])
    run(cfg)
    run_dir = Path(cfg.hydra.runtime.output_dir)
    suggestion = json.loads((run_dir / "lr_find.json").read_text())["suggestion"]
    assert suggestion != cfg.optimizer.lr
    logged = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert logged["optimizer"]["lr"] == suggestion


def test_bias_rule_takes_every_bias_by_its_name():
    """Was: only parameters named exactly `bias`; attention's in_proj_bias and LSTM's bias_ih/hh were decayed."""
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "lstm": nn.LSTM(8, 8), "head": nn.Linear(8, 2)})
    expected = {"attn.in_proj_bias", "attn.out_proj.bias", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "head.bias"}
    assert no_decay_names(model, ["bias"]) == expected


def test_lbfgs_counts_each_batch_once_and_refuses_skipping(train_run, compose_cfg):
    """Was: metrics updated (and loss_step/grad_norm logged) on each closure evaluation of the line search;
    skip_nonfinite_loss crashed in `float(closure())`."""
    cfg, results = train_run(["optimizer=lbfgs", "optimizer.max_iter=4", "trainer.limit_train_batches=4", *EVERY_STEP])
    frame = pd.read_csv(Path(cfg.hydra.runtime.output_dir) / "csv" / "metrics.csv")
    for column in ("train/loss_step", "train/grad_norm"):
        steps = frame.dropna(subset=[column])["step"]
        assert list(steps) == [0, 1, 2, 3], column  # once per optimizer step
    assert results["metrics"]["train/loss"] == pytest.approx(frame["train/loss_step"].mean(), rel=1e-5)
    with pytest.raises(ConfigError, match="module.skip_nonfinite_loss=True is not allowed: expected false with LBFGS"):
        preflight(compose_cfg(["optimizer=lbfgs", "module.skip_nonfinite_loss=true"]))


def test_step_metrics_share_the_lr_monitors_steps(train_run):
    """Was: lr-* at steps n-1, 2n-1, ... and train/loss_step, train/grad_norm at 0, n, ...: never one W&B row."""
    cfg, _ = train_run(["trainer.log_every_n_steps=3"])
    frame = pd.read_csv(Path(cfg.hydra.runtime.output_dir) / "csv" / "metrics.csv")
    steps = {
        column: set(frame.dropna(subset=[column])["step"]) for column in ("lr-AdamW/decay", "train/loss_step", "train/grad_norm")
    }
    assert steps["lr-AdamW/decay"] == steps["train/loss_step"] == steps["train/grad_norm"] == {2, 5}


def test_two_sweeps_with_the_same_dir_name_get_two_wandb_groups(tmp_path):
    first, second = tmp_path / "a" / "2026-12-01_10-00-00", tmp_path / "b" / "2026-12-01_10-00-00"
    assert sweep_group_name(first) != sweep_group_name(second)
    assert sweep_group_name(first).startswith("2026-12-01_10-00-00-") and sweep_group_name(first) == sweep_group_name(first)


def test_resuming_a_run_sized_schedule_with_more_epochs_is_refused(train_run, tmp_path):
    """Was: cosine's T_max (and OneCycle's total_steps) came back from the checkpoint and the lr jumped."""
    run_dir = tmp_path / "run"
    train_run(["scheduler=cosine"], run_dir=run_dir)
    with pytest.raises(ConfigError) as error:
        train_run(["scheduler=cosine", "trainer.max_epochs=2", "ckpt_path=last"], run_dir=run_dir)
    assert error.value.key == "trainer.max_epochs" and error.value.value == 2
    assert "1 (the run's length when it started, 8 optimizer steps: CosineAnnealingLR was sized from it" in str(error.value)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and record["error"] == str(error.value)
    torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)  # the checkpoint is still there
