"""Kill a run mid-epoch (SIGKILL, SIGTERM), resume it from its last checkpoint, compare with an uninterrupted run."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import REPO

# 3 epochs of 40 real batches, deterministic; the CNN has dropout and BatchNorm, so RNG state and running stats count
RUN = [
    "model=cnn",
    "model.channels=[8,16]",
    "model.hidden=32",
    "data.augment=true",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=40",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "logger=csv",
    "scheduler=cosine",
]


def train(run_dir, data_dir, *extra):
    cmd = [sys.executable, "train.py", f"data.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *RUN, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """`reference(loader)` -> the run dir of the uninterrupted run with `data.loader=loader` (trained once)."""
    runs = {}

    def _reference(loader):
        if loader not in runs:
            run_dir = tmp_path_factory.mktemp(f"reference-{loader}")
            proc = train(run_dir, data_dir, f"data.loader={loader}")
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[loader] = run_dir
        return runs[loader]

    return _reference


def assert_same_run(run_dir, reference_dir):
    """Weights, final metrics, every row of metrics.csv (the seconds aside) and one epoch time per epoch."""
    expected, got = results(reference_dir), results(run_dir)
    assert got["status"] == "completed"
    assert got["metrics"] == expected["metrics"]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    ref_final = torch.load(reference_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == ref_final["global_step"] == 120
    for name, tensor in ref_final["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    history, ref_history = (pd.read_csv(d / "csv" / "metrics.csv") for d in (run_dir, reference_dir))
    pd.testing.assert_frame_equal(history.drop(columns="train/epoch_time"), ref_history.drop(columns="train/epoch_time"))
    times, ref_times = got["epoch_times"], expected["epoch_times"]
    assert len(times) == len(ref_times) == 3
    assert min(times) > 0.2 * min(ref_times), (times, ref_times)  # every epoch's clock ran, the resumed one too
    assert list(history["train/epoch_time"].dropna().round(4)) == times


@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, data_dir, reference, loader):
    killed = train(
        tmp_path / "killed",
        data_dir,
        f"data.loader={loader}",
        "+callbacks.signal._target_=tests.signals.SignalAt",
        "+callbacks.signal.step=60",
    )  # epoch 1, batch 20 of 40
    assert killed.returncode == -9
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0 and last["global_step"] == 40  # the end-of-epoch-0 checkpoint survived the kill

    resumed = train(tmp_path / "killed", data_dir, f"data.loader={loader}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path / "killed", reference(loader))


@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_sigterm_saves_checkpoint_and_resumes(tmp_path, data_dir, reference, loader):
    run_dir = tmp_path / "preempted"
    term = train(
        run_dir,
        data_dir,
        f"data.loader={loader}",
        "+callbacks.signal._target_=tests.signals.SignalAt",
        "+callbacks.signal.step=50",
        "+callbacks.signal.signal_name=SIGTERM",
    )
    assert term.returncode == 143, term.stderr[-3000:]
    assert f"preempted (SIGTERM): saved {run_dir}/checkpoints/last.ckpt" in term.stderr
    assert results(run_dir)["status"] == "preempted"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 50  # mid-epoch 1, written on the signal, not the end-of-epoch-0 one

    resumed = train(run_dir, data_dir, f"data.loader={loader}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run_dir, reference(loader))


def test_resume_in_the_same_run_dir_continues_the_same_wandb_run(train_run, tmp_path):
    import wandb

    from tests.wandb_offline import offline_runs

    run_dir = tmp_path / "wandb-resume"
    wandb_offline = ["logger=wandb", "logger.wandb.mode=offline", "trainer.max_epochs=1"]
    try:
        train_run(wandb_offline, run_dir=run_dir)
        wandb.teardown()
        train_run([*wandb_offline, "trainer.max_epochs=2", "ckpt_path=last"], run_dir=run_dir)
        wandb.teardown()
    finally:
        wandb.teardown()
    first, second = offline_runs(run_dir)
    assert first.id == second.id == (run_dir / "wandb_run_id").read_text().strip()
    assert {first.exit_code, second.exit_code} == {0}


def test_a_resumed_fit_keeps_the_best_validation_accuracy_so_far(train_run, tmp_path):
    """val/acc_best is the best over the whole run, epochs before the resume included."""
    run_dir = tmp_path / "run"
    train_run([], run_dir)
    checkpoint_path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    checkpoint["state_dict"]["val_acc_best.max_value"] = torch.tensor(1.0)  # as if epoch 0 had been perfect
    torch.save(checkpoint, checkpoint_path)
    _, resumed = train_run(["trainer.max_epochs=2", "ckpt_path=last"], run_dir)
    assert resumed["status"] == "completed"
    assert resumed["metrics"]["val/acc_best"] == 1.0
    assert resumed["metrics"]["val/acc"] < 1.0  # the resumed epoch itself was not perfect
