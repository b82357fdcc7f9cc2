"""W&B for real, in offline mode, read back from the run's `.wandb` file: name, config, metrics, summary and the
test-end media; how the mode is chosen; bad input. In-process runs of the real config with tiny limits."""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from pathlib import Path

import pytest
import wandb
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from PIL import Image

from optimlight.app.data import CLASSES
from optimlight.app.loggers import start_mode, wandb_logger
from optimlight.app.run import run
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from tests.wandb_offline import offline_runs

WANDB = ["logger=wandb", "logger.wandb.mode=offline"]


@pytest.fixture(autouse=True)
def fresh_wandb():
    """W&B reads its environment once per process: every test starts from, and leaves, a reset W&B."""
    wandb.teardown()
    yield
    wandb.teardown()


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """A process where W&B finds no API key: no env key, an empty netrc and settings dir."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    wandb.teardown()


def test_offline_run_holds_name_config_metrics_summary_and_test_media(train_run):
    overrides = ["optimizer=sgd", "scheduler=cosine", "trainer.max_epochs=2", "trainer.log_every_n_steps=2"]
    overrides += ["logger.wandb.log_model=true", "logger.wandb.tags=[baseline,mlp]"]
    cfg, results = train_run([*WANDB, *overrides])
    assert wandb.run is None, "run() must finish its W&B run"
    wandb.teardown()  # W&B's service writes the run's last records (exit) once the process lets it go
    run_dir = Path(cfg.hydra.runtime.output_dir)
    (logged,) = offline_runs(run_dir)
    assert (logged.name, logged.project, logged.group, logged.exit_code) == ("sgd-cosine", "optimlight", "", 0)
    assert logged.tags == ["baseline", "mlp"]

    # the full resolved config is the W&B config (plus the audit's param groups and the module's hparams)
    full = OmegaConf.to_container(cfg, resolve=True)
    for key in ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "seed", "module"):
        assert logged.config[key] == full[key], key
    assert logged.config["optimizer"]["_target_"] == "torch.optim.SGD"
    assert set(logged.config["param_groups"]) == {"SGD/decay", "SGD/no_decay"}

    # every metric the dashboard shows, per epoch / step, equal to what results.json recorded
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "train/epoch_time"):
        assert len(logged.logged(key)) == 2, key
    assert logged.logged("val/acc")[-1] == pytest.approx(results["metrics"]["val/acc"])
    assert logged.logged("test/acc") == [pytest.approx(results["metrics"]["test/acc"])]
    assert any(key.startswith("lr-SGD") for row in logged.history for key in row)
    norms = logged.logged("train/grad_norm")
    assert len(norms) >= 4 and all(math.isfinite(n) and n > 0 for n in norms)

    # summary = the run's record
    for key, value in results["metrics"].items():
        assert logged.summary[key] == pytest.approx(value), key
    assert logged.summary["mean_epoch_time"] == results["mean_epoch_time"]
    assert logged.summary["status"] == "completed"
    assert any(kind == "model" and "best" in aliases for kind, aliases in logged.artifacts)  # log_model=true

    files = next(run_dir.glob("wandb/offline-run-*/files"))
    (matrix,) = logged.logged("test/confusion_matrix_table")
    table = json.loads((files / matrix["path"]).read_text())
    counts = {(actual, predicted): n for actual, predicted, n in table["data"]}
    assert {a for a, _ in counts} == set(CLASSES)
    correct, total = sum(counts[c, c] for c in CLASSES), sum(counts.values())
    assert correct / total == pytest.approx(results["metrics"]["test/acc"], abs=1e-5)  # accuracy over all images

    (wrong,) = logged.logged("test/misclassified")
    assert 0 < wrong["count"] <= 32 and len(wrong["captions"]) == wrong["count"]
    for caption, name in zip(wrong["captions"], wrong["filenames"]):
        true, pred = caption.removeprefix("true: ").split(" / pred: ")
        assert true in CLASSES and pred in CLASSES and true != pred
        image = Image.open(files / name)
        assert image.size == (28, 28) and image.getextrema()[1] == 255


def test_auto_mode_without_credentials_goes_offline_and_says_how_to_sync(no_credentials, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="optimlight.app.loggers"):
        assert start_mode("auto", tmp_path) == "offline"
        assert start_mode("online", tmp_path) == "offline"
        assert start_mode("disabled", tmp_path) == "disabled"
    auto, online = caplog.records
    assert auto.levelno == logging.INFO and online.levelno == logging.WARNING
    assert f"wandb sync {tmp_path / 'wandb'}/offline-run-*" in auto.getMessage()
    assert "\n" not in auto.getMessage()


def test_online_without_network_falls_back_offline_in_bounded_time_and_never_shows_the_key(train_run, monkeypatch, caplog, capfd):
    key = secrets.token_hex(20)  # 40 characters, the shape of a W&B API key
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: every request fails
    wandb.teardown()
    start = time.monotonic()
    with caplog.at_level(logging.INFO):
        cfg, results = train_run(["logger=wandb", "logger.wandb.mode=online", "logger.wandb.init_timeout=5"])
    elapsed = time.monotonic() - start
    wandb.teardown()
    assert results["status"] == "completed"
    assert elapsed < 90, f"online start-up not bounded: {elapsed:.0f} s"
    run_dir = Path(cfg.hydra.runtime.output_dir)
    (logged,) = offline_runs(run_dir)
    assert logged.exit_code == 0 and logged.summary["test/acc"] == pytest.approx(results["metrics"]["test/acc"])
    assert any("online run did not start" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

    out, err = capfd.readouterr()
    assert key not in caplog.text + out + err
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaked, leaked


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("logger.wandb.mode=cloud", "logger.wandb.mode='cloud'"),
        ("logger.wandb.init_timeout=0", "logger.wandb.init_timeout=0"),
        ("logger.wandb.log_model=best", "logger.wandb.log_model='best'"),
    ],
)
def test_bad_logger_values_stop_before_training(compose_cfg, override, key):
    cfg = compose_cfg(["logger=wandb", override])
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(f"{key} is not allowed: expected ") and "\n" not in message
    with pytest.raises(ConfigError):
        run(cfg)
    assert not (Path(cfg.hydra.runtime.output_dir) / "wandb").exists()


def test_ranks_above_zero_start_no_run_and_look_for_no_credentials(no_credentials, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with caplog.at_level(logging.INFO, logger="optimlight.app.loggers"):
        logger = wandb_logger(mode="online", save_dir=str(tmp_path), project="optimlight")
        logger.log_metrics({"val/acc": 0.5}, step=0)
    assert type(logger.experiment).__name__ == "_DummyExperiment"
    assert not caplog.records and wandb.run is None and not (tmp_path / "wandb").exists()
