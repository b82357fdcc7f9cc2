"""The run's own lines (parameter-group table, one line per epoch, test results, where the record went) are
records of the `optimlight` loggers, so that `<run dir>/train.log` holds them: under `python train.py`, Hydra's job
logging (`conf/hydra/job_logging/optimlight.yaml`) shows them on stdout and writes them to train.log. A run started
from Python (`optimlight.tools.api`, notebooks, tests) has no job logging, and `shown` prints them on stdout."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

RUN_LOG = "train.log"
log = logging.getLogger(__name__)


def metrics_line(metrics: Mapping[str, float]) -> str:
    """`key=value` pairs, sorted, 4 significant digits: one line that a log reader can grep."""
    return "  ".join(f"{key}={float(value):.4g}" for key, value in sorted(metrics.items()))


def written_by_job_logging(run_dir: Path) -> bool:
    """Whether the root logger already writes `<run_dir>/train.log` (Hydra configured logging for this job)."""
    target = (Path(run_dir) / RUN_LOG).resolve()
    return any(
        isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == target
        for handler in logging.getLogger().handlers
    )


@contextmanager
def shown(run_dir: Path) -> Iterator[None]:
    """While the body runs, optimlight's INFO records reach stdout even when nothing configured logging."""
    if written_by_job_logging(run_dir):
        yield
        return
    package = logging.getLogger("optimlight")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = package.level
    package.addHandler(handler)
    if not level or level > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
