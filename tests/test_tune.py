"""The tuning sweeper (hparams_search=tune) on real Optuna storage: search spaces from the registry, racing, a sweep
that prunes and resumes without training a completed trial again, bad input refused before any trial, a worker
killed mid-trial (heartbeat, retry), and two workers sharing one study on a PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from optimlight.plugin.errors import ConfigError
from optimlight.tools.tuning.racing import next_round, racing
from optimlight.tools.tuning.space import Dimension, dimensions, grid_points, overrides
from optimlight.tools.tuning.storage import open_storage
from optimlight.tools.tuning.studies import settle_ended
from tests.conftest import REPO

#: A trial in a few seconds on the synthetic data: enough epochs for the pruner to act.
QUICK = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
]


def study_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def records(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/results.json")}


@pytest.mark.parametrize(
    "choices, searched",
    [
        (["optimizer=sgd"], {"lr": "optimizer.lr", "momentum": "optimizer.momentum", "weight_decay": "optimizer.weight_decay"}),
        (
            ["optimizer=adam", "scheduler=cosine"],
            {
                "lr": "optimizer.lr",
                "momentum": "optimizer.betas",
                "weight_decay": "optimizer.weight_decay",
                "warmup_epochs": "scheduler.warmup_epochs",
            },
        ),
        (["optimizer=adadelta"], {"lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay"}),
        (["optimizer=lbfgs"], {"lr": "optimizer.lr"}),
    ],
)
def test_space_families_follow_the_registry(compose_cfg, choices, searched):
    space = {
        "lr": {"low": 1e-4, "high": 1.0, "log": True},
        "momentum": {"low": 0.8, "high": 0.99},
        "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
        "warmup_epochs": {"low": 0, "high": 2},
    }
    cfg = compose_cfg(choices)
    dims = dimensions(space, cfg, " ".join(choices))
    assert {d.name: d.key for d in dims} == searched
    params = {"lr": 0.05, "momentum": 0.85, "weight_decay": 1e-4, "warmup_epochs": 1}
    lines = overrides(dims, params, cfg)
    if "optimizer=adam" in choices:
        assert "optimizer.betas=[0.85,0.999]" in lines and "scheduler.warmup_epochs=1" in lines
    assert "optimizer.lr=0.05" in lines


def test_space_refuses_a_key_the_config_lacks_and_a_bad_range(compose_cfg):
    cfg = compose_cfg(["optimizer=sgd"])
    with pytest.raises(
        ConfigError, match=r"hydra.sweeper.space.optimizer.betas='optimizer.betas' .*optimizer=sgd has no optimizer.betas"
    ):
        dimensions({"optimizer": {"betas": {"low": 0.1, "high": 0.9}}}, cfg, "optimizer=sgd")
    with pytest.raises(ConfigError, match=r"hydra.sweeper.space.lr=.* low > 0 on a log scale"):
        dimensions({"lr": {"low": 0, "high": 1, "log": True}}, cfg, "optimizer=sgd")


def test_the_grid_is_even_in_each_dimension_and_its_size_is_the_budget():
    lr = Dimension("lr", "optimizer.lr", 1e-4, 1.0, True, None)
    points = grid_points([lr], 8)["lr"]
    assert points[0] == 1e-4 and points[-1] == 1.0 and len(points) == 8
    ratios = [b / a for a, b in zip(points, points[1:])]
    assert max(ratios) / min(ratios) < 1.01  # log-spaced: 1e-4 ... 1 in steps of 10^(4/7)
    assert points[2] == 0.00139 and all(p == float(f"{p:.3g}") for p in points)  # a run dir reads lr=0.00139
    momentum = Dimension("momentum", "optimizer.momentum", 0.8, 0.99, False, None)
    assert grid_points([lr, momentum], 9) == {"lr": [1e-4, 0.01, 1.0], "momentum": [0.8, 0.895, 0.99]}
    with pytest.raises(ConfigError, match=r"hydra.sweeper.n_trials=10 .* k\^2 \(k >= 2\) for sampler=grid over 2"):
        grid_points([lr, momentum], 10)
    warmup = Dimension("warmup_epochs", "scheduler.warmup_epochs", 0, 1, False)  # int bounds: integers
    with pytest.raises(ConfigError, match=r"hydra.sweeper.space.warmup_epochs='0..1' .* 3 distinct points"):
        grid_points([warmup], 3)


def test_a_grid_study_tries_every_point_once_under_its_pruner(multirun, tmp_path):
    """sampler=grid with successive halving: the budget is the grid, each point one trial (Optuna's own grid sampler
    stops the study after its last point, which raises in the sweeper's ask-and-tell loop)."""
    sweep = tmp_path / "sweep"
    args = ["hparams_search=tune", "optimizer=sgd", *QUICK, "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=4"]
    off = ["hydra.sweeper.space.momentum=null", "hydra.sweeper.space.weight_decay=null", "hydra.sweeper.final.run=false"]
    assert multirun([*args, *off], sweep) == 0
    trials = study_trials(f"sqlite:///{sweep / 'optuna.db'}", "tune/optimizer=sgd")
    assert sorted(t.params["lr"] for t in trials) == [1e-4, 0.00215, 0.0464, 1.0]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_racing_drops_a_configuration_significantly_behind_and_stops_with_one_left():
    close = {"a": [0.90, 0.91, 0.905], "b": [0.50, 0.51, 0.49], "c": [0.905, 0.89, 0.91]}
    assert racing(close, 0.05) == ["a", "c"]
    assert next_round(close, {k: 3 for k in close}, 0.05, 2, 5) == ["a", "c"]
    assert next_round(close, {k: 5 for k in close}, 0.05, 2, 5) == []  # at the maximum: the verdict stands
    apart = {"a": [0.90, 0.91, 0.905], "b": [0.50, 0.51, 0.49]}
    assert next_round(apart, {"a": 3, "b": 3}, 0.05, 2, 5) == []  # a lone leader: more seeds change nothing
    assert next_round({"a": [0.9], "b": []}, {"a": 1, "b": 1}, 0.05, 2, 5) == ["a", "b"]  # up to min_seeds first


@pytest.mark.parametrize(
    "override, line",
    [
        ("hydra.sweeper.storage=redis://localhost", "hydra.sweeper.storage='redis://localhost' is not allowed: expected null"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is not allowed: expected a trial budget >= 1 per study"),
        (
            "+hydra.sweeper.space.optimizer.nesterov_lr={low:0.1,high:0.9}",
            "hydra.sweeper.space.optimizer.nesterov_lr='optimizer.nesterov_lr' is not allowed: expected a key of every study's config (optimizer=sgd has no optimizer.nesterov_lr)",
        ),
        (
            "callbacks.tune_pruning.monitor=val/nothing",
            "callbacks.tune_pruning.monitor='val/nothing' is not allowed: expected null or a metric the run logs",
        ),
        (
            "hydra.sweeper.sampler=grid",
            "hydra.sweeper.n_trials=16 is not allowed: expected k^3 (k >= 2) for sampler=grid over 3 searched keys",
        ),
        (
            "optimizer.lr=interval(0.01,0.1)",
            "optimizer.lr='interval(0.01,0.1)' is not allowed: expected a list (a,b,c): searched ranges go in hydra.sweeper.space.optimizer.lr",
        ),
    ],
)
def test_bad_tuning_input_is_one_line_before_any_trial(multirun, tmp_path, capsys, override, line):
    code = multirun(["hparams_search=tune", "optimizer=sgd,adam", *QUICK, override], tmp_path / "sweep")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: {line}")
    assert not (tmp_path / "sweep" / "search").exists()


def studies_agree_with_records(storage: str, sweep: Path, name: str, n_trials: int) -> int:
    """The study `tune/optimizer=<name>` and its trials' run records agree, trial by trial; the epochs they trained."""
    trials = study_trials(storage, f"tune/optimizer={name}")
    runs = records(sweep / "search" / f"optimizer={name}")
    assert len(trials) == n_trials and set(runs) == {f"trial-{t.number}" for t in trials}
    for t in trials:
        record = runs[f"trial-{t.number}"]
        reported = [t.intermediate_values[epoch] for epoch in sorted(t.intermediate_values)]
        assert reported == sorted(reported)  # the best val/acc so far, what selection uses, not one epoch's
        status = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[t.state]
        assert record["status"] == status
        if status == "completed":
            assert t.value == record["metrics"]["val/acc_best"] == reported[-1] and len(record["epoch_times"]) == 3
        if status == "pruned":
            assert len(record["epoch_times"]) < 3 and "test/acc" not in record["metrics"]
    return sum(len(r["epoch_times"]) for r in runs.values())


def test_a_sweep_prunes_selects_on_validation_reruns_with_seeds_and_resumes_without_retraining(multirun, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = ["hparams_search=tune", "optimizer=sgd,adam", *QUICK, "hydra.sweeper.n_trials=5", "hydra.sweeper.final.seeds=2"]
    assert multirun(args, sweep) == 0
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    epochs = sum(studies_agree_with_records(storage, sweep, name, 5) for name in ("sgd", "adam"))
    for name in ("sgd", "adam"):
        trials = study_trials(storage, f"tune/optimizer={name}")
        best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        finals = records(sweep / "final" / f"optimizer={name}")
        assert set(finals) == {"seed=43", "seed=44"}  # the search seed is 42
        overrides_file = sweep / "final" / f"optimizer={name}" / "seed=43" / ".hydra" / "overrides.yaml"
        assert f"optimizer.lr={best.params['lr']!r}" in overrides_file.read_text()
    pruned = sum(r["status"] == "pruned" for n in ("sgd", "adam") for r in records(sweep / "search" / f"optimizer={n}").values())
    assert pruned >= 1 and epochs < 2 * 5 * 3
    tune_md = (sweep / "tune.md").read_text()
    assert f"{epochs} search epochs trained in this sweep dir" in tune_md and "## Final comparison" in tune_md
    assert "| optimizer=sgd | 5 (" in tune_md and (sweep / "lr_sensitivity.png").stat().st_size > 10_000
    assert "pruned" in (sweep / "search" / "summary.md").read_text()
    assert (sweep / "final" / "comparison.md").exists() and (sweep / "search" / "comparison.md").exists()
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("search/*/*/results.json")}

    capsys.readouterr()
    assert multirun(args, sweep) == 0  # the same command again: every trial and final is done
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("search/*/*/results.json")} == stamps
    assert len(study_trials(storage, "tune/optimizer=sgd")) == 5
    assert capsys.readouterr().out.count("already holds a completed run") == 4  # the finals, skipped


def test_trials_train_as_populations_and_their_studies_prune_them(multirun, tmp_path, capfd):
    """hydra/launcher=population: each batch's trials (one per study) train as one population, and each reports to
    its study after every epoch as a run alone does, which prunes some."""
    sweep = tmp_path / "sweep"
    args = ["hparams_search=tune", "hydra/launcher=population", "optimizer=sgd,adam", *QUICK, "hydra.sweeper.n_trials=5"]
    assert multirun([*args, "hydra.sweeper.final.run=false"], sweep) == 0
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    for name in ("sgd", "adam"):
        studies_agree_with_records(storage, sweep, name, 5)
    runs = [r for name in ("sgd", "adam") for r in records(sweep / "search" / f"optimizer={name}").values()]
    assert all(r["population"]["members"] == 2 for r in runs)  # trained together, not alone
    assert sum(r["status"] == "pruned" for r in runs) >= 1
    assert "runs alone" not in capfd.readouterr().err


def test_a_trial_whose_run_ended_before_its_worker_told_the_study_is_settled_from_its_record(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 1, 2, 1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done, pruned, running = (study.ask() for _ in range(3))
    for trial in (done, pruned, running):
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
    written = {done.number: {"status": "completed", "metrics": {"val/acc_best": 0.83}}, pruned.number: {"status": "pruned"}}
    settle_ended(study, lambda number: written.get(number, {}))
    states = {t.number: (t.state, t.value) for t in study.get_trials()}
    assert states == {
        done.number: (TrialState.COMPLETE, 0.83),
        pruned.number: (TrialState.PRUNED, None),
        running.number: (TrialState.RUNNING, None),  # no record yet: still its worker's, or stale later
    }


def worker(data_dir: Path, sweep: Path, extra: list[str], log: Path, grace: int = 4) -> subprocess.Popen:
    """`python train.py -m hparams_search=tune ...` as its own process (a worker on another machine)."""
    cmd = [sys.executable, "train.py", "-m", "hparams_search=tune", "optimizer=sgd", f"data.data_dir={data_dir}", *QUICK]
    cmd += ["trainer.max_epochs=4", "trainer.limit_train_batches=40", "hydra.sweeper.heartbeat_interval=1"]
    cmd += [f"hydra.sweeper.grace_period={grace}", "hydra.sweeper.pruner=none", f"hydra.sweep.dir={sweep}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def kill_mid_trial(process: subprocess.Popen, search: Path, completed: int, timeout: float = 240) -> None:
    """SIGKILL `process` once `completed` of its trials finished and the next one is training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list(search.glob("*/trial-*"))
        done = [r for r in runs if (r / "results.json").exists()]
        training = [r for r in runs if not (r / "results.json").exists() and (r / ".hydra").exists()]
        if len(done) >= completed and training:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        assert process.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
    raise AssertionError("no trial was training in time")


@pytest.mark.slow
def test_a_killed_worker_loses_no_completed_trial_and_its_trial_is_retried(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    extra = ["hydra.sweeper.n_trials=3", "hydra.sweeper.final.seeds=1"]
    # the grace period outlasts the re-run's start: it fills the budget first, then must pick up the killed trial's retry
    first = worker(data_dir, sweep, extra, tmp_path / "first.log", grace=25)
    kill_mid_trial(first, sweep / "search", completed=1)
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    before = study_trials(storage, "tune/optimizer=sgd")
    killed = [t for t in before if t.state == TrialState.RUNNING]
    kept = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert len(killed) == 1 and len(kept) >= 1

    second = worker(data_dir, sweep, extra, tmp_path / "second.log", grace=25)  # the same command, re-run
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = study_trials(storage, "tune/optimizer=sgd")
    assert {t.number: t.value for t in after if t.number in kept} == kept  # completed trials kept, not retrained
    (stale,) = [t for t in after if t.number == killed[0].number]
    assert stale.state == TrialState.FAIL
    (retry,) = [t for t in after if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == stale.number]
    assert retry.state == TrialState.COMPLETE and retry.params == stale.params
    counted = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 3  # the budget: the stale trial's place went to its retry
    assert "| optimizer=sgd | 3 (3 / 0 / 0) |" in (sweep / "tune.md").read_text()  # the report counts the same


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(data_dir, tmp_path):
    url = os.environ.get("OPTIMLIGHT_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL (.ci/postgres) and set OPTIMLIGHT_TEST_POSTGRES")
        pytest.skip("no PostgreSQL server: run `export OPTIMLIGHT_TEST_POSTGRES=$(bash .ci/postgres)` first")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    shared = [f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}", "hydra.sweeper.n_trials=6"]
    main = worker(data_dir, tmp_path / "a", [*shared, "hydra.sweeper.final.seeds=1"], tmp_path / "a.log")
    helper = worker(data_dir, tmp_path / "b", [*shared, "hydra.sweeper.final.run=false"], tmp_path / "b.log")
    kill_mid_trial(helper, tmp_path / "b" / "search", completed=1)
    kept = {t.number for t in study_trials(url, f"{name}/optimizer=sgd") if t.state == TrialState.COMPLETE}
    assert main.wait(timeout=400) == 0, (tmp_path / "a.log").read_text()[-3000:]

    trials = study_trials(url, f"{name}/optimizer=sgd")
    assert kept <= {t.number for t in trials if t.state == TrialState.COMPLETE}  # the helper's results stay
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 6  # the budget, across both workers
    ran = [
        p.parent.name
        for p in [*tmp_path.glob("a/search/*/trial-*/results.json"), *tmp_path.glob("b/search/*/trial-*/results.json")]
    ]
    assert len(ran) == len(set(ran)) >= 6  # no trial trained twice
    assert {"a", "b"} == {p.parts[-5] for p in tmp_path.glob("*/search/*/trial-*/results.json")}  # both did work
    assert records(tmp_path / "a" / "final" / "optimizer=sgd")["seed=43"]["status"] == "completed"
