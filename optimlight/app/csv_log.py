"""The run's CSV log, `csv/metrics.csv`: one history per run dir, kept across a resume, a spawned test process and a
kill.

Lightning's CSVLogger deletes an existing metrics.csv when it starts and keeps the file's columns in memory, so a
resumed run (`ckpt_path=last`) wipes the epochs before the checkpoint, and a second process (ddp_spawn's test) fails
on columns it has not seen. Here the file is the truth: every write takes the columns from the file (read again
whenever the file is not as this writer left it), rows reach the disk as they are logged, and a resumed fit drops
only the rows of the steps its checkpoint had not reached (those were logged after the checkpoint and are logged
again), so the file ends as an uninterrupted run's would.
"""

from __future__ import annotations

import csv

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from optimlight.app.ranges import PositiveInt


class HistoryWriter(ExperimentWriter):
    """Lightning's writer without the delete at start, with the file's header as the columns of every write."""

    def __init__(self, log_dir: str) -> None:
        self._last_write: tuple[list[str], int] | None = None  # (header, file size) as this writer left the file
        super().__init__(log_dir)

    @override
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning's writer deletes it): what to keep is `keep_before`'s call."""

    def header(self) -> list[str]:
        """The file's columns. Read again unless the file has the size this writer's last write left (a write of
        another process, ddp_spawn's test, changes it), so the file stays the truth at one `stat` a row."""
        try:
            size = self._fs.size(self.metrics_file_path)
        except FileNotFoundError:
            return []
        if self._last_write is None or self._last_write[1] != size:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._last_write = next(csv.reader(file), []), size
        return self._last_write[0]

    @override
    def save(self) -> None:
        if not self.metrics:
            return
        header = self.header()
        keys = sorted(set(header).union(*self.metrics))
        if header and header != keys:
            self._rewrite_with_new_header(keys)
        with self._fs.open(self.metrics_file_path, "a" if header else "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            if not header:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics_keys, self.metrics = keys, []
        self._last_write = keys, self._fs.size(self.metrics_file_path)

    def keep_before(self, step: int) -> None:
        """Drop the rows logged at optimizer step `step` or later (all of them for 0: a fresh run)."""
        self.metrics, self._last_write = [], None
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            keys, rows = list(reader.fieldnames or []), [row for row in reader if int(float(row["step"])) < step]
        if not rows:
            self._fs.rm_file(self.metrics_file_path)
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing through `HistoryWriter`, flushing every row by default.

    Args:
        save_dir, name, version, prefix, flush_logs_every_n_steps: CSVLogger's, flushing every row by default.
        resume: the checkpoint the run resumes from (the config's `ckpt_path`); null starts metrics.csv afresh.
    """

    def __init__(
        self,
        save_dir: str,
        name: str = "csv",
        version: str = "",
        prefix: str = "",
        flush_logs_every_n_steps: PositiveInt = 1,
        resume: str | None = None,
    ):
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self.resume = resume

    @property
    @override
    @rank_zero_experiment
    def experiment(self) -> HistoryWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = HistoryWriter(log_dir=self.log_dir)
            if not self.resume:
                self._experiment.keep_before(0)
        return self._experiment  # type: ignore[return-value]  # the base class types it as its own writer

    @rank_zero_only
    def keep_before(self, step: int) -> None:
        self.experiment.keep_before(step)


class ResumeCSVHistory(L.Callback):
    """At the start of a resumed fit, when Lightning has restored the step, trim each RunCSVLogger's file to it
    (to nothing when `ckpt_path=last` found no checkpoint and the fit starts from step 0)."""

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger) and logger.resume:
                logger.keep_before(trainer.global_step)
