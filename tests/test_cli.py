"""The command line as users type it: every bad input gives one clear line and exit code 2 before training."""

import json
import sys

import pytest
import torch

from optimlight.cli import main

# (overrides, the one line the user sees after "error: ")  -- README "Troubleshooting" lists the same cases
BAD_INPUTS = [
    (["model=nope"], "model='nope' is not allowed: expected one of cnn, deepobs_2c2d, deepobs_mlp, logreg, mlp"),
    (
        ["optimizer=adamm"],
        "optimizer='adamm' is not allowed: expected one of adadelta, adafactor, adagrad, adam, adamax, adamw, asgd, "
        "lbfgs, lion, muon, nadam, radam, rmsprop, rprop, schedulefree_adamw, sgd, sparse_adam",
    ),
    (["data.batchsize=32"], "data.batchsize is not a config key: check the spelling, or add a new key with +data.batchsize=..."),
    (["data.batch_size=[1"], "'data.batch_size=[1' is not a valid override"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: expected an integer >= 1"),
    (["data.batch_size=abc"], "data.batch_size='abc' is not allowed: expected an integer >= 1"),
    (["data.val_size=60000"], "data.val_size=60000 is not allowed: expected an integer in [1, 60000)"),
    (["data.loader=fast"], "data.loader='fast' is not allowed: expected one of tensor, dataloader"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not allowed"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] is not allowed"),
    (["optimizer.eps=0"], "optimizer.eps=0 is not allowed"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is not allowed"),
    (["optimizer.no_decay=[biases]"], "optimizer.no_decay='biases' is not allowed"),
    (["+optimizer.momentum=0.9"], "optimizer.momentum=0.9 is not allowed: expected an argument of AdamW"),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], "optimizer.momentum=-0.5 is not allowed"),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"], "optimizer.nesterov=True is not allowed"),
    (["optimizer=lbfgs", "trainer.precision=bf16-mixed"], "trainer.precision='bf16-mixed' is not allowed"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0 is not allowed"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0 is not allowed"),
    (["scheduler=onecycle", "scheduler.pct_start=1.5"], "scheduler.pct_start=1.5 is not allowed"),
    (["scheduler=cosine", "scheduler.interval=batch"], "scheduler.interval='batch' is not allowed"),
    (["scheduler=plateau", "scheduler.monitor=val/accuracy"], "scheduler.monitor='val/accuracy' is not allowed"),
    (
        ["scheduler=onecycle", "trainer.max_epochs=-1"],
        "trainer.max_epochs=-1 is not allowed: expected a finite number of steps to size OneCycleLR from",
    ),
    (
        ["optimizer=lbfgs", "scheduler=cosine", "scheduler.T_max=5"],
        "scheduler.eta_min=0.0 is not allowed: expected a number > 0 with LBFGS",
    ),
    (["trainer.precision=8"], "trainer.precision=8 is not allowed"),
    (["trainer=gpu"], "trainer.accelerator='gpu' is not allowed: expected cpu or auto (this machine has no GPU)"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed"),
    # issue 26's held-back list: a silent run, a crash mid-training (exit 3), a silent run
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is not allowed: expected a finite number >= 0 or null"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval=0 is not allowed"),
    (
        ["callbacks.model_checkpoint.monitor=val/nothing"],
        "callbacks.model_checkpoint.monitor='val/nothing' is not allowed: expected null or a metric the run logs: train/loss",
    ),
    (
        ["optimizer.fused=true", "optimizer.foreach=true"],
        "optimizer.fused=True is not allowed: expected false or null with optimizer.foreach=true",
    ),
    (
        ["optimizer.fused=true", "optimizer.differentiable=true"],
        "optimizer.fused=True is not allowed: expected false or null with optimizer.differentiable=true",
    ),
    (
        ["optimizer.fused=true", "trainer.precision=16-mixed", "trainer.gradient_clip_val=1.0"],
        "optimizer.fused=True is not allowed: expected false or null with trainer.precision=16-mixed and trainer.gradient_clip_val",
    ),
]


def run_cli(monkeypatch, capsys, tmp_path, *overrides):
    monkeypatch.setattr(sys, "argv", ["train.py", f"hydra.run.dir={tmp_path / 'run'}", *overrides])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err, tmp_path / "run"


@pytest.mark.parametrize("overrides, expected", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(monkeypatch, capsys, tmp_path, data_dir, overrides, expected):
    if overrides == ["trainer=gpu"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err, run_dir = run_cli(monkeypatch, capsys, tmp_path, f"data.data_dir={data_dir}", *overrides)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists() and not (run_dir / "wandb").exists()
    if run_dir.exists():  # found after composition: the run dir records it
        record = json.loads((run_dir / "results.json").read_text())
        assert record["status"] == "failed" and f"error: {record['error']}" == lines[0]


def test_missing_data_without_internet_says_where_files_go(monkeypatch, capsys, tmp_path):
    empty = tmp_path / "empty"
    code, err, run_dir = run_cli(monkeypatch, capsys, tmp_path, f"data.data_dir={empty}", "logger=csv")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Fashion-MNIST not found")
    assert f"{empty}/FashionMNIST/raw/" in lines[0] and "data.data_dir=" in lines[0]
    assert not (run_dir / "checkpoints").exists()


def test_a_failed_download_leaves_no_folders_and_says_where_and_why(monkeypatch, capsys, tmp_path):
    """Was: empty FashionMNIST/raw/ folders left behind, the path as typed, the cause cut at its first colon."""
    monkeypatch.chdir(tmp_path)
    code, err, run_dir = run_cli(monkeypatch, capsys, tmp_path, "data.data_dir=rel/data", "logger=csv")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert f"{tmp_path}/rel/data/FashionMNIST/raw/" in line  # absolute
    cause = line.split("the download failed: ", 1)[1]
    assert not cause.rstrip().endswith(":") and len(cause.split(":", 2)) == 3  # type: message: its cause
    assert not (tmp_path / "rel").exists()
    record = json.loads((run_dir / "results.json").read_text())
    assert f"error: {record['error']}" == line and not (run_dir / "wandb").exists()
