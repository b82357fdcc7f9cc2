"""See a schedule before paying for a run: the learning rate (and momentum) at every optimizer step, no training.

    python -m optimlight.tools.preview scheduler=onecycle optimizer=sgd trainer.max_epochs=10

takes train.py's overrides, builds the optimizer on the real model and steps the scheduler the way Lightning's
loops will (accumulation, limit_train_batches, max_steps, frequency), counting batches from the data config
instead of loading data. It writes `lr_schedule.png` into the run dir and prints a short table. In a notebook:
`curves = schedule_curves(cfg)` then `plot_curves(curves)`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from itertools import count
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from optimlight.app.build import build_module
from optimlight.app.config import CONFIG_DIR
from optimlight.app.plan import RunPlan, plan_run
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import build_optimizer
from optimlight.plugin.schedulers import build_scheduler


def _momentum(group: Mapping) -> float | None:
    if "betas" in group:
        return group["betas"][0]
    return group.get("momentum")


def _no_loss() -> float:
    """The closure an optimizer step may call (LBFGS does); there is no loss to compute."""
    return 0.0


def _stepper(lr_config: Mapping | None, metrics: Sequence[float] | None):
    """A function that steps the scheduler once; ReduceLROnPlateau gets the next made-up metric value."""
    if lr_config is None:
        return lambda: None
    scheduler, calls = lr_config["scheduler"], count()
    if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return scheduler.step
    if not metrics:
        allowed = f"made-up values of {lr_config.get('monitor')}, one per scheduler step, for ReduceLROnPlateau"
        raise ConfigError("preview.metrics", metrics, allowed)
    return lambda: scheduler.step(metrics[min(next(calls), len(metrics) - 1)])


def simulate(optimizer, lr_config: Mapping | None, plan: RunPlan, metrics: Sequence[float] | None = None) -> dict:
    """Step `lr_config`'s scheduler through the run as Lightning's loops do; return per-optimizer-step curves.

    Keys: `step`, `epoch`, `lr/<group>` and, for optimizers with momentum or betas, `momentum/<group>`.
    """
    total = plan.estimated_stepping_batches
    if not 0 < total < math.inf:
        raise ConfigError("trainer.max_epochs", plan.max_epochs, "a finite run with optimizer steps to preview")
    step_scheduler = _stepper(lr_config, metrics)
    interval = lr_config["interval"] if lr_config else None
    frequency = lr_config.get("frequency", 1) if lr_config else 1
    batches, accumulate = plan.num_training_batches, plan.accumulate_grad_batches
    rows: list[tuple] = []
    for epoch in count():
        for batch_idx in range(batches):
            if (batch_idx + 1) % accumulate and batch_idx + 1 < batches:
                continue  # accumulating: no optimizer step on this batch
            groups = optimizer.param_groups
            rows.append((epoch, [g["lr"] for g in groups], [_momentum(g) for g in groups]))
            optimizer.step(_no_loss)  # no gradients: no weight moves, but torch sees steps in the usual order
            if interval == "step" and (batch_idx + 1) % frequency == 0:  # Lightning counts batches of the epoch
                step_scheduler()
            if len(rows) == total:
                return _curves(optimizer, rows)
        if interval == "epoch" and (epoch + 1) % frequency == 0:
            step_scheduler()


def _curves(optimizer, rows: list[tuple]) -> dict[str, np.ndarray]:
    names = [g.get("name") or f"pg{i + 1}" for i, g in enumerate(optimizer.param_groups)]
    curves = {"step": np.arange(len(rows)), "epoch": np.array([epoch for epoch, _, _ in rows])}
    for i, name in enumerate(names):
        curves[f"lr/{name}"] = np.array([lrs[i] for _, lrs, _ in rows], dtype=float)
        if _momentum(optimizer.param_groups[i]) is not None:
            curves[f"momentum/{name}"] = np.array([moms[i] for _, _, moms in rows], dtype=float)
    return curves


def schedule_curves(cfg: DictConfig, metrics: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The composed run's learning rate (and momentum) per optimizer step, for each parameter group."""
    plan = plan_run(cfg)
    optimizer = build_optimizer(build_module(cfg), cfg.optimizer)
    return simulate(optimizer, build_scheduler(optimizer, cfg.scheduler, plan), plan, metrics)


