"""A multirun's summary, built from the job dirs alone: `<sweep dir>/summary.csv` and `summary.md`, one row per
job with the overrides that set it apart, `val/acc_best`, `test/acc`, mean seconds per epoch and status.

`optimlight.tools.sweep_callback.SweepSummary` rewrites them as jobs end.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from optimlight.app.config import CONFIG_DIR
from optimlight.app.overrides import override_key, parse_override
from optimlight.app.record import read_results, write_atomic
from optimlight.plugin.errors import first_line

COLUMNS = ("job", "overrides", "val/acc_best", "test/acc", "s/epoch", "status", "error")
#: The config groups (`optimizer`, `scheduler`, ...): a choice of one reads well as its bare option name.
CONFIG_GROUPS = frozenset(path.name for path in Path(CONFIG_DIR).iterdir() if path.is_dir())


@dataclass
class Job:
    """One job dir of a sweep: its name (the dir, relative to the sweep dir), command-line overrides and
    results.json ({} if it died first)."""

    name: str
    dir: Path
    overrides: list[str]
    results: dict

    @property
    def status(self) -> str:
        return self.results.get("status", "failed")

    def metric(self, key: str) -> float | None:
        return self.results.get("metrics", {}).get(key)


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """The jobs under `sweep_dir` (every folder with Hydra's `.hydra/overrides.yaml`) in natural order of their
    dirs (2 before 10); several sweeps may share a sweep dir when their `hydra.sweep.subdir`s differ."""
    jobs = []
    for overrides_file in Path(sweep_dir).glob("**/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        jobs.append(
            Job(
                name=job_dir.relative_to(sweep_dir).as_posix(),
                dir=job_dir,
                overrides=list(OmegaConf.load(overrides_file)),
                results=read_results(job_dir),
            )
        )
    return sorted(jobs, key=lambda job: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", job.name)])


def common_overrides(jobs: list[Job]) -> list[str]:
    """The overrides every job shares (none for a single job, whose overrides are all its own)."""
    if len(jobs) < 2:
        return []
    return [o for o in jobs[0].overrides if all(o in job.overrides for job in jobs[1:])]


def compared(jobs: list[Job]) -> str:
    """What a sweep compares, for its figures' titles: the override keys whose values differ between jobs, then
    the overrides all jobs share (the data dir left out: where the files lie is no training setting)."""
    common = common_overrides(jobs)
    varied = list(dict.fromkeys(override_key(o) for job in jobs for o in job.overrides if o not in common))
    shared = " ".join(o for o in common if not o.startswith("data.data_dir="))
    head = f"{' x '.join(varied) or 'one configuration'} ({len(jobs)} job{'s' * (len(jobs) != 1)})"
    return f"{head}; all jobs: {shared}" if shared else head


def override_label(override: str) -> str:
    """An override as a label: a config group's choice as the bare option name (`sgd`), any other key with its
    name (`seed=1`, `optimizer.lr=0.1`), so that a number always says what it is."""
    return str(parse_override(override).value()) if override_key(override) in CONFIG_GROUPS else override


def job_label(job: Job, common: list[str]) -> str:
    """What sets a job apart: its own overrides, as `override_label` writes them."""
    return " ".join(override_label(o) for o in job.overrides if o not in common) or job.name


def summary_rows(jobs: list[Job]) -> list[dict]:
    common = common_overrides(jobs)
    return [
        {
            "job": job.name,
            "overrides": " ".join(o for o in job.overrides if o not in common),
            "val/acc_best": job.metric("val/acc_best"),
            "test/acc": job.metric("test/acc"),
            "s/epoch": job.results.get("mean_epoch_time"),
            "status": job.status,
            "error": job.results.get("error", ""),
        }
        for job in jobs
    ]


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")


def markdown(rows: list[dict], title: str, common: list[str]) -> str:
    lines = [f"# Sweep {title}", ""]
    if common:
        lines += [f"All jobs: `{' '.join(common)}`", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> list[dict]:
    """Write `summary.csv` and `summary.md` into `sweep_dir`; return the rows."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    rows = summary_rows(jobs)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(sweep_dir / "summary.csv", table.getvalue())
    write_atomic(sweep_dir / "summary.md", markdown(rows, sweep_dir.name, common_overrides(jobs)))
    return rows


def job_error(job_return: JobReturn) -> str | None:
    """The first line of the exception a job raised; None when it completed."""
    try:
        job_return.return_value  # noqa: B018 - re-raises the job's exception
    except Exception as exc:
        return first_line(exc)
    return None
