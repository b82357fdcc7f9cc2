"""`hydra/launcher=population`: members equal their runs alone, leave every artifact a run leaves, fail and resume
one by one; jobs that cannot join run alone."""

import json
import os
import signal

import pandas as pd
import pytest
import torch

from optimlight.app.callbacks import NonFiniteLossError
from optimlight.tools.batched import BatchedNetwork
from optimlight.tools.population_launcher import task_config, why_alone
from optimlight.tools.sweep import find_jobs
from tests.conftest import REPO, TINY
from tests.wandb_offline import offline_runs

POPULATION = ["hydra/launcher=population", *TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=6"]
STEP_ROWS = ["trainer.log_every_n_steps=2"]  # step metrics (lr, train/loss_step, grad_norm) on every other step
SCHEDULERS = sorted(path.stem for path in (REPO / "conf" / "scheduler").glob("*.yaml"))


def state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def history(run_dir):
    return pd.read_csv(run_dir / "csv" / "metrics.csv").drop(columns="train/epoch_time")


def alone(train_run, tmp_path, job):
    """The job's overrides run alone (in this process), in a run dir of its own."""
    run_dir = tmp_path / "alone" / job.name
    overrides = [o for o in job.overrides if not o.startswith("hydra/launcher")]
    train_run([*POPULATION[1:], *STEP_ROWS, *overrides], run_dir)
    return run_dir


def test_members_equal_their_runs_alone_in_float64(multirun, train_run, tmp_path):
    """Same initial weights and batch order, each member its own optimizer, schedule and seed: after 12 steps the
    float64 weights match the runs alone to 1e-10; every row of metrics.csv and results.json matches to 1e-6 (a run
    alone accumulates its metrics in torchmetrics' float32 states)."""
    sweep = tmp_path / "sweep"
    overrides = [*POPULATION, *STEP_ROWS, "trainer.precision=64-true", "scheduler=cosine", "optimizer=sgd,adam", "seed=1,2"]
    assert multirun(overrides, sweep) == 0
    jobs = find_jobs(sweep)
    assert [job.results["population"] for job in jobs] == [{"members": 4, "member": i} for i in range(4)]
    for job in jobs:
        solo = alone(train_run, tmp_path, job)
        got, expected = state(job.dir), state(solo)
        assert got["global_step"] == expected["global_step"] == 12
        assert got["state_dict"].keys() == expected["state_dict"].keys()
        for name, tensor in expected["state_dict"].items():
            assert torch.allclose(got["state_dict"][name], tensor, rtol=0, atol=1e-10), (job.name, name)
        pd.testing.assert_frame_equal(history(job.dir), history(solo), rtol=1e-6)
        record, solo_record = job.results, json.loads((solo / "results.json").read_text())
        assert record["metrics"] == pytest.approx(solo_record["metrics"], rel=1e-6)
        assert record["choices"] == solo_record["choices"] and record["status"] == "completed"
        assert (job.dir / "checkpoints" / "best.ckpt").exists()
        epochs = [
            line.split("] - ")[1].split(":")[0]
            for line in (job.dir / "train.log").read_text().splitlines()
            if "] - epoch" in line
        ]
        assert epochs == ["epoch 1", "epoch 2"]  # counted from 1, as a run alone and time to target count
    # four different runs, not one copied: each member's weights are its own
    finals = [state(job.dir)["state_dict"]["net.1.weight"] for job in jobs]
    assert all(not torch.equal(finals[0], other) for other in finals[1:])


def members_match_alone(sweep, train_run, tmp_path) -> list:
    """Each member's metrics.csv (column names and values) and results.json metrics equal its run alone's."""
    jobs = find_jobs(sweep)
    for job in jobs:
        solo = alone(train_run, tmp_path, job)
        got, expected = history(job.dir), history(solo)
        assert list(got.columns) == list(expected.columns), job.name
        pd.testing.assert_frame_equal(got, expected, rtol=1e-6, obj=job.name)
        solo_record = json.loads((solo / "results.json").read_text())
        assert job.results["metrics"] == pytest.approx(solo_record["metrics"], rel=1e-6), job.name
    return jobs


def test_every_scheduler_option_trains_in_a_population_as_it_does_alone(multirun, train_run, tmp_path):
    """Every option of conf/scheduler/ in one population, with one param group (`optimizer.no_decay=[]`: the lr
    key keeps its group's name, `lr-AdamW/decay`): each member logs the names and values its run alone logs."""
    sweep = tmp_path / "sweep"
    members = f"hydra.launcher.max_members={len(SCHEDULERS)}"
    overrides = [*POPULATION, *STEP_ROWS, "trainer.precision=64-true", "optimizer.no_decay=[]", members]
    assert multirun([*overrides, f"scheduler={','.join(SCHEDULERS)}"], sweep) == 0
    jobs = members_match_alone(sweep, train_run, tmp_path)
    assert sorted(job.results["choices"]["scheduler"] for job in jobs) == SCHEDULERS
    assert all(job.results["population"]["members"] == len(SCHEDULERS) for job in jobs)
    assert "lr-AdamW/decay" in history(jobs[0].dir).columns


def test_a_plateau_schedule_reduces_the_lr_of_members_as_alone(multirun, train_run, tmp_path):
    """ReduceLROnPlateau steps on the monitored metric after validation: mode=max on val/loss (which falls)
    reduces the lr after every epoch from the second on, in a population as alone."""
    sweep = tmp_path / "sweep"
    plateau = ["scheduler=plateau", "scheduler.patience=0", "scheduler.mode=max", "trainer.max_epochs=3"]
    assert multirun([*POPULATION, *STEP_ROWS, "trainer.precision=64-true", *plateau, "seed=1,2"], sweep) == 0
    jobs = members_match_alone(sweep, train_run, tmp_path)
    lrs = history(jobs[0].dir)["lr-AdamW/decay"].dropna()
    assert lrs.iloc[0] == pytest.approx(1e-3) and lrs.iloc[-1] == pytest.approx(1e-4)
    assert all(job.results["population"]["members"] == 2 for job in jobs)


def test_population_members_log_to_wandb_and_jobs_that_cannot_join_run_alone(multirun, tmp_path):
    """LBFGS runs alone; max_members=2 splits sgd+adam from adamw, which is left alone; each job its own W&B run."""
    sweep = tmp_path / "sweep"
    overrides = [*POPULATION, "logger=wandb", "logger.wandb.mode=offline", "hydra.launcher.max_members=2"]
    assert multirun([*overrides, "optimizer=sgd,adam,adamw,lbfgs"], sweep) == 0
    jobs = {job.results["choices"]["optimizer"]: job for job in find_jobs(sweep)}
    assert jobs["sgd"].results["population"] == {"members": 2, "member": 0}
    assert jobs["adam"].results["population"] == {"members": 2, "member": 1}
    assert "population" not in jobs["adamw"].results and "population" not in jobs["lbfgs"].results
    for name, job in jobs.items():
        assert job.status == "completed", job.results
        (run,) = offline_runs(job.dir)
        assert run.name == f"{name}-none" and run.exit_code == 0
        assert run.summary["test/acc"] == pytest.approx(job.metric("test/acc"))
        assert run.config["optimizer"]["_target_"].endswith(
            {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "lbfgs": "LBFGS"}[name]
        )
        assert run.logged("val/acc")  # the epoch rows reached W&B, not just the summary
    groups = {offline_runs(job.dir)[0].group for job in jobs.values()}
    assert len(groups) == 1  # the sweep's one group, population members and runs alone alike
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["status"]) == ["completed"] * 4


