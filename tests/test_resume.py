"""Kill a run mid-epoch (SIGKILL, SIGTERM), resume it from its last checkpoint, compare with an uninterrupted run."""

import json
import os
import subprocess
import sys

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


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, data_dir):
    reference = train(tmp_path / "reference", data_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed = train(
        tmp_path / "killed", data_dir, "+callbacks.signal._target_=tests.signals.SignalAt", "+callbacks.signal.step=60"
    )  # epoch 1, batch 20 of 40
    assert killed.returncode == -9
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0 and last["global_step"] == 40  # the end-of-epoch-0 checkpoint survived the kill

    resumed = train(tmp_path / "killed", data_dir, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = results(tmp_path / "reference"), results(tmp_path / "killed")
    assert got["status"] == "completed"
    for key in ("val/acc_best", "test/acc", "test/loss", "val/loss", "train/loss"):
        assert got["metrics"][key] == expected["metrics"][key], key
    final = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    ref_final = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == ref_final["global_step"] == 120
    for name, tensor in ref_final["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name


def test_sigterm_saves_checkpoint_and_resumes(tmp_path, data_dir):
    run_dir = tmp_path / "preempted"
    term = train(
        run_dir,
        data_dir,
        "+callbacks.signal._target_=tests.signals.SignalAt",
        "+callbacks.signal.step=50",
        "+callbacks.signal.signal_name=SIGTERM",
    )
    assert term.returncode == 143, term.stderr[-3000:]
    assert f"preempted (SIGTERM): saved {run_dir}/checkpoints/last.ckpt" in term.stderr
    assert results(run_dir)["status"] == "preempted"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 50  # mid-epoch 1, written on the signal, not the end-of-epoch-0 one

    resumed = train(run_dir, data_dir, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(run_dir)["status"] == "completed"
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 120  # the resumed epoch finished its remaining batches, no more, no fewer


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
