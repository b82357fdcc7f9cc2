"""Hydra multiruns of the real `train.py` entry point, in this process (the basic launcher runs the jobs here,
joblib in worker processes): one offline W&B run per job in one group, summary.csv/md, failures, Optuna, SLURM."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from matplotlib.image import imread
from omegaconf import OmegaConf

from optimlight.app.config import CONFIG_DIR
from optimlight.app.loggers import sweep_group_name
from optimlight.tools import report
from optimlight.tools.sweep import find_jobs
from tests.conftest import TINY
from tests.wandb_offline import offline_runs

SWEEP_TINY = [o for o in TINY if not o.startswith("logger=")] + ["logger.wandb.mode=offline"]


def read_summary(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def only_run(job_dir: Path):
    (run,) = offline_runs(job_dir)
    return run


def test_grid_sweep_gives_one_wandb_run_per_job_in_one_group_a_summary_and_a_report(multirun, tmp_path):
    sweep = tmp_path / "grid"
    grid = ["optimizer=sgd,adam", "scheduler=none,cosine", *SWEEP_TINY]
    grid += ["trainer.max_epochs=2", "trainer.limit_train_batches=4"]
    assert multirun(grid, sweep) == 0
    jobs = find_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    runs = {job.name: only_run(job.dir) for job in jobs}
    assert len({run.id for run in runs.values()}) == 4
    assert {run.group for run in runs.values()} == {sweep_group_name(sweep)}
    for job in jobs:
        run, choices, metrics = runs[job.name], job.results["choices"], job.results["metrics"]
        assert run.name == f"{choices['optimizer']}-{choices['scheduler']}"
        job_config = OmegaConf.load(job.dir / ".hydra" / "config.yaml")  # what Hydra composed for this job
        for key in ("optimizer", "scheduler", "model", "data"):
            assert run.config[key] == OmegaConf.to_container(job_config[key], resolve=True), key
        assert run.config["trainer"]["max_epochs"] == 2
        assert run.exit_code == 0 and run.summary["status"] == "completed"
        assert run.summary["test/acc"] == pytest.approx(metrics["test/acc"])
        assert run.summary["val/acc_best"] == pytest.approx(metrics["val/acc_best"])
    assert {r.name for r in runs.values()} == {"sgd-none", "sgd-cosine", "adam-none", "adam-cosine"}

    rows = read_summary(sweep)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    swept = {f"optimizer={o} scheduler={s}" for o in ("sgd", "adam") for s in ("none", "cosine")}
    assert {row["overrides"] for row in rows} == swept
    for row, job in zip(rows, jobs):
        assert float(row["test/acc"]) == pytest.approx(job.results["metrics"]["test/acc"])
        assert float(row["s/epoch"]) == pytest.approx(job.results["mean_epoch_time"])
    summary_md = (sweep / "summary.md").read_text()
    assert summary_md.count("| completed |") == 4

    report.main([str(sweep)])
    for name in ("val_curves.png", "epoch_time.png", "test_acc.png"):
        pixels = imread(sweep / name)[..., :3]
        assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005, f"{name} is blank"


def test_a_failed_job_is_recorded_its_run_marked_failed_and_the_next_job_runs(multirun, tmp_path, data_dir):
    sweep = tmp_path / "failing"
    missing = tmp_path / "no-data"
    code = multirun([*SWEEP_TINY, "data.download=false", f"data.data_dir={missing},{data_dir}"], sweep)
    assert code == 1  # the sweep reports the failure, after running every job
    failed, completed = find_jobs(sweep)
    assert failed.status == "failed" and failed.results["error"].startswith("Fashion-MNIST not found")
    assert completed.status == "completed" and completed.results["metrics"]["test/acc"] > 0
    # the data is checked before any logger starts: the failed job left no W&B run
    assert offline_runs(failed.dir) == [] and not (failed.dir / "csv").exists()
    completed_run = only_run(completed.dir)
    assert completed_run.exit_code == 0 and completed_run.summary["status"] == "completed"
    assert [row["status"] for row in read_summary(sweep)] == ["failed", "completed"]
    assert read_summary(sweep)[0]["error"].startswith("Fashion-MNIST not found")  # the run's own line, as alone


@pytest.mark.slow
def test_tuning_studies_on_the_joblib_launcher(multirun, tmp_path, capfd):
    """Two studies of 2 trials, each batch's trials run in parallel by 2 joblib worker processes that report to the
    studies in the sweep dir's database; then one final seed each."""
    sweep = tmp_path / "tune"
    overrides = ["hparams_search=tune", "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    overrides += ["hydra.sweeper.n_trials=2", "hydra.sweeper.final.seeds=1", *SWEEP_TINY]
    assert multirun(overrides, sweep) == 0
    assert "Joblib.Parallel(n_jobs=2" in capfd.readouterr().out
    trials = find_jobs(sweep / "search")
    assert len(trials) == 4 and {job.status for job in trials} == {"completed"}
    runs = [only_run(job.dir) for job in trials]
    assert len({run.id for run in runs}) == 4 and {run.group for run in runs} == {sweep_group_name(sweep / "search")}
    for name in ("sgd", "adam"):
        study = optuna.load_study(study_name=f"tune/optimizer={name}", storage=f"sqlite:///{sweep / 'optuna.db'}")
        values = sorted(t.value for t in study.trials)
        assert values == sorted(j.metric("val/acc_best") for j in trials if j.name.startswith(f"optimizer={name}/"))
        (final,) = [j for j in find_jobs(sweep / "final") if j.name.startswith(f"optimizer={name}/")]
        assert f"optimizer.lr={study.best_params['lr']!r}" in final.overrides and final.status == "completed"
    assert len(read_summary(sweep / "search")) == 4


def test_slurm_launcher_config_gives_one_task_per_gpu():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "trainer=ddp"]
        cfg = compose("config", overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", -1)  # every GPU of the job, one rank per task
