"""Comparisons across seeds: the statistics against numpy/scipy, seeds that reach the data order, time-to-target,
a real multirun's comparison table and its W&B run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from optimlight.app.data import FashionMNISTDataModule
from optimlight.app.loggers import sweep_group_name
from optimlight.app.targets import time_to_target, time_to_target_from_metrics
from optimlight.tools.compare import holm, spread, welch_p
from optimlight.tools.sweep import find_jobs
from tests.conftest import TINY
from tests.wandb_offline import offline_runs


@pytest.mark.parametrize("values", [[0.9], [0.81, 0.86], [0.88, 0.9, 0.87, 0.91, 0.89]], ids=["n1", "n2", "n5"])
def test_spread_matches_numpy_and_scipy(values):
    s = spread(values)
    assert s.n == len(values) and s.mean == pytest.approx(np.mean(values))
    if len(values) == 1:
        assert s.std is None and s.ci_low is None and s.ci_high is None  # no interval from one seed
        return
    assert s.std == pytest.approx(np.std(values, ddof=1))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_spread_of_two_known_values():
    s = spread([1.0, 3.0])  # mean 2, std sqrt(2), half width t(0.975, 1) * sqrt(2) / sqrt(2) = 12.706
    assert s.mean == 2.0 and s.std == pytest.approx(math.sqrt(2))
    assert s.ci_high - s.mean == pytest.approx(12.7062, abs=1e-4)


@pytest.mark.parametrize(
    "a, b",
    [([0.80, 0.82, 0.81, 0.83], [0.84, 0.86, 0.85, 0.87]), ([0.80, 0.81, 0.80, 0.81, 0.80], [0.70, 0.90, 0.85])],
    ids=["equal-variances", "unequal-variances"],
)
def test_welch_p_is_scipys_unequal_variance_t_test(a, b):
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p(a, b) == pytest.approx(expected)
    # Welch's degrees of freedom, by hand: the p-value from the t statistic and the Welch-Satterthwaite df
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert welch_p(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_welch_p_needs_two_seeds_each():
    assert welch_p([0.9], [0.8, 0.85]) is None and welch_p([0.9, 0.9], [0.8, 0.8]) is None


def test_holm_adjusts_in_order_and_keeps_none():
    assert holm([0.01, None, 0.04, 0.03]) == [pytest.approx(0.03), None, pytest.approx(0.06), pytest.approx(0.06)]


def test_seed_changes_the_batch_order_and_split_seed_alone_the_split(data_dir):
    def first_batch(seed, split_seed=42):
        dm = FashionMNISTDataModule(data_dir=str(data_dir), batch_size=16, val_size=5000, seed=seed, split_seed=split_seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[1], dm.split["val"]

    (y1, val1), (y1_again, _), (y2, val2) = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(y1, y1_again) and not torch.equal(y1, y2)
    assert torch.equal(val1, val2)  # every seed validates on the same images
    assert not torch.equal(val1, first_batch(1, split_seed=7)[1])


def test_same_seed_deterministic_runs_match_and_another_seed_differs(train_run, tmp_path):
    det = ["trainer.deterministic=true", "trainer.accelerator=cpu"]
    _, a = train_run([*det, "seed=3"], tmp_path / "a")
    _, b = train_run([*det, "seed=3"], tmp_path / "b")
    _, c = train_run([*det, "seed=4"], tmp_path / "c")
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["train/loss"] != c["metrics"]["train/loss"]


def test_time_to_target_from_known_values():
    reached = time_to_target([0.80, 0.86, 0.89, 0.91], [100, 200, 300, 400], [1.5, 3.0, 4.5, 6.0], [0.85, 0.9, 0.95])
    assert reached == {
        "0.85": {"epoch": 2, "step": 200, "seconds": 3.0},
        "0.9": {"epoch": 4, "step": 400, "seconds": 6.0},
        "0.95": None,
    }


def test_time_to_target_from_a_metrics_file(tmp_path):
    rows = [  # Lightning's CSV: a train row (epoch time) and a validation row per epoch, step rows between
        {"epoch": 0, "step": 49, "train/epoch_time": 2.0},
        {"epoch": 0, "step": 49, "val/acc": 0.84},
        {"epoch": 1, "step": 60, "train/loss_step": 0.5},
        {"epoch": 1, "step": 99, "train/epoch_time": 2.5},
        {"epoch": 1, "step": 99, "val/acc": 0.87},
        {"epoch": 2, "step": 149, "train/epoch_time": 2.0},
        {"epoch": 2, "step": 149, "val/acc": 0.86},
    ]
    (tmp_path / "csv").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "csv" / "metrics.csv", index=False)
    assert time_to_target_from_metrics(tmp_path, [0.84, 0.85, 0.9]) == {
        "0.84": {"epoch": 1, "step": 50, "seconds": 2.0},
        "0.85": {"epoch": 2, "step": 100, "seconds": 4.5},
        "0.9": None,
    }


def test_a_run_records_time_to_target_in_its_results(train_run, tmp_path):
    _, record = train_run(["report.targets=[0.01,1.0]", "trainer.max_epochs=2"], tmp_path / "run")
    assert record["time_to_target"]["0.01"] == {"epoch": 1, "step": 8, "seconds": record["epoch_times"][0]}
    assert set(record["time_to_target"]) == {"0.01", "1"}
    assert time_to_target_from_metrics(tmp_path / "run", [0.01])["0.01"]["step"] == 8  # the CSV tells the same


def test_bad_targets_are_one_line(compose_cfg):
    from optimlight.app.validate import validate
    from optimlight.plugin.errors import ConfigError

    with pytest.raises(ConfigError, match=r"report.targets=\[0.9, 2\] is not allowed: expected a list of validation"):
        validate(compose_cfg(["report.targets=[0.9,2]"]))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_multirun_of_two_configurations_by_two_seeds_gives_two_rows_of_n_2(multirun, tmp_path):
    sweep = tmp_path / "cmp"
    overrides = [
        "optimizer=sgd,adam",
        "seed=1,2",
        *[o for o in TINY if not o.startswith("logger=")],
        "logger.wandb.mode=offline",
        "trainer.max_epochs=2",
    ]
    assert multirun(overrides, sweep) == 0
    jobs = find_jobs(sweep)
    rows = read_csv(sweep / "comparison.csv")
    assert len(jobs) == 4 and len(rows) == 2
    for row in rows:
        name = row["configuration"]
        mine = [j for j in jobs if f"optimizer={name}" in j.overrides]
        assert row["n"] == "2" and len(mine) == 2
        for metric in ("val/acc_best", "test/acc", "test/loss"):
            assert float(row[f"{metric} mean"]) == pytest.approx(np.mean([j.metric(metric) for j in mine]))
        assert float(row["val/acc_best std"]) == pytest.approx(np.std([j.metric("val/acc_best") for j in mine], ddof=1))
    assert float(rows[0]["val/acc_best mean"]) >= float(rows[1]["val/acc_best mean"])  # ranked on validation
    text = (sweep / "comparison.md").read_text()
    assert "## Verdict" in text and f"Best by mean val/acc_best: **{rows[0]['configuration']}**" in text
    assert ("beats" in text) or ("not distinguishable with n = 2/2 seeds" in text)
    for name in ("spread_curves.png", "test_acc_seeds.png"):
        assert (sweep / name).stat().st_size > 10_000
    # W&B: the seeds of one configuration share a job_type; the comparison is one run of the sweep's group
    runs = [run for job in jobs for run in offline_runs(job.dir)]
    by_type = {}
    for job, run in zip(jobs, runs):
        by_type.setdefault(run.job_type, set()).add(next(o for o in job.overrides if o.startswith("optimizer=")))
    assert len(by_type) == 2 and sorted(v for (v,) in by_type.values()) == ["optimizer=adam", "optimizer=sgd"]
    assert all(job_type.startswith(v) and len(job_type) <= 64 for job_type, (v,) in by_type.items())
    assert all("time_to_target/0.85/seconds" in run.summary for run in runs)
    (report,) = offline_runs(sweep)
    assert report.group == sweep_group_name(sweep) and report.job_type == "comparison"
    assert report.summary["configurations"] == 2 and "Best by mean val/acc_best" in report.summary["verdict"]
    (table,) = report.logged("comparison/table")
    assert table["_type"] == "table-file" and table["nrows"] == 2
    assert report.logged("comparison/spread_curves")


def test_performance_profile_across_two_workloads():
    from optimlight.tools.compare import Configuration, performance_profile, profile_fraction
    from optimlight.tools.sweep import Job

    def config(optimizer, model, seconds):
        jobs = [
            Job(
                f"{optimizer}-{model}-{i}",
                Path("."),
                [f"optimizer={optimizer}", f"model={model}", f"seed={i}"],
                {
                    "status": "completed",
                    "choices": {"model": model},
                    "time_to_target": {"0.85": None if s is None else {"epoch": 1, "step": 1, "seconds": s}},
                },
            )
            for i, s in enumerate(seconds)
        ]
        return Configuration(f"{optimizer} {model}", [f"optimizer={optimizer}", f"model={model}"], jobs)

    configs = [
        config("sgd", "mlp", [10, 14]),
        config("adam", "mlp", [6, 6]),
        config("sgd", "cnn", [30, 30]),
        config("adam", "cnn", [45, None]),  # one adam seed never got there
        Configuration("adamw mlp", ["optimizer=adamw", "model=mlp"], [], failed=2),
    ]  # failed: no workload
    workloads, ratios = performance_profile(configs, "0.85")
    assert workloads == ["cnn", "mlp"]
    assert ratios == {"sgd": [1.0, 2.0], "adam": [math.inf, 1.0]}
    assert profile_fraction(ratios["sgd"], 1.0) == 0.5 and profile_fraction(ratios["sgd"], 2.0) == 1.0
    assert profile_fraction(ratios["adam"], 100.0) == 0.5


def test_time_to_target_counts_epochs_not_validations(tmp_path):
    # validation every 2nd epoch: the first validation is epoch 2, after both epochs' training seconds
    assert time_to_target([0.9], [200], [5.0], [0.85], epochs=[2]) == {"0.85": {"epoch": 2, "step": 200, "seconds": 5.0}}
    rows = [
        {"epoch": 0, "step": 99, "train/epoch_time": 2.0},
        {"epoch": 1, "step": 199, "train/epoch_time": 3.0},
        {"epoch": 1, "step": 199, "val/acc": 0.9},
    ]
    (tmp_path / "csv").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "csv" / "metrics.csv", index=False)
    assert time_to_target_from_metrics(tmp_path, [0.85]) == {"0.85": {"epoch": 2, "step": 200, "seconds": 5.0}}


def test_verdict_leaves_out_configurations_without_the_rank_metric():
    from optimlight.tools.compare import Configuration, verdict
    from optimlight.tools.sweep import Job

    def job(name, value):
        return Job(name, Path("."), [f"optimizer={name}"], {"status": "completed", "metrics": {"val/acc_best": value}})

    configs = [
        Configuration("sgd", ["optimizer=sgd"], [job("sgd", 0.8), job("sgd", 0.82)]),
        Configuration("adam", ["optimizer=adam"], [job("adam", None)]),
    ]  # validation never ran
    assert verdict(configs) == ["1 configuration(s) with a completed val/acc_best: nothing to compare."]
