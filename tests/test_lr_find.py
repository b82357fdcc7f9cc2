"""`tune=lr_find`: Lightning's LR range test on real Fashion-MNIST, its files, its printout and `tune.apply`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest
import torch

from optimlight.app.run import run
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from tests.conftest import TINY

#: A short range test: 30 optimizer steps on real batches, one epoch of 40 batches so it is not cut short.
LR_FIND = ["tune=lr_find", "tune.num_training=30", "tune.min_lr=1e-5", "trainer.limit_train_batches=40"]


def lr_find_run(compose_cfg, overrides):
    cfg = compose_cfg([*TINY, *LR_FIND, *overrides])
    run(cfg)
    run_dir = Path(cfg.hydra.runtime.output_dir)
    return run_dir, json.loads((run_dir / "lr_find.json").read_text())


def test_lr_find_suggests_an_lr_in_range_plots_it_and_stops(compose_cfg, capsys):
    run_dir, record = lr_find_run(compose_cfg, [])
    suggestion = record["suggestion"]
    assert isinstance(suggestion, float) and 1e-5 <= suggestion <= 1.0  # tune.max_lr: 1.0
    assert record["optimizer"] == "torch.optim.AdamW" and record["override"] == f"optimizer.lr={suggestion:.3g}"
    assert record["steps"] == len(record["lr"]) == len(record["loss"]) and 13 <= record["steps"] <= 30
    assert record["lr"] == sorted(record["lr"]) and suggestion in record["lr"]

    image = matplotlib.image.imread(run_dir / "lr_find.png")[..., :3]
    assert image.std() > 0.05 and (image.mean(axis=-1) < 0.9).mean() > 0.01  # a drawn plot, not a blank canvas
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    assert red.sum() > 20  # the suggestion's red marker

    out = capsys.readouterr().out
    assert f"lr_find: suggested lr {suggestion:.3g} for torch.optim.AdamW" in out
    assert "train with: python train.py " in out and out.rstrip().endswith(record["override"])
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    assert float(rows[0]["tune/lr_suggestion"]) == pytest.approx(suggestion)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()  # no training


def test_apply_trains_with_the_suggested_lr(compose_cfg):
    run_dir, record = lr_find_run(compose_cfg, ["tune.apply=true"])
    assert record["applied"] is True
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["optimizer"]["lr"] == record["suggestion"]
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == record["suggestion"]  # constant LR: no scheduler


@pytest.mark.parametrize(
    "override, message",
    [
        ("tune.num_training=5", "tune.num_training=5 is not allowed: expected an integer >= 13"),
        ("tune.max_lr=1e-7", "tune.max_lr=1e-07 is not allowed: expected a number above tune.min_lr=1e-06"),
        ("tune.mode=cosine", "tune.mode='cosine' is not allowed: expected one of exponential, linear"),
        ("tune.early_stop_threshold=0.5", "tune.early_stop_threshold=0.5 is not allowed"),
    ],
)
def test_bad_tune_values_are_refused_before_training(compose_cfg, override, message):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["tune=lr_find", override]))
    assert str(info.value).startswith(message)
