"""DDP with two CPU processes (the real CLI, since Lightning relaunches the script) and bf16 mixed precision."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from optimlight.app.module import Classifier
from tests.conftest import REPO, TINY


def test_ddp_cpu_two_processes_one_run_dir(tmp_path, data_dir):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "train.py", "trainer=ddp_cpu", f"data.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # rank 1 wrote into the same run dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["choices"]["trainer"] == "ddp_cpu"
    assert list(run_dir.rglob("results.json")) == [run_dir / "results.json"]
    assert len(list((run_dir / "csv").glob("metrics.csv"))) == 1 and not (run_dir / "csv_1").exists()


def test_bf16_mixed_trains_on_cpu(train_run, monkeypatch):
    seen = []
    forward = Classifier.forward

    def recording_forward(self, x):
        logits = forward(self, x)
        if self._trainer is not None:  # the run's module, not the preflight's (which checks shapes on a blank batch)
            seen.append(logits.dtype)
        return logits

    monkeypatch.setattr(Classifier, "forward", recording_forward)
    cfg, results = train_run(["trainer.precision=bf16-mixed", "trainer.accelerator=cpu"])
    assert results["status"] == "completed" and 0 < results["metrics"]["test/acc"] <= 1
    assert seen and set(seen) == {torch.bfloat16}  # the layers ran under bf16 autocast
    ckpt = torch.load(Path(cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    state = ckpt["state_dict"]  # the weights and metric states stay float32 (the training sums' counts are float64)
    assert all(t.dtype == torch.float32 for k, t in state.items() if t.is_floating_point() and k != "train_sums._extra_state")
    assert state["net.1.weight"].dtype == torch.float32


def test_64_true_trains_with_the_model_summary_in_float64(train_run):
    """The model summary's example input is in the weights' dtype: a float32 one crashed 64-true runs before
    training (the summary's forward casts no input)."""
    cfg, results = train_run(["trainer.precision=64-true", "trainer.accelerator=cpu"])
    assert results["status"] == "completed" and 0 < results["metrics"]["test/acc"] <= 1
    ckpt = torch.load(Path(cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"]["net.1.weight"].dtype == torch.float64
