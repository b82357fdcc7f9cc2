"""The comparison's figures, from the run records: spread across seeds per configuration, every seed's final
test accuracy, the tuning protocol's learning-rate sensitivity, and the performance profile."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from optimlight.app.record import epoch_metrics
from optimlight.tools.compare import Configuration, ranked, spread

SPREAD_CURVES = (("val/acc", "validation accuracy"), ("train/loss", "training loss"))
PROFILE_TICKS = (1, 1.25, 1.5, 2, 3, 4, 6, 8, 16, 32, 64)


def save_figure(fig: Figure, path: Path, about: str = "") -> Path:
    """Save at 120 dpi, with `about` (what the figure compares) as its title, wrapped to the figure's width."""
    if about:
        fig.suptitle(textwrap.fill(about, width=int(11 * fig.get_figwidth())), fontsize="medium")
    fig.savefig(path, dpi=120)
    return path


def plot_spread_curves(configs: Sequence[Configuration], path: Path, about: str = "") -> Path:
    """Per configuration, the mean over seeds of val/acc and train/loss per epoch, with a ± std band."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(1, len(SPREAD_CURVES)), SPREAD_CURVES):
        for color, config in enumerate(configs):
            curves = [epoch_metrics(job.dir).get(key, pd.Series(dtype=float)).dropna() for job in config.jobs]
            frame = pd.concat([c for c in curves if len(c)], axis=1) if any(len(c) for c in curves) else None
            if frame is None:
                continue
            mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=1).fillna(0.0)
            ax.plot(
                mean.index, mean, marker="o", markersize=3, color=f"C{color % 10}", label=f"{config.label} (n={frame.shape[1]})"
            )
            ax.fill_between(mean.index, mean - std, mean + std, color=f"C{color % 10}", alpha=0.2, linewidth=0)
        ax.set(title=f"{title}: mean ± std over seeds", xlabel="epoch", ylabel=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    return save_figure(fig, path, about)


def plot_seed_dots(configs: Sequence[Configuration], metric: str, path: Path, about: str = "") -> Path:
    """Every seed's value of `metric` as a dot, per configuration (best by validation first; each keeps its colour
    of the other figures), beside the mean and its 95% interval."""
    fig = Figure(figsize=(max(6, 1.1 * len(configs) + 2.5), 4.5), layout="constrained")
    ax = fig.subplots()
    colors = {config.label: f"C{i % 10}" for i, config in enumerate(configs)}
    order = ranked(configs)
    for i, config in enumerate(order):
        values = config.values(metric)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(i + jitter, values, s=22, color=colors[config.label], alpha=0.8, zorder=3)
        s = spread(values)
        if s.mean is not None:
            low, high = (s.ci_low, s.ci_high) if s.ci_low is not None else (s.mean, s.mean)
            ax.errorbar(
                i + 0.3, s.mean, yerr=[[s.mean - low], [high - s.mean]], fmt="D", color="black", markersize=5, capsize=4, zorder=4
            )
    ax.set_xticks(range(len(order)), [c.label for c in order], rotation=20, ha="right", fontsize="small")
    ax.set(ylabel=metric, title=f"{metric} of every seed (dots) and mean with 95% CI (diamond)")
    ax.margins(x=0.1, y=0.15)  # the axis spans the data, not zero
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, about)


def plot_lr_sensitivity(trials: Mapping[str, Sequence[tuple[float, float | None]]], metric: str, path: Path) -> Path:
    """The validation metric against the learning rate, one line per optimizer, every trial a point (a failed or
    diverged trial is marked at the bottom)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    finite = [v for points in trials.values() for _, v in points if v is not None and math.isfinite(v)]
    floor = min(finite) if finite else 0.0
    for color, (name, points) in enumerate(sorted(trials.items())):
        points = sorted(points)
        lrs = [lr for lr, _ in points]
        values = [v if v is not None and math.isfinite(v) else np.nan for _, v in points]
        ax.plot(lrs, values, marker="o", color=f"C{color % 10}", label=name)
        failed = [lr for lr, v in points if v is None or not math.isfinite(v)]
        ax.scatter(failed, [floor] * len(failed), marker="x", color=f"C{color % 10}", zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel=metric, title=f"learning-rate sensitivity: {metric} per trial (x: failed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_profile(ratios: Mapping[str, Sequence[float]], target: str, path: Path, about: str = "") -> Path:
    """Performance profile: rho(tau) against tau for each solver (step functions, log-scaled tau)."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    top = max(2.0, 1.1 * max(finite)) if finite else 2.0
    taus = np.geomspace(1.0, top, 200)
    for color, (solver, rs) in enumerate(sorted(ratios.items())):
        rho = [sum(r <= t for r in rs) / len(rs) for t in taus]
        ax.step(taus, rho, where="post", color=f"C{color % 10}", label=solver)
    ax.set_xscale("log")
    ax.set_xticks([t for t in PROFILE_TICKS if t <= top])  # plain ratios, not powers of ten
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel="tau (seconds to target / best seconds)",
        ylabel="fraction of workloads",
        ylim=(-0.02, 1.02),
        title=f"performance profile: training seconds to val/acc >= {target}",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, path, about)
