"""bench/gpu_check.py on a machine without a GPU: the dry run composes and preflights every run the check would
make, the real mode refuses with one line, and the steps' runner keeps going past a failed, skipped or overlong step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, load_bench


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/gpu_check.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


@pytest.mark.slow  # 55 configs composed and preflighted in a new process: about a minute
def test_dry_run_plans_every_step_and_preflights_every_run(data_dir, tmp_path):
    bench = load_bench("gpu_check")
    done = gpu_check("--dry-run", "--data-dir", str(data_dir), "--out", str(tmp_path / "plan.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["mode"] == "dry-run" and list(plan["steps"]) == list(bench.STEPS)
    for name, step in plan["steps"].items():
        assert step["status"] == "preflighted" and step["runs"], name
        assert f"\n{name} " in done.stdout  # the printed plan has the step's rows
        for label, run in step["runs"].items():
            assert run["status"] == "preflighted", (label, run.get("error"))
            assert run["command"].startswith("python train.py ") and f"data.data_dir={data_dir}" in run["command"]
            assert "trainer.accelerator=gpu" in run["command"] and "logger=csv" in run["command"]
            assert run["command"] in done.stdout
    runs = {label: run for step in plan["steps"].values() for label, run in step["runs"].items()}
    assert {f"{m} {p}" for m in ("mlp", "cnn") for p in ("32-true", "16-mixed", "bf16-mixed")} <= set(runs)
    assert "module.compile=true" in runs["mlp compile"]["command"]
    assert "data.loader=dataloader" in runs["mlp loader=dataloader, 4 workers"]["command"]
    assert (
        runs["mlp ddp, 1 GPU"]["command"].split()[2:3] == ["trainer=ddp"]
        and "trainer.devices=1" in runs["mlp ddp, 1 GPU"]["command"]
    )
    assert "trainer.devices=2" in runs["mlp ddp, 2 GPUs"]["command"]
    # 9 optimizers x 4 schedules, each job preflighted and able to join the one population; 6 of them alone
    assert runs["population of 36"]["jobs"] == 36 and "hydra/launcher=population" in runs["population of 36"]["command"]
    assert runs["one by one, 6 of 36"]["jobs"] == 6 and "hydra/launcher=basic" in runs["one by one, 6 of 36"]["command"]


def test_a_config_that_does_not_preflight_fails_the_dry_run_with_its_error(tmp_path):
    """The dry run preflights, not only composes: with a file for the data dir (no download can make the data
    folder there) every run fails with optimlight's one-line data error, and the dry run exits 1."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    done = gpu_check("--dry-run", "--data-dir", str(not_a_folder), "--out", str(tmp_path / "plan.json"))
    assert done.returncode == 1
    steps = json.loads((tmp_path / "plan.json").read_text())["steps"]
    errors = [run["error"] for step in steps.values() for run in step["runs"].values()]
    assert len(errors) == 13 and all("Fashion-MNIST not found" in e for e in errors)
    assert all(step["status"] == "failed" for step in steps.values())


def test_without_cuda_the_check_refuses_with_one_line(tmp_path):
    done = gpu_check("--out", str(tmp_path / "run.json"), CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [load_bench("gpu_check").NO_CUDA] and done.stdout == ""
    assert not (tmp_path / "run.json").exists()


def test_one_gpu_steps_fit_the_limit():
    bench = load_bench("gpu_check")
    assert sum(bench.STEPS[name][1] for name in bench.ONE_GPU_STEPS) + bench.START_S <= bench.LIMIT_S == 480
    assert set(bench.STEPS) - set(bench.ONE_GPU_STEPS) == {"ddp, all GPUs"}


def test_a_failed_skipped_or_overlong_step_is_recorded_and_the_next_steps_run(monkeypatch, tmp_path, capsys):
    """The runner itself (main, run_step), on steps that fail, skip, overrun their budget or complete: each one's
    status and one-line error in the JSON, the overrunning one stopped by its timer with its finished run kept."""
    bench = load_bench("gpu_check")

    def record(check, label):
        check.records[label] = {"status": "completed", "command": "python train.py", "wall_s": 0.1, "s_per_epoch": 1.0}

    def fails(check):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    def skips(check):
        raise bench.Skipped("one GPU")

    def overruns(check):
        record(check, "first")
        time.sleep(30)

    def completes(check):
        record(check, "only")
        return {"ratio": 0.5}

    steps = {"fails": (fails, 5), "skips": (skips, 5), "overruns": (overruns, 1), "completes": (completes, 5)}
    monkeypatch.setattr(bench, "STEPS", steps)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda index: "a test GPU")
    start = time.perf_counter()
    assert bench.main(["--out", str(tmp_path / "run.json")]) == 1
    assert time.perf_counter() - start < 10
    report = json.loads((tmp_path / "run.json").read_text())["steps"]
    assert (
        report["fails"]["status"] == "failed"
        and report["fails"]["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    assert report["skips"]["status"] == "skipped" and report["skips"]["error"] == "one GPU"
    assert report["overruns"]["status"] == "failed" and report["overruns"]["error"].startswith("OverBudget")
    assert list(report["overruns"]["runs"]) == ["first"] and report["overruns"]["wall_s"] < 5
    assert (
        report["completes"] == {**report["completes"], "status": "completed", "ratio": 0.5} and "error" not in report["completes"]
    )
    out = capsys.readouterr().out
    assert "overruns         failed after" in out and "completes        only" in out
