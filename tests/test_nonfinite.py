"""A NaN loss stops the run naming the step and keeps the last good checkpoint; or, when asked, skips the step."""

import json
import sys

import pytest
import torch

from optimlight.app.failures import EXIT_TRAINING_FAILED
from optimlight.cli import main

RUN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "logger=csv",
    "+callbacks.nan._target_=tests.signals.NaNInputAt",
    "+callbacks.nan.step=40",
]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(monkeypatch, capsys, tmp_path, data_dir):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train.py", f"hydra.run.dir={run_dir}", f"data.data_dir={data_dir}", *RUN])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == EXIT_TRAINING_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: non-finite training loss at optimizer step 40: run stopped")
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and f"error: {record['error']}" == lines[-1]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 30  # written at the end of epoch 0, before the NaN; nothing written after it
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


def test_skip_nonfinite_loss_skips_only_that_step(train_run):
    cfg, results = train_run(
        [
            *RUN[:-2],
            "+callbacks.nan._target_=tests.signals.NaNInputAt",
            "+callbacks.nan.step=40",
            "module.skip_nonfinite_loss=true",
            "trainer.max_epochs=2",
        ]
    )
    assert results["status"] == "completed"
    last = torch.load(f"{cfg.hydra.runtime.output_dir}/checkpoints/last.ckpt", weights_only=False)
    # Lightning still counts the step; the optimizer got no gradients for it, so the NaN never reached the weights
    # (without the skip the same NaN stops the run, as the test above shows)
    assert last["global_step"] == 60
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert results["metrics"]["train/loss"] is not None  # the skipped loss did not reach the epoch mean
