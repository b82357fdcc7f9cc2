"""Figures that compare a sweep's jobs, from the job dirs alone (results.json, csv/metrics.csv), without W&B:

    python -m optimlight.tools.report outputs/multiruns/<date>

writes into the sweep dir `val_curves.png` (validation accuracy and loss per epoch, one line per job),
`epoch_time.png` (mean seconds per training epoch, bars), `test_acc.png` (final test accuracy, bars) and the
table `summary.md` / `summary.csv`, as seed 003 compares SGD, Adagrad, Adam and AdamW.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from optimlight.app.record import epoch_metrics
from optimlight.plugin.errors import ConfigError
from optimlight.tools.compare import configurations, performance_profile, targets_of, write_comparison
from optimlight.tools.figures import plot_profile, plot_seed_dots, plot_spread_curves, save_figure
from optimlight.tools.sweep import Job, common_overrides, compared, find_jobs, job_label, write_summary

CURVES = (("val/acc", "validation accuracy"), ("val/loss", "validation loss"))


def plot_curves(jobs: list[Job], labels: dict[str, str], path: Path, about: str = "") -> Figure:
    """Validation accuracy and loss per epoch, one line per job that has a CSV log."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(1, len(CURVES)), CURVES):
        for job in jobs:
            curve = epoch_metrics(job.dir).get(key, pd.Series(dtype=float)).dropna()
            if len(curve):
                ax.plot(curve.index, curve, marker="o", markersize=3, label=labels[job.name])
        ax.set(title=title, xlabel="epoch", ylabel=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    save_figure(fig, path, about)
    return fig


def plot_bars(
    names: list[str],
    values: list[float],
    errors: list[float] | None,
    ylabel: str,
    title: str,
    path: Path,
    fmt: str,
    about: str = "",
) -> None:
    """One bar per job, its value written inside the bar (clear of the error bars); the axis spans the data."""
    fig = Figure(figsize=(max(6, 0.9 * len(names) + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), values, yerr=errors, capsize=4, color=[f"C{i % 10}" for i in range(len(names))])
    if values:
        spread = [e or 0.0 for e in errors] if errors else [0.0] * len(values)
        low = min(v - e for v, e in zip(values, spread))
        high = max(v + e for v, e in zip(values, spread))
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
        bottom = max(0.0, low - pad)
        ax.set_ylim(bottom, high + pad)  # close values stay apart: the axis spans the data, not zero
        for bar, value in zip(bars, values):  # the value at the foot of its bar, clear of the error bar
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bottom + 0.03 * (high + pad - bottom),
                fmt % value,
                ha="center",
                va="bottom",
                fontsize="small",
                color="white",
                fontweight="bold",
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, about)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the figures into `out_dir` (default: the sweep dir) and the summary table; return the figures."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = find_jobs(sweep_dir)
    write_summary(sweep_dir)
    common = common_overrides(jobs)
    labels = {job.name: job_label(job, common) for job in jobs}
    timed = [job for job in jobs if job.results.get("epoch_times")]
    tested = [job for job in jobs if job.metric("test/acc") is not None]
    figures = [out / "val_curves.png", out / "epoch_time.png", out / "test_acc.png"]
    about = f"{sweep_dir.name}: {compared(jobs)}"
    plot_curves(jobs, labels, figures[0], about)
    plot_bars(
        [labels[job.name] for job in timed],
        [statistics.fmean(job.results["epoch_times"]) for job in timed],
        [statistics.pstdev(job.results["epoch_times"]) for job in timed],
        "seconds",
        "seconds per training epoch (mean ± std over its epochs)",
        figures[1],
        "%.2f",
        about,
    )
    plot_bars(
        [labels[job.name] for job in tested],
        [job.metric("test/acc") for job in tested],
        None,
        "test/acc",
        "test accuracy (best-validation checkpoint)",
        figures[2],
        "%.4f",
        about,
    )
    configs = configurations(jobs)
    if any(len(c.jobs) > 1 for c in configs):  # seeds to spread over
        figures += [
            plot_spread_curves(configs, out / "spread_curves.png", about),
            plot_seed_dots(configs, "test/acc", out / "test_acc_seeds.png", about),
        ]
    write_comparison(sweep_dir)
    targets = targets_of(jobs)
    if targets:
        workloads, ratios = performance_profile(configs, targets[0])
        if workloads:
            figures.append(plot_profile(ratios, targets[0], out / "performance_profile.png", about))
    return figures


def main(argv: list[str] | None = None) -> None:
    description = "Figures and the summary table of a sweep, from its job dirs alone (no W&B needed)."
    parser = argparse.ArgumentParser(prog="python -m optimlight.tools.report", description=description)
    parser.add_argument("sweep_dir", type=Path, help="a multirun's sweep dir (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: the sweep dir)")
    args = parser.parse_args(argv)
    if not find_jobs(args.sweep_dir):
        error = ConfigError("sweep_dir", str(args.sweep_dir), "a sweep dir (job dirs with .hydra/overrides.yaml)")
        parser.error(str(error))
    for path in write_report(args.sweep_dir, args.out):
        print(path)
    print(args.sweep_dir / "summary.md")
    print(args.sweep_dir / "comparison.md")


if __name__ == "__main__":
    main()