def test_a_member_whose_loss_turns_nonfinite_fails_as_alone_and_the_others_go_on(multirun, train_run, tmp_path):
    sweep = tmp_path / "sweep"
    assert multirun([*POPULATION, "optimizer=sgd", "optimizer.lr=0.01,1e12"], sweep) == 1  # a failed job: exit 1
    ok, diverged = find_jobs(sweep)
    assert ok.status == "completed" and diverged.status == "failed"
    assert diverged.results["error"].startswith("non-finite training loss at optimizer step")
    with pytest.raises(NonFiniteLossError) as alone_error:
        train_run([*POPULATION[1:], "optimizer=sgd", "optimizer.lr=1e12"], tmp_path / "alone")
    assert diverged.results["error"] == str(alone_error.value)  # the same step named
    last = ("checkpoints", "last.ckpt")  # diverged in epoch 0: no good checkpoint to keep, alone or not
    assert not diverged.dir.joinpath(*last).exists() and not (tmp_path / "alone").joinpath(*last).exists()


def test_sigterm_saves_every_member_mid_epoch_and_the_sweep_resumes_as_uninterrupted(multirun, tmp_path, monkeypatch):
    overrides = [*POPULATION, "trainer.max_epochs=3", "optimizer=sgd,adamw", "scheduler=cosine"]
    assert multirun(overrides, tmp_path / "reference") == 0

    calls = {"n": 0}
    to_members = BatchedNetwork.to_members

    def signal_at_step_8(self, leaves):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 1, batch 2 of 6
            os.kill(os.getpid(), signal.SIGTERM)
        return to_members(self, leaves)

    monkeypatch.setattr(BatchedNetwork, "to_members", signal_at_step_8)
    assert multirun(overrides, tmp_path / "sweep") == 143
    monkeypatch.setattr(BatchedNetwork, "to_members", to_members)
    for job in find_jobs(tmp_path / "sweep"):
        assert job.status == "preempted"
        saved = state(job.dir)
        assert saved["global_step"] == 8 and saved["population"]["position"] == 2

    assert multirun([*overrides, "ckpt_path=last"], tmp_path / "sweep") == 0
    for job, reference in zip(find_jobs(tmp_path / "sweep"), find_jobs(tmp_path / "reference")):
        assert job.results["metrics"] == reference.results["metrics"]
        for name, tensor in state(reference.dir)["state_dict"].items():
            assert torch.equal(state(job.dir)["state_dict"][name], tensor), name
        pd.testing.assert_frame_equal(history(job.dir), history(reference.dir))
        assert len(job.results["epoch_times"]) == 3


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["optimizer=lbfgs"], "optimizer: it re-evaluates its closure"),
        (["model=cnn"], "model: it has buffers"),
        (["model.dropout=0.2"], "model: it has dropout"),
        (["trainer.precision=bf16-mixed"], "trainer.precision=bf16-mixed"),
        (["trainer=ddp_cpu"], "trainer.devices"),
        (["data.augment=true"], "data: loader=tensor"),
        (["averaging=ema"], "callbacks: ema"),
        (["trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val"),
    ],
)
def test_why_a_job_runs_alone(compose_cfg, overrides, reason):
    assert why_alone(task_config(compose_cfg(overrides))).startswith(reason)


def test_the_default_mlp_and_its_optimizers_can_join(compose_cfg):
    for optimizer in ("sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta", "asgd", "radam"):
        assert why_alone(task_config(compose_cfg([f"optimizer={optimizer}", "scheduler=onecycle"]))) is None, optimizer


def test_max_members_must_be_a_positive_integer(multirun, tmp_path, capfd):
    assert multirun([*POPULATION, "hydra.launcher.max_members=0", "optimizer=sgd"], tmp_path / "sweep") == 1
    assert "hydra.launcher.max_members=0 is not allowed: expected a positive integer" in capfd.readouterr().err
