"""`speed.num_threads: auto`: the rule on the real models and launchers, what a run sets, and the bench behind it.

No timings are asserted (bench/threads.py prints them): these tests check which count the rule picks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from optimlight.app import run, threads
from optimlight.app.run import apply_speed_settings, thread_count
from optimlight.app.threads import FLOPS_PER_THREAD, auto_threads, launcher_jobs, step_flops
from tests.conftest import load_bench
from tests.test_fuzz import outcome


@pytest.fixture
def no_omp_limit(monkeypatch):
    """No OMP_NUM_THREADS, whatever runs the tests (set first, so that teardown also removes what a run sets)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("OMP_NUM_THREADS")


@pytest.fixture
def two_cores(monkeypatch, no_omp_limit, restore_torch_settings):
    """The 2-core machine the thresholds were measured on, with no other process busy."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(run, "busy_cores", lambda: 0.0)


def work(compose_cfg, overrides=()) -> float:
    cfg = compose_cfg(list(overrides))
    return step_flops(cfg.model, cfg.data.batch_size)


def test_step_flops_count_the_forward_multiply_adds_of_a_batch(compose_cfg):
    """784-256-128-10 at batch 64: 2 x (784*256 + 256*128 + 128*10) x 64 FLOPs; the CNN's convolutions weigh more
    than its 0.4 M parameters (DeepOBS's MLP has 1.3 M and a third of the CNN's work)."""
    assert work(compose_cfg) == 2 * (784 * 256 + 256 * 128 + 128 * 10) * 64
    assert work(compose_cfg, ["data.batch_size=128"]) == 2 * work(compose_cfg)
    assert work(compose_cfg, ["model=cnn"]) > 3 * work(compose_cfg, ["model=deepobs_mlp"])


def test_small_models_get_one_thread_and_big_ones_more(compose_cfg, two_cores):
    for model in ("logreg", "mlp"):
        assert auto_threads(work(compose_cfg, [f"model={model}"])) == 1, model
    for model in ("deepobs_mlp", "cnn", "deepobs_2c2d"):
        assert auto_threads(work(compose_cfg, [f"model={model}"])) == 2, model
    # a population of 4 seed MLPs trained as one batched model is big enough for two
    assert auto_threads(work(compose_cfg)) == 1 and auto_threads(4 * work(compose_cfg)) == 2
    assert auto_threads(10 * FLOPS_PER_THREAD, cores=16) == 11


def test_jobs_never_run_more_threads_than_cores_in_total(no_omp_limit):
    for cores in range(1, 17):
        for jobs in range(1, cores + 1):
            for flops in (0, 1e6, FLOPS_PER_THREAD, 3e8, 1e9, 1e12):
                assert 1 <= jobs * auto_threads(flops, jobs, cores) <= cores
    assert auto_threads(1e12, jobs=3, cores=2) == 1  # more jobs than cores: one thread each, never none
    with pytest.raises(ValueError, match="jobs"):
        auto_threads(1e9, jobs=0)


def test_cores_other_processes_keep_busy_are_not_shared(no_omp_limit):
    """A process that starts beside a busy one takes the free cores only; a busy core is measured, not assumed."""
    assert auto_threads(1e12, cores=2, busy=1.0) == 1 and auto_threads(1e12, cores=8, busy=2.6) == 5
    assert auto_threads(1e12, cores=2, busy=0.3) == 2  # noise is no busy core
    assert auto_threads(1e12, cores=2, busy=5.0) == 1  # never none
    idle = threads.busy_cores()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        busy = threads.busy_cores()
    finally:
        spin.kill()
        spin.wait()
    assert busy > 0.6 and busy > idle + 0.5, (idle, busy)


def test_omp_num_threads_caps_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert auto_threads(1e12, cores=16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(1e12, cores=16) == 3 and auto_threads(1e6, cores=16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty: no cap
    assert auto_threads(1e12, cores=16) == 16


@pytest.mark.parametrize(
    ("overrides", "jobs"),
    [
        ([], 1),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2),
        (["hydra/launcher=joblib"], 2),  # joblib's default n_jobs=-1: all cores
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"], 1),  # all cores but one
    ],
)
def test_launcher_jobs_read_from_the_composed_hydra_config(compose_cfg, overrides, jobs):
    compose_cfg(overrides)
    assert launcher_jobs(HydraConfig.get().launcher, cores=2) == jobs


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=cnn"], 2),
        (["model=cnn", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 1),  # two jobs on 2 cores: 1 each
        (["model=cnn", "trainer=ddp_cpu"], 1),  # two DDP processes
        (["model=mlp"], 1),
        (["model=cnn", "speed.num_threads=3"], 3),  # a number is taken as it is
        (["model=cnn", "speed.num_threads=null"], None),  # torch's default
    ],
)
def test_thread_count_of_a_composed_run(compose_cfg, two_cores, overrides, expected):
    cfg = compose_cfg(overrides)
    assert thread_count(cfg, instantiate(cfg.trainer, logger=False).num_devices) == expected


def test_ddp_passes_the_count_on_to_its_ranks(compose_cfg, two_cores):
    """Lightning's DDP launcher sets cores // processes unless OMP_NUM_THREADS is set: the run sets it first."""
    cfg = compose_cfg(["model=cnn", "trainer=ddp_cpu"])
    apply_speed_settings(cfg, instantiate(cfg.trainer, logger=False).num_devices)
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_a_run_sets_the_count_auto_picks(train_run, two_cores, tmp_path):
    torch.set_num_threads(2)
    train_run()
    assert torch.get_num_threads() == 1  # the seed MLP
    train_run(["model=cnn"], tmp_path / "cnn")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", "true", "[1]"])
def test_bad_thread_counts_are_refused_naming_the_key(data_dir, bad):
    line = outcome((f"data.data_dir={data_dir}", "logger=csv"), f"speed.num_threads={bad}")
    assert line is not None and line.startswith("speed.num_threads=") and "auto" in line, line


def test_threads_bench_quick_measures_each_count(data_dir, restore_torch_settings):
    threads_before = torch.get_num_threads()
    out = load_bench("threads").main(["--quick", "--cases", "mlp", "--data-dir", str(data_dir)])["mlp"]
    assert torch.get_num_threads() == threads_before  # the measured counts did not leak
    assert set(out["median"]) == set(load_bench("threads").thread_counts(threads.usable_cores()))
    assert all(t > 0 for t in out["median"].values()) and out["auto"] >= 1


def test_threads_bench_beside_runs_a_second_process(data_dir, restore_torch_settings):
    out = load_bench("threads").main(["--quick", "--cases", "logreg", "--beside", "model=logreg", "--data-dir", str(data_dir)])
    assert set(out["logreg"]["median"]) == {"alone", "beside"} and out["logreg"]["ratio"] > 0
