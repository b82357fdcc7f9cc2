"""The command line as users type it: bad input gives one clear line and a non-zero exit before training."""

import sys

import pytest

from optimlight.train import main


def run_cli(monkeypatch, capsys, tmp_path, *overrides):
    monkeypatch.setattr(sys, "argv", ["train.py", f"hydra.run.dir={tmp_path / 'run'}", *overrides])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err, tmp_path / "run"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.batch_size=0", "data.batch_size=0 is not allowed: expected a positive integer"),
        ("data.val_size=60000", "data.val_size=60000 is not allowed: expected an integer in [1, 60000)"),
        ("data.loader=fast", "data.loader='fast' is not allowed: expected one of tensor, dataloader"),
    ],
)
def test_bad_values_exit_2_with_one_line(monkeypatch, capsys, tmp_path, data_dir, override, expected):
    code, err, run_dir = run_cli(monkeypatch, capsys, tmp_path, f"data.data_dir={data_dir}", override)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {expected}"]
    assert not (run_dir / "checkpoints").exists()


def test_unknown_model_is_hydras_clear_error(monkeypatch, capsys, tmp_path):
    code, err, _ = run_cli(monkeypatch, capsys, tmp_path, "model=nope")
    assert code == 1
    assert "Could not find 'model/nope'" in err and "cnn" in err and "mlp" in err


def test_missing_data_without_internet_says_where_files_go(monkeypatch, capsys, tmp_path):
    empty = tmp_path / "empty"
    code, err, run_dir = run_cli(monkeypatch, capsys, tmp_path, f"data.data_dir={empty}", "logger=csv")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Fashion-MNIST not found")
    assert f"{empty}/FashionMNIST/raw/" in lines[0] and "data.data_dir=" in lines[0]
    assert not (run_dir / "checkpoints").exists()
