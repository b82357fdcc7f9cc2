"""What the notebooks in notebooks/ share: quick mode, training labelled configurations through `optimlight.api`,
and their per-epoch curves, results and grids as tables and figures.

Quick mode (`OPTIMLIGHT_NOTEBOOK_QUICK=1`, set by tests/test_notebooks.py) cuts every run to one epoch of a few
batches, so a notebook executes in seconds with the same code path as the full run. `OPTIMLIGHT_NOTEBOOK_DIR`
moves the run dirs (default: outputs/notebooks/ in the repository).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import rich
from hydra.errors import HydraException
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from optimlight.app.config import (
    CONFIG_DIR,
    options,  # noqa: F401 - re-exported: the notebooks call nu.options(group)
)
from optimlight.app.record import (  # EPOCH_METRICS and epoch_metrics re-exported for the notebooks
    EPOCH_METRICS,  # noqa: F401
    epoch_metrics,
    record_failure,
)
from optimlight.plugin.errors import ConfigError, first_line
from optimlight.tools.api import train
from optimlight.tools.sweep import Job

QUICK_ENV, OUT_ENV = "OPTIMLIGHT_NOTEBOOK_QUICK", "OPTIMLIGHT_NOTEBOOK_DIR"
#: A quick-mode run: one epoch of 3 training batches, evaluated on 2 batches.
QUICK_LIMITS = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
)
#: Final values of results.json shown in a results table.
TABLE_METRICS = ("train/loss", "val/loss", "val/acc_best", "test/loss", "test/acc")


def quick_mode() -> bool:
    """True when OPTIMLIGHT_NOTEBOOK_QUICK is set to anything but "" or "0"."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def budget(epochs: int) -> list[str]:
    """Trainer overrides for a run of `epochs` epochs, or quick mode's tiny run."""
    return list(QUICK_LIMITS) if quick_mode() else [f"trainer.max_epochs={epochs}"]


def output_dir(notebook: str) -> Path:
    """Where `notebook`'s runs go: $OPTIMLIGHT_NOTEBOOK_DIR/<notebook>, else <repo>/outputs/notebooks/<notebook>."""
    root = os.environ.get(OUT_ENV) or Path(CONFIG_DIR).parent / "outputs" / "notebooks"
    return Path(root) / notebook


def train_quietly(overrides: Sequence[str], run_dir: Path) -> dict:
    """`optimlight.api.train` with its console output (Lightning's info lines, warnings, the model summary and
    test tables) in run_dir/train.log: a notebook that trains many runs shows one line per run, not every log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    console = rich.get_console()  # Lightning's tables; in a notebook rich displays them itself, past sys.stdout
    in_jupyter = console.is_jupyter
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    console.is_jupyter = False
    try:
        with open(run_dir / "train.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
            return train(overrides, run_dir)
    finally:
        console.is_jupyter = in_jupyter
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train_all(runs: Mapping[str, Sequence[str]], out_dir: Path) -> dict[str, Job]:
    """Train each labelled configuration in out_dir/<label>, one line printed per run. As in a multirun, a run
    that raises while training (a non-finite loss, an optimizer's own numerical failure) is recorded as failed
    with its error and the others go on; a bad config (a value validate() refuses, an override Hydra cannot
    compose) stops at once."""
    jobs = {}
    for label, overrides in runs.items():
        run_dir = Path(out_dir) / label
        try:
            results = train_quietly(overrides, run_dir)
        except (ConfigError, HydraException):
            raise
        except Exception as exc:
            results = record_failure(run_dir, first_line(exc), {})
        jobs[label] = Job(label, run_dir, list(overrides), results)
        test_acc, seconds = jobs[label].metric("test/acc"), results.get("mean_epoch_time")
        shown = f"test/acc={test_acc:.4f}, {seconds:.1f} s/epoch" if test_acc is not None else results.get("error")
        print(f"{label}: {jobs[label].status}, {shown}", flush=True)
    return jobs


def plot_training(jobs: Mapping[str, Job]) -> Figure:
    """Loss and accuracy per epoch (training solid, validation dashed, one colour per run) and seconds per
    training epoch."""
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    panels = fig.subplots(1, 3)
    for color, (label, job) in enumerate(jobs.items()):
        curves = epoch_metrics(job.dir)
        for ax, kind in zip(panels, ("loss", "acc")):
            for split, style in (("train", "-"), ("val", "--")):
                key = f"{split}/{kind}"
                if key in curves:
                    ax.plot(
                        curves.index, curves[key], style, marker="o", markersize=3, color=f"C{color}", label=f"{label} {split}"
                    )
        if "train/epoch_time" in curves:
            panels[2].plot(curves.index, curves["train/epoch_time"], "o-", color=f"C{color}", label=label)
    titles = ("cross-entropy loss", "accuracy", "seconds per training epoch")
    for ax, title in zip(panels, titles):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize="small", ncols=2)
    panels[2].legend(fontsize="small")
    return fig


def results_table(jobs: Mapping[str, Job]) -> pd.DataFrame:
    """One row per run: final TABLE_METRICS (test/* of the best checkpoint), mean seconds per epoch, status."""
    rows = {
        label: {
            **{key: job.metric(key) for key in TABLE_METRICS},
            "s/epoch": job.results.get("mean_epoch_time"),
            "status": job.status,
        }
        for label, job in jobs.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def plot_heatmap(grid: pd.DataFrame, title: str) -> Figure:
    """`grid`'s values as coloured cells, each written in; missing values (failed runs) left blank and marked."""
    values = grid.to_numpy(dtype=float)
    fig = Figure(figsize=(1.6 * grid.shape[1] + 3, 0.5 * grid.shape[0] + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax)
    lo, hi = np.nanmin(values), np.nanmax(values)
    for (i, j), value in np.ndenumerate(values):
        dark = np.isfinite(value) and value < (lo + hi) / 2
        ax.text(
            j,
            i,
            "failed" if np.isnan(value) else f"{value:.4f}",
            ha="center",
            va="center",
            color="white" if dark else "black",
            fontsize="small",
        )
    ax.set_xticks(range(grid.shape[1]), grid.columns)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set_title(title)
    return fig
