"""A multirun's summary, built from the job dirs alone: `<sweep dir>/summary.csv` and `summary.md`, one row per
job with the overrides that set it apart, `val/acc_best`, `test/acc`, mean seconds per epoch and status.

`SweepSummary` (conf/hydra/callbacks/sweep_summary.yaml) rewrites both files after every job, so a sweep that
stops at a failed job (Hydra's sweepers raise once the batch is done) still leaves them complete, and once more
at the end of the multirun.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from optimlight.loggers import first_line, write_results

COLUMNS = ("job", "overrides", "val/acc_best", "test/acc", "s/epoch", "status", "error")


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
        results_file = job_dir / "results.json"
        jobs.append(
            Job(
                name=job_dir.relative_to(sweep_dir).as_posix(),
                dir=job_dir,
                overrides=list(OmegaConf.load(overrides_file)),
                results=json.loads(results_file.read_text()) if results_file.exists() else {},
            )
        )
    return sorted(jobs, key=lambda job: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", job.name)])


def common_overrides(jobs: list[Job]) -> list[str]:
    """The overrides every job shares (none for a single job, whose overrides are all its own)."""
    if len(jobs) < 2:
        return []
    return [o for o in jobs[0].overrides if all(o in job.overrides for job in jobs[1:])]


def job_label(job: Job, common: list[str]) -> str:
    """What sets a job apart: its own overrides, a config group's choice shown as the bare option name."""
    own = [o for o in job.overrides if o not in common]
    return " ".join(o.split("=", 1)[1] if "." not in o.split("=", 1)[0] else o for o in own) or job.name


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


def _write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole: parallel jobs (joblib, SLURM) may rewrite the summary at the same moment."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    tmp.replace(path)


def write_summary(sweep_dir: str | Path) -> list[dict]:
    """Write `summary.csv` and `summary.md` into `sweep_dir`; return the rows."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    rows = summary_rows(jobs)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(sweep_dir / "summary.csv", table.getvalue())
    _write_atomic(sweep_dir / "summary.md", markdown(rows, sweep_dir.name, common_overrides(jobs)))
    return rows


def job_error(job_return: JobReturn) -> str | None:
    """The first line of the exception a job raised; None when it completed."""
    try:
        job_return.return_value  # noqa: B018 - re-raises the job's exception
    except Exception as exc:
        return first_line(exc)
    return None


def record_failure(job_dir: Path, error: str, choices) -> None:
    """Mark the job's results.json failed with `error`; create it when the job died before writing it."""
    path = job_dir / "results.json"
    if path.exists():
        record = {**json.loads(path.read_text()), "status": "failed", "error": error}
        _write_atomic(path, json.dumps(record, indent=2) + "\n")
    else:
        write_results(path, {}, [], choices, "failed", error=error)


class SweepSummary(Callback):
    """Hydra callback: keep the sweep dir's summary current as jobs end (see the module docstring)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        error = job_error(job_return)
        if error:
            choices = {k: v for k, v in config.hydra.runtime.choices.items() if not k.startswith("hydra/")}
            record_failure(Path(config.hydra.runtime.output_dir), error, choices)
        write_summary(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        write_summary(config.hydra.sweep.dir)
