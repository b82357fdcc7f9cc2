"""Logger construction and the run's own record (`results.json`), which reports and sweeps read."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from hydra.utils import instantiate

RESULT_METRICS = ("val/acc_best", "val/acc", "val/loss", "test/acc", "test/loss", "train/loss", "train/acc")


def build_loggers(cfg: Mapping | None) -> list:
    """One logger per entry of the `logger` node that has a `_target_`; an empty node means no logger."""
    return [instantiate(node) for node in (cfg or {}).values() if node and node.get("_target_")]


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def write_results(path: Path, metrics: Mapping, epoch_times: list[float], choices: Mapping, status: str, **extra) -> dict:
    """Write the run's final metrics, seconds per epoch, config choices and status as JSON; return the record."""
    record = {
        "status": status,
        "metrics": {k: _number(metrics[k]) for k in RESULT_METRICS if k in metrics},
        "epoch_times": [round(t, 4) for t in epoch_times],
        "mean_epoch_time": round(sum(epoch_times) / len(epoch_times), 4) if epoch_times else None,
        "choices": dict(choices),
        **extra,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return record
