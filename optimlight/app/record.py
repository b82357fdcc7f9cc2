"""The run record, the one contract between a run and everything that reads it afterwards (sweep summaries,
comparisons, reports, notebooks): `results.json` and the per-epoch metrics of `csv/metrics.csv`.

results.json: `status` (completed | failed | preempted | pruned: a tuning trial its study stopped early),
`metrics` (final values of RESULT_METRICS, null when not
finite), `epoch_times` (seconds per training epoch), `mean_epoch_time`, `choices` (the option of each config
group), and extras (`best_checkpoint`, `error`, ...).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS_FILE = "results.json"
METRICS_CSV = Path("csv") / "metrics.csv"
RESULT_METRICS = ("val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss", "train/loss", "train/acc")
#: Epoch-level metrics of a run's CSV log.
EPOCH_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc", "train/epoch_time")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` whole: readers never see half a file, and parallel writers (joblib, SLURM) never mix."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    tmp.replace(path)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def write_results(
    run_dir: Path, metrics: Mapping, epoch_times: Sequence[float], choices: Mapping, status: str, **extra: Any
) -> dict:
    """Write `<run_dir>/results.json` from the run's final metrics, epoch times, config choices and status."""
    record = {
        "status": status,
        "metrics": {k: _finite(metrics[k]) for k in RESULT_METRICS if k in metrics},
        "epoch_times": [round(t, 4) for t in epoch_times],
        "mean_epoch_time": round(sum(epoch_times) / len(epoch_times), 4) if epoch_times else None,
        "choices": dict(choices),
        **extra,
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(run_dir) / RESULTS_FILE, json.dumps(record, indent=2) + "\n")
    return record


def read_results(run_dir: Path) -> dict:
    """The run's results.json; {} when the run died before writing one."""
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def record_failure(run_dir: Path, error: str, choices: Mapping) -> dict:
    """Mark the run's results.json failed with `error`; create it when the run died before writing it."""
    record = read_results(run_dir)
    if not record:
        return write_results(run_dir, {}, [], choices, "failed", error=error)
    record.update(status="failed", error=error)
    write_atomic(Path(run_dir) / RESULTS_FILE, json.dumps(record, indent=2) + "\n")
    return record


def epoch_metrics(run_dir: Path, keys: Sequence[str] = EPOCH_METRICS) -> pd.DataFrame:
    """The run's epoch-level `keys` per epoch (index 1, 2, ...) from csv/metrics.csv.

    Lightning writes an epoch's training and validation values on separate rows and step-level values on others;
    this takes each epoch's last value of each key. Empty for a run without a CSV log or before its first epoch.
    """
    path = Path(run_dir) / METRICS_CSV
    frame = pd.read_csv(path) if path.exists() else pd.DataFrame()
    present = [key for key in keys if key in frame]
    if not present:
        return pd.DataFrame(columns=list(keys))
    per_epoch = frame.dropna(subset=present, how="all").groupby("epoch")[present].last()
    per_epoch.index = per_epoch.index.astype(int) + 1
    return per_epoch
