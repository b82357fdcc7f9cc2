"""What a user reads: a run's console without dependency noise, its train.log as the run's own record, and the
last lines of a run and of a sweep saying what they left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb

from tests.conftest import REPO, TINY

#: Lines seen on every run before issue 19, each with its cause removed or filtered (optimlight/app/quiet.py,
#: optimlight/app/loggers.py, optimlight/app/run.py).
NOISE = (
    "litlogger",  # Lightning's advert
    "The anonymous setting has no effect",  # W&B, on Lightning's anonymous=None
    "isinstance(treespec, LeafSpec)",  # torch's deprecation, in Lightning's _pytree
    'ckpt_path="best")` is called with Trainer configured with multiple `ModelCheckpoint`',
    "Total FLOPs: 0",  # the model summary without an example input
    "`weights_only` was not set",  # Lightning's LR finder
    "Run `wandb online`",  # W&B's offline header, beside optimlight's own line
    "wandb: Run history:",  # W&B's closing panel: results.json and the test table hold it
    "Loading `train_dataloader` to estimate number of stepping batches.",  # Lightning narrating a sized schedule
    "Total FLOPs",  # the model summary's total (its FLOPs column stays)
    "Total Flops",
)


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """A process where W&B finds no API key, so the default logger=wandb (mode auto) runs offline."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    wandb.teardown()
    yield
    wandb.teardown()


#: TINY with the default loggers.
DEFAULT_LOGGERS_TINY = [o for o in TINY if not o.startswith("logger=")]


def test_tiny_run_prints_no_noise_and_train_log_is_the_runs_record(no_credentials, data_dir, tmp_path):
    """`python train.py` with the default loggers (W&B offline beside CSV) and the LR finder before training."""
    run_dir = tmp_path / "run"
    # all 13 steps of the range test (no early stop), on an epoch long enough not to cut it short
    lr_find = ["tune=lr_find", "tune.apply=true", "tune.num_training=13", "tune.early_stop_threshold=null"]
    lr_find += ["trainer.limit_train_batches=16"]
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        f"data.data_dir={data_dir}",
        *DEFAULT_LOGGERS_TINY,
        "trainer.max_epochs=2",
        "scheduler=cosine",  # sized from the run: Lightning loads the training data early to count its batches
        *lr_find,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([*cmd, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert [line for line in NOISE if line in output] == []
    assert output.count("GPU available") == 1  # the trainer's device line, not the preflight check's too
    assert "smaller than the logging interval" in output  # a real warning (16 batches, log_every_n_steps=50) stays
    assert "W&B: no API key or login found, logging offline; upload later with: wandb sync" in output
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # silent, not disabled

    # the last line says what the run left, after W&B's own lines
    assert done.stdout.strip().splitlines()[-1] == f"results: {run_dir / 'results.json'} (run dir {run_dir})"

    log = (run_dir / "train.log").read_text()
    messages = [line.split("] - ", 1)[1] for line in log.splitlines() if "] - " in line]  # [time][logger][level] - ...
    assert any(m.startswith("W&B: no API key") for m in messages)
    assert any(m.startswith("lr_find: suggested lr ") and "train with: python train.py" in m for m in messages)
    table = messages.index(next(m for m in messages if m.startswith("param group")))
    assert [line.split()[:2] for line in log.splitlines() if line.startswith("AdamW/")] == [
        ["AdamW/decay", "0.01"],
        ["AdamW/no_decay", "0"],
    ]
    epochs = [m for m in messages if m.startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1", "epoch 2"]  # counted from 1, as time to target counts
    assert "Trainable params" in log and "FLOPs" in log  # the model summary is the run's record too
    assert all("train/loss=" in m and "val/acc=" in m for m in epochs)
    (test,) = [m for m in messages if m.startswith("test: ")]
    assert "test/acc=" in test and "test/loss=" in test
    assert messages[-1] == f"results: {run_dir / 'results.json'} (run dir {run_dir})"
    assert table < messages.index(epochs[0]) < messages.index(test)


def test_sweep_ends_with_what_it_left(no_credentials, multirun, tmp_path, capfd):
    sweep_dir = tmp_path / "sweep"
    assert multirun([*DEFAULT_LOGGERS_TINY, "optimizer=sgd,adam"], sweep_dir) == 0  # default loggers: W&B offline + CSV
    last = capfd.readouterr().out.strip().splitlines()[-1]
    assert last == f"sweep dir {sweep_dir}: summary.md, comparison.md, val_curves.png, epoch_time.png, test_acc.png"
    for name in last.split(": ", 1)[1].split(", "):
        assert (sweep_dir / name).is_file(), name
    assert list(sweep_dir.glob("wandb/offline-run-*"))  # the comparison's W&B run, offline and silent
    for job in ("0", "1"):
        assert "epoch 1: " in Path(sweep_dir / job / "train.log").read_text()
