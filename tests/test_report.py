"""The sweep report from the run dirs alone (results.json, csv/metrics.csv, Hydra's .hydra/), without W&B."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread
from omegaconf import OmegaConf

from optimlight.tools import report
from optimlight.tools.sweep import common_overrides, find_jobs, job_label, summary_rows
from tests.conftest import TINY

EPOCHS = ["trainer.max_epochs=2"]


def write_overrides(cfg) -> None:
    """The .hydra/overrides.yaml Hydra writes into every job dir before the job runs."""
    hydra_dir = Path(cfg.hydra.runtime.output_dir) / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(cfg.hydra.overrides.task, hydra_dir / "overrides.yaml")


@pytest.fixture
def sweep_dir(tmp_path, compose_cfg, train_run):
    """A sweep dir laid out as Hydra does: jobs 0 (sgd) and 1 (adam) trained 2 epochs; job 2 died at once."""
    sweep = tmp_path / "sweep"
    for num, choice in enumerate(("sgd", "adam")):
        cfg, _ = train_run([f"optimizer={choice}", *EPOCHS], run_dir=sweep / str(num))
        write_overrides(cfg)
    write_overrides(compose_cfg([*TINY, "optimizer=adamw", *EPOCHS], run_dir=sweep / "2"))
    return sweep


def test_report_draws_each_job_from_its_run_dir(sweep_dir, tmp_path):
    jobs = find_jobs(sweep_dir)
    labels = {job.name: job_label(job, common_overrides(jobs)) for job in jobs}
    assert labels == {"0": "sgd", "1": "adam", "2": "adamw"}
    assert [row["status"] for row in summary_rows(jobs)] == ["completed", "completed", "failed"]

    fig = report.plot_curves(jobs, labels, tmp_path / "curves.png")
    accuracy = fig.axes[0]
    assert [line.get_label() for line in accuracy.get_lines()] == ["sgd", "adam"]  # job 2 has no curve
    for line, job in zip(accuracy.get_lines(), jobs):
        assert list(line.get_xdata()) == [1, 2]
        assert line.get_ydata()[-1] == pytest.approx(job.metric("val/acc"))

    figures = report.write_report(sweep_dir)
    assert [f.name for f in figures] == ["val_curves.png", "epoch_time.png", "test_acc.png"]
    for figure in figures:
        pixels = imread(figure)[..., :3]
        assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005, f"{figure.name} is blank"
    table = (sweep_dir / "summary.md").read_text()
    assert "| 0 | optimizer=sgd |" in table and "| failed |" in table


def test_report_cli_refuses_a_folder_without_jobs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        report.main([str(tmp_path)])
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    expected = "a sweep dir (job dirs with .hydra/overrides.yaml)"
    assert error.endswith(f"error: sweep_dir='{tmp_path}' is not allowed: expected {expected}")


def test_jobs_come_in_natural_order_and_sweeps_may_share_a_dir(tmp_path):
    for name in ("10", "2", "sgd-none", "adam-none"):  # numbered jobs, and named subdirs of two sweeps
        (tmp_path / name / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"job={name}"], tmp_path / name / ".hydra" / "overrides.yaml")
    assert [job.name for job in find_jobs(tmp_path)] == ["2", "10", "adam-none", "sgd-none"]
    assert {job.status for job in find_jobs(tmp_path)} == {"failed"}  # no results.json: died before writing it
