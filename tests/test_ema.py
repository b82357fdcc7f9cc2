"""Weight averaging (`averaging=ema|swa`) in real runs: what is evaluated, logged, checkpointed and resumed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging
from torch.nn.utils import parameters_to_vector

from optimlight.app.ema import EMA
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from tests.test_fuzz import outcome

#: Two epochs of five optimizer steps, an EMA that moves fast enough to differ clearly from the raw weights.
EMA_RUN = [
    "averaging=ema",
    "callbacks.ema.decay=0.9",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "+callbacks.recorder._target_=tests.test_ema.WeightRecorder",
]


def flat(module: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector(module.parameters()).detach().clone()


class WeightRecorder(L.Callback):
    """Added through the config: the raw weights after each optimizer step, the EMA a fit starts from, and the
    weights the test stage evaluates. The latest instance is `WeightRecorder.last`."""

    last: WeightRecorder | None = None

    def __init__(self):
        self.raw: dict[int, torch.Tensor] = {}
        self.ema_at_start: tuple[torch.Tensor, int] | None = None
        self.tested: torch.Tensor | None = None
        self.averaged: torch.Tensor | None = None
        WeightRecorder.last = self

    def on_train_start(self, trainer, pl_module):
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
        if ema is not None:
            self.ema_at_start = flat(ema._average_model.module), int(ema._average_model.n_averaged)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.raw[trainer.global_step] = flat(pl_module)

    def on_test_epoch_start(self, trainer, pl_module):
        self.tested = flat(pl_module)
        swa = next((cb for cb in trainer.callbacks if isinstance(cb, StochasticWeightAveraging)), None)
        if swa is not None:
            self.averaged = flat(swa._average_model)


def closed_form_ema(thetas: list[torch.Tensor], decays: list[float]) -> torch.Tensor:
    """The unrolled recurrence ema_1 = theta_1, ema_j = d_j * ema_(j-1) + (1 - d_j) * theta_j, in float64:
    sum_j w_j theta_j with w_1 = d_2 ... d_m and w_j = (1 - d_j) d_(j+1) ... d_m (`decays[0]` is unused)."""
    weights = [math.prod(decays[j + 1 :]) * (1.0 if j == 0 else 1.0 - decays[j]) for j in range(len(thetas))]
    assert math.isclose(sum(weights), 1.0)
    return sum(w * theta.double() for w, theta in zip(weights, thetas))


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "decay, warmup, every, start",
    [(0.9, False, 1, 0), (0.95, True, 3, 0), (0.8, False, 2, 3)],
    ids=["every-step", "warmup-every-3rd-step", "every-2nd-step-from-step-3"],
)
def test_tested_weights_are_the_closed_form_ema_of_the_trajectory(train_run, decay, warmup, every, start):
    cfg, results = train_run(
        [
            *EMA_RUN,
            f"callbacks.ema.decay={decay}",
            f"callbacks.ema.warmup={warmup}",
            f"callbacks.ema.update_every_n_steps={every}",
            f"callbacks.ema.update_starting_at_step={start}",
        ]
    )
    recorder = WeightRecorder.last
    best = Path(results["best_checkpoint"])
    assert best.name == "best.ckpt" and results["status"] == "completed"
    best_step = torch.load(best, weights_only=False)["global_step"]  # the epoch with the best val/acc_ema
    # optimizer step k (1-based) updates when its 0-based index k - 1 is >= start and a multiple of `every`
    update_steps = [k for k in sorted(recorder.raw) if k <= best_step and k - 1 >= start and (k - 1) % every == 0]
    decays = [min(decay, (1 + n) / (10 + n)) if warmup else decay for n in range(len(update_steps))]
    expected = closed_form_ema([recorder.raw[k] for k in update_steps], decays)

    assert torch.allclose(recorder.tested.double(), expected, rtol=0, atol=1e-6)
    assert (recorder.tested - recorder.raw[best_step]).abs().max() > 1e-3  # the raw weights were not tested


def test_val_acc_is_the_raw_weights_and_val_acc_ema_the_average(train_run):
    # decay 1 keeps the average at the weights after the first step: far worse than after ten steps
    cfg, _ = train_run([*EMA_RUN, "callbacks.ema.decay=1.0"])
    epochs = [r for r in metrics_rows(Path(cfg.hydra.runtime.output_dir)) if r.get("val/acc_ema")]
    assert len(epochs) == 2
    assert float(epochs[-1]["val/acc"]) > float(epochs[-1]["val/acc_ema"]) + 0.05


def test_val_acc_ema_is_computed_like_val_acc(train_run):
    # decay 0: the average is the raw weights, so both metrics must agree exactly
    cfg, _ = train_run([*EMA_RUN, "callbacks.ema.decay=0.0"])
    epochs = [r for r in metrics_rows(Path(cfg.hydra.runtime.output_dir)) if r.get("val/acc_ema")]
    assert len(epochs) == 2 and all(r["val/acc_ema"] == r["val/acc"] for r in epochs)


def test_resume_restores_the_ema_exactly(train_run, tmp_path):
    def last_ckpt(run_dir):
        return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)

    train_run(EMA_RUN, run_dir=tmp_path / "straight")
    train_run([*EMA_RUN, "trainer.max_epochs=1"], run_dir=tmp_path / "resumed")
    halfway = last_ckpt(tmp_path / "resumed")
    resume_from = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    train_run([*EMA_RUN, f"ckpt_path={resume_from}"], run_dir=tmp_path / "resumed")

    ema_at_start, updates_at_start = WeightRecorder.last.ema_at_start
    saved_average = torch.cat([t.flatten() for name, t in halfway["state_dict"].items() if name.startswith("net.")])
    assert torch.equal(ema_at_start, saved_average)
    assert updates_at_start == int(halfway["averaging_state"]["n_averaged"]) == 5
    straight, resumed = last_ckpt(tmp_path / "straight"), last_ckpt(tmp_path / "resumed")
    for key in ("state_dict", "current_model_state"):  # the average, and the raw weights training goes on from
        assert straight[key].keys() == resumed[key].keys()
        assert all(torch.allclose(straight[key][k], resumed[key][k], rtol=0, atol=1e-6) for k in straight[key])
    assert int(resumed["averaging_state"]["n_averaged"]) == 10


def test_swa_tests_the_averaged_weights(train_run):
    cfg, results = train_run(
        [
            "averaging=swa",
            "callbacks.swa.swa_epoch_start=1",
            "trainer.max_epochs=2",
            "+callbacks.recorder._target_=tests.test_ema.WeightRecorder",
        ]
    )
    recorder = WeightRecorder.last
    assert results["status"] == "completed" and results["best_checkpoint"] is None
    assert (Path(cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt").exists()
    assert torch.equal(recorder.tested, recorder.averaged)
    assert (recorder.tested - recorder.raw[max(recorder.raw)]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["averaging=ema", "callbacks.ema.decay=1.5"], "callbacks.ema.decay=1.5 is not allowed: expected a finite number >= 0"),
        (["averaging=ema", "callbacks.ema.update_every_n_steps=0"], "callbacks.ema.update_every_n_steps=0 is not"),
        (["averaging=ema", "callbacks.ema.update_starting_at_step=-1"], "callbacks.ema.update_starting_at_step=-1"),
        (["averaging=swa", "callbacks.swa.swa_lrs=-0.1"], "callbacks.swa.swa_lrs=-0.1 is not allowed"),
        (["averaging=swa", "callbacks.swa.swa_epoch_start=1.5"], "callbacks.swa.swa_epoch_start=1.5 is not allowed"),
        (["averaging=swa", "callbacks.swa.annealing_strategy=step"], "callbacks.swa.annealing_strategy='step'"),
        (["averaging=swa", "callbacks.swa.annealing_epochs=-1"], "callbacks.swa.annealing_epochs=-1 is not allowed"),
    ],
)
def test_bad_averaging_values_are_refused_before_training(data_dir, overrides, message):
    """The preflight's line for each, as the CLI prints it (EMA's ranges are its signature's, SWA's Lightning's)."""
    *choices, override = overrides
    got = outcome((f"data.data_dir={data_dir}", "logger=csv", *choices), override)
    assert got is not None and got.startswith(message), got


def test_one_weight_average_at_a_time(compose_cfg):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(["averaging=ema", "callbacks.swa={swa_lrs: 0.1}"]))
    assert "callbacks.swa='set' is not allowed: expected null" in str(info.value)
