"""Read back what a run's CSVLogger wrote, one value per optimizer step, for the scheduler and preview tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def logged(run_dir: Path, column: str) -> np.ndarray:
    """`column` of <run_dir>/csv/metrics.csv at every optimizer step (accumulated batches log a step twice)."""
    frame = pd.read_csv(Path(run_dir) / "csv" / "metrics.csv")
    rows = frame.dropna(subset=[column]).drop_duplicates("step")
    assert list(rows["step"]) == list(range(len(rows))), "a step is missing from the log"
    return rows[column].to_numpy()
