"""A sweep's configurations compared across seeds, from the run records alone: `<sweep dir>/comparison.md` and
`comparison.csv`, and the verdict.

Jobs whose overrides differ only in `seed` are one configuration. Per configuration: n, mean, standard deviation
and the 95% Student-t confidence interval of each metric (none for n = 1), and the time to each validation target.
Configurations are ranked by mean `val/acc_best` (the validation metric the run selects its checkpoint on), never
by a test metric. The verdict compares the best configuration with each other one by Welch's t-test on
`val/acc_best`, Holm-adjusted over those comparisons, and says "not distinguishable" where the data cannot tell.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from optimlight.app.overrides import configuration_overrides, override_key
from optimlight.app.record import write_atomic
from optimlight.app.targets import time_to_target_from_metrics
from optimlight.tools.sweep import Job, find_jobs, override_label

RANK_METRIC = "val/acc_best"
#: (column, what is read from a job's record)
METRICS = ("val/acc_best", "test/acc", "test/loss", "s/epoch")
ALPHA = 0.05
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    """n values summarized: mean, sample standard deviation (ddof 1) and the Student-t confidence interval."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


def spread(values: Sequence[float], confidence: float = CONFIDENCE) -> Spread:
    """Mean, std and the two-sided Student-t interval of `values`; std and interval are None for n < 2."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Spread(0, None, None, None, None)
    mean = float(data.mean())
    if n == 1:
        return Spread(1, mean, None, None, None)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when either side has fewer than 2 values or
    both have no spread."""
    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None), for the best-vs-each-other family of comparisons."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def job_value(job: Job, metric: str) -> float | None:
    return job.results.get("mean_epoch_time") if metric == "s/epoch" else job.metric(metric)


def reached(job: Job, target: str) -> dict | None:
    """The job's first (epoch, step, seconds) at val/acc >= target: from results.json, else from its metrics."""
    recorded = job.results.get("time_to_target") or {}
    if target in recorded:
        return recorded[target]
    return time_to_target_from_metrics(job.dir, [float(target)])[target]


@dataclass
class Configuration:
    """The completed jobs of one configuration (its overrides without the seed), and how many failed or were
    pruned (a tuning trial its study stopped early: no result, and no failure either)."""

    label: str
    overrides: list[str]
    jobs: list[Job] = field(default_factory=list)
    failed: int = 0
    pruned: int = 0

    def values(self, metric: str) -> list[float]:
        return [v for v in (job_value(job, metric) for job in self.jobs) if v is not None]


def configurations(jobs: Sequence[Job]) -> list[Configuration]:
    """Jobs grouped by their overrides without `seed`, labelled by what sets each group apart, in sweep order."""
    groups: dict[tuple[str, ...], Configuration] = {}
    own = {job.name: configuration_overrides(job.overrides) for job in jobs}
    common = set.intersection(*(set(o) for o in own.values())) if len(own) > 1 else set()
    for job in jobs:
        key = tuple(own[job.name])
        if key not in groups:
            label = " ".join(override_label(o) for o in key if o not in common)
            groups[key] = Configuration(label or "default", list(key))
        if job.status == "completed":
            groups[key].jobs.append(job)
        elif job.status == "pruned":
            groups[key].pruned += 1
        else:
            groups[key].failed += 1
    return list(groups.values())


def targets_of(jobs: Sequence[Job]) -> list[str]:
    """The validation-accuracy targets the jobs recorded, ascending."""
    found = {t for job in jobs for t in (job.results.get("time_to_target") or {})}
    return sorted(found, key=float)


def ranked(configs: Sequence[Configuration]) -> list[Configuration]:
    """Best first by mean val/acc_best; configurations without a completed run last."""

    def key(config: Configuration) -> float:
        mean = spread(config.values(RANK_METRIC)).mean
        return -math.inf if mean is None else mean

    return sorted(configs, key=key, reverse=True)