def distinct(curves: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """The `kind` ("lr" or "momentum") curves, parameter groups that follow the same curve merged under one label."""
    merged: list[tuple[list[str], np.ndarray]] = []
    for key, values in curves.items():
        if key.startswith(f"{kind}/"):
            same = next((m for m in merged if np.array_equal(m[1], values)), None)
            if same:
                same[0].append(key.split("/", 1)[1])
            else:
                merged.append(([key.split("/", 1)[1]], values))
    return {kind if len(merged) == 1 else f"{kind}/{','.join(groups)}": values for groups, values in merged}


def cycling_momentum(curves: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The momentum curves worth showing: those that change during the run."""
    return {k: v for k, v in distinct(curves, "momentum").items() if v.max() > v.min()}


def plot_curves(curves: Mapping[str, np.ndarray], title: str = ""):
    """A matplotlib Figure: LR per optimizer step, and momentum below it where it cycles; epochs on the top axis,
    since epoch-wise schedules (step, plateau) are read in epochs."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    momentum = cycling_momentum(curves)
    fig = Figure(figsize=(8, 5.5 if momentum else 3.5), layout="constrained")
    axes = fig.subplots(2 if momentum else 1, 1, sharex=True, squeeze=False)[:, 0]
    for panel, (ylabel, lines) in zip(axes, [("learning rate", distinct(curves, "lr")), ("momentum", momentum)]):
        for label, values in lines.items():
            panel.plot(curves["step"], values, label=label)
        panel.set_ylabel(ylabel)
        panel.grid(alpha=0.3)
        if len(lines) > 1:
            panel.legend()
    axes[-1].set_xlabel("optimizer step")
    per_epoch = int((curves["epoch"] == 0).sum())
    if per_epoch and curves["epoch"][-1] > 0:
        top = axes[0].secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title(title)
    return fig


def format_table(curves: Mapping[str, np.ndarray], rows: int = 11) -> str:
    """A few evenly spaced steps (and the LR's peak) with epoch, LR and cycling momentum, as aligned text."""
    columns = {**distinct(curves, "lr"), **cycling_momentum(curves)}
    n = len(curves["step"])
    peak = int(np.argmax(next(iter(columns.values()))))
    picks = sorted({*np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist(), peak})
    header = ["step", "epoch", *columns]
    lines = [[str(i), str(curves["epoch"][i]), *(f"{v[i]:.4g}" for v in columns.values())] for i in picks]
    widths = [max(len(row[c]) for row in [header, *lines]) for c in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *lines])


def preview(cfg: DictConfig) -> Path:
    """Validate like train.py, then write the schedule's PNG into the run dir and print its table."""
    validate(cfg)
    curves = schedule_curves(cfg, cfg.preview.metrics)
    scheduler = (cfg.scheduler.get("_target_") or "constant lr").rsplit(".", 1)[-1]
    optimizer = cfg.optimizer["_target_"].rsplit(".", 1)[-1]
    steps_per_epoch = int((curves["epoch"] == 0).sum())
    title = (
        f"{scheduler} on {optimizer} (lr {cfg.optimizer.lr:g}): {len(curves['step'])} optimizer steps, "
        f"{steps_per_epoch} per epoch"
    )
    path = Path(HydraConfig.get().runtime.output_dir) / cfg.preview.file
    plot_curves(curves, title).savefig(path, dpi=120)
    print(f"{title}\n{format_table(curves)}\nwrote {path}")
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="preview")
def main(cfg: DictConfig) -> None:
    """Like train.py: a bad config value is one line on stderr and exit code 2."""
    try:
        preview(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
