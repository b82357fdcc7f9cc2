"""`python train.py --help` says what optimlight is; the debug presets run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optimlight.app.config import options
from optimlight.app.record import epoch_metrics
from tests.conftest import REPO


def test_help_is_optimlights_own(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert text.startswith("optimlight: compare optimizers and learning-rate schedules")
    assert "is powered by Hydra" not in text and "data.data_dir=<dir>" in text and "OPTIMLIGHT_DATA_DIR" in text
    assert f"optimizer: {', '.join(options('optimizer'))}" in text and "sgd" in options("optimizer")
    assert "debug: fdr, limit, overfit, profiler" in text


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit", "profiler"])
def test_debug_presets_run(compose_cfg, preset, tmp_path):
    from optimlight.app.record import read_results
    from optimlight.app.run import run

    cfg = compose_cfg([f"debug={preset}", "trainer.num_sanity_val_steps=0"], tmp_path / "run")
    assert "wandb" not in cfg.logger  # debug runs leave no W&B run behind
    run(cfg)
    run_dir = Path(cfg.hydra.runtime.output_dir)
    assert read_results(run_dir)["status"] == "completed"
    if preset == "overfit":
        loss = epoch_metrics(run_dir)["train/loss"]
        assert len(loss) == 20 and loss.iloc[-1] < 0.5 * loss.iloc[0]
    if preset == "profiler":
        report = (run_dir / "profiler" / "fit-profile.txt").read_text()
        assert "run_training_epoch" in report