def comparison_rows(configs: Sequence[Configuration], targets: Sequence[str]) -> list[dict]:
    """One row per configuration, ranked: n, failed, pruned, per metric mean/std/CI, per target the runs that reached it
    and the mean epoch and training seconds of those that did."""
    rows = []
    for rank, config in enumerate(ranked(configs), start=1):
        row: dict = {"rank": rank, "configuration": config.label, "n": len(config.jobs)}
        row.update(failed=config.failed, pruned=config.pruned)
        for metric in METRICS:
            s = spread(config.values(metric))
            row.update(
                {f"{metric} mean": s.mean, f"{metric} std": s.std, f"{metric} ci_low": s.ci_low, f"{metric} ci_high": s.ci_high}
            )
        for target in targets:
            hits = [r for r in (reached(job, target) for job in config.jobs) if r is not None]
            row[f"reached {target}"] = f"{len(hits)}/{len(config.jobs)}"
            row[f"epochs to {target}"] = spread([h["epoch"] for h in hits]).mean
            row[f"seconds to {target}"] = spread([h["seconds"] for h in hits]).mean
        rows.append(row)
    return rows


def verdict(configs: Sequence[Configuration]) -> list[str]:
    """The best configuration (by mean val/acc_best) against each other one, in words with the numbers."""
    order = [c for c in ranked(configs) if c.values(RANK_METRIC)]
    if len(order) < 2:
        return [f"{len(order)} configuration(s) with a completed {RANK_METRIC}: nothing to compare."]
    best, others = order[0], order[1:]
    a = best.values(RANK_METRIC)
    raw = [welch_p(a, other.values(RANK_METRIC)) for other in others]
    adjusted = holm(raw)
    lines = [f"Best by mean {RANK_METRIC}: **{best.label}** ({format_spread(spread(a))}, n = {len(a)})."]
    for other, p, p_adj in zip(others, raw, adjusted):
        b = other.values(RANK_METRIC)
        diff = spread(a).mean - spread(b).mean
        numbers = f"{RANK_METRIC} {spread(a).mean:.4f} vs {spread(b).mean:.4f} (difference {diff:+.4f}"
        if p is None:
            lines.append(
                f"- {best.label} vs {other.label}: not distinguishable with n = {len(a)}/{len(b)} seeds: "
                f"{numbers}; a t-test needs at least 2 seeds each, with spread)."
            )
        elif p_adj < ALPHA:
            lines.append(
                f"- {best.label} beats {other.label}: {numbers}, Welch's t-test p = {p:.3g}, "
                f"Holm-adjusted {p_adj:.3g}, n = {len(a)}/{len(b)})."
            )
        else:
            lines.append(
                f"- {best.label} vs {other.label}: not distinguishable with n = {len(a)}/{len(b)} seeds: "
                f"{numbers}, Welch's t-test p = {p:.3g}, Holm-adjusted {p_adj:.3g} >= {ALPHA})."
            )
    lines.append(
        f"Ranked on validation; test metrics are reported, never used to rank. {CONFIDENCE:.0%} intervals are "
        "Student-t over seeds."
    )
    return lines


def format_spread(s: Spread) -> str:
    """`mean ± std [ci_low, ci_high]`, or the mean alone for one value, or "" for none."""
    if s.mean is None:
        return ""
    if s.std is None:
        return f"{s.mean:.4f}"
    return f"{s.mean:.4f} ± {s.std:.4f} [{s.ci_low:.4f}, {s.ci_high:.4f}]"


def markdown(rows: Sequence[dict], lines: Sequence[str], targets: Sequence[str], title: str) -> str:
    head = ["rank", "configuration", "n", *METRICS, *(f"to {t}: reached, epochs, s" for t in targets)]
    out = [
        f"# Comparison {title}",
        "",
        "Each cell: mean ± std [95% CI] over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [
            str(row["rank"]),
            row["configuration"].replace("|", "\\|"),
            f"{row['n']}" + "".join(f" (+{row[k]} {k})" for k in ("failed", "pruned") if row[k]),
        ]
        cells += [
            format_spread(Spread(row["n"], row[f"{m} mean"], row[f"{m} std"], row[f"{m} ci_low"], row[f"{m} ci_high"]))
            for m in METRICS
        ]
        for t in targets:
            epochs, seconds = row[f"epochs to {t}"], row[f"seconds to {t}"]
            cells.append(row[f"reached {t}"] + ("" if epochs is None else f", {epochs:.1f}, {seconds:.1f}"))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join([*out, "", "## Verdict", "", *lines]) + "\n"


def write_comparison(sweep_dir: str | Path) -> list[dict]:
    """Write `comparison.csv` and `comparison.md` (and, across workloads, `performance_profile.md`) into the
    sweep dir; return the comparison rows."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    configs, targets = configurations(jobs), targets_of(jobs)
    rows = comparison_rows(configs, targets)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["configuration"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(sweep_dir / "comparison.csv", table.getvalue())
    write_atomic(sweep_dir / "comparison.md", markdown(rows, verdict(configs), targets, sweep_dir.name))
    if targets:
        workloads, ratios = performance_profile(configs, targets[0])
        if workloads:
            write_atomic(sweep_dir / "performance_profile.md", profile_markdown(workloads, ratios, targets[0]))
    return rows


WORKLOAD_GROUP = "model"
#: Overrides that pick the workload rather than the solver (an experiment preset sets the model).
WORKLOAD_KEYS = (WORKLOAD_GROUP, "experiment")


def workload_of(config: Configuration) -> str:
    """The workload a configuration trains: its `model` choice (the data are Fashion-MNIST throughout)."""
    return config.jobs[0].results.get("choices", {}).get(WORKLOAD_GROUP, "?") if config.jobs else "?"


def solver_of(config: Configuration, common: Collection[str] = ()) -> str:
    """The configuration without its workload and without the overrides `common` to every configuration: the
    optimizer and schedule settings a profile compares."""
    kept = [o for o in config.overrides if override_key(o) not in WORKLOAD_KEYS and o not in common]
    return " ".join(override_label(o) for o in kept) or "default"


def performance_profile(configs: Sequence[Configuration], target: str) -> tuple[list[str], dict[str, list[float]]]:
    """Dolan-Moré / AlgoPerf performance ratios: per solver, for each workload, its mean training seconds to
    `target` over the best solver's on that workload (inf where it never reached it). Returns (workloads,
    solver -> ratios in workload order); empty when the configurations span fewer than two workloads."""
    seconds: dict[str, dict[str, float]] = {}
    common = set.intersection(*(set(c.overrides) for c in configs)) if len(configs) > 1 else set()
    for config in configs:
        if not config.jobs:  # no completed run: no workload to place it on
            continue
        hits = [r["seconds"] for r in (reached(job, target) for job in config.jobs) if r is not None]
        all_reached = len(hits) == len(config.jobs)
        seconds.setdefault(solver_of(config, common), {})[workload_of(config)] = float(np.mean(hits)) if all_reached else math.inf
    workloads = sorted({w for per in seconds.values() for w in per})
    if len(workloads) < 2:
        return [], {}
    best = {w: min(per.get(w, math.inf) for per in seconds.values()) for w in workloads}
    ratios = {
        solver: [per.get(w, math.inf) / best[w] if math.isfinite(best[w]) and best[w] > 0 else math.inf for w in workloads]
        for solver, per in seconds.items()
    }
    return workloads, ratios


def profile_fraction(ratios: Sequence[float], tau: float) -> float:
    """rho(tau): the fraction of workloads on which the solver is within a factor tau of the best."""
    return sum(r <= tau for r in ratios) / len(ratios)


PROFILE_TAUS = (1.0, 1.25, 1.5, 2.0, 4.0)


def profile_markdown(workloads: Sequence[str], ratios: dict[str, list[float]], target: str) -> str:
    head = ["solver", *(f"ratio on {w}" for w in workloads), *(f"rho({t:g})" for t in PROFILE_TAUS)]
    lines = [
        f"# Performance profile: training seconds to val/acc >= {target}",
        "",
        "ratio = a solver's mean seconds to the target over the best solver's on that workload (inf: some "
        "seed never reached it); rho(tau) = fraction of workloads within tau of the best.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for solver, rs in sorted(ratios.items(), key=lambda kv: -sum(profile_fraction(kv[1], t) for t in PROFILE_TAUS)):
        cells = [solver, *(f"{r:.2f}" for r in rs), *(f"{profile_fraction(rs, t):.2f}" for t in PROFILE_TAUS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
