"""The Hydra callback that keeps a multirun's sweep dir current (conf/hydra/callbacks/sweep_summary.yaml).

After every job: `summary.csv`/`summary.md` (one row per job) and `comparison.csv`/`comparison.md` (one row per
configuration, seeds aggregated, with the verdict), so a sweep that stops at a failed job (Hydra's sweepers raise
once the batch is done) still leaves them complete. At the end of the multirun: the report figures, and the
comparison as one W&B run in the sweep's group (job_type `comparison`) when the jobs log to W&B; for each stage
of a tuning sweep (`search/`, `final/`) apart.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from optimlight.app.record import read_results, record_failure
from optimlight.tools.compare import write_comparison
from optimlight.tools.report import write_report
from optimlight.tools.sweep import job_error, write_summary
from optimlight.tools.wandb_report import log_comparison_run


class SweepSummary(Callback):
    """Hydra callback: the sweep dir's summary, comparison, figures and W&B comparison run (module docstring)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        error = job_error(job_return)
        run_dir = Path(config.hydra.runtime.output_dir)
        # a preempted run resumes: keep its status; a run that recorded its own failure said it best (error_text)
        if error and read_results(run_dir).get("status") not in ("preempted", "failed"):
            choices = {k: v for k, v in config.hydra.runtime.choices.items() if not k.startswith("hydra/")}
            record_failure(run_dir, error, choices)
        write_summary(config.hydra.sweep.dir)
        write_comparison(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        wandb_node = OmegaConf.select(config, "logger.wandb")
        for sweep_dir in stage_dirs(Path(config.hydra.sweep.dir)):
            figures = write_report(sweep_dir)  # summary, comparison and figures
            if wandb_node and wandb_node.get("_target_"):
                log_comparison_run(sweep_dir, figures, OmegaConf.to_container(wandb_node, resolve=False))
            left = ", ".join(["summary.md", "comparison.md", *(path.name for path in figures)])
            print(f"sweep dir {sweep_dir}: {left}", flush=True)  # last, after W&B's lines: what the sweep left


def stage_dirs(sweep_dir: Path) -> list[Path]:
    """The folders whose jobs are compared together: those `on_job_end` wrote a summary into (a tuning sweep's
    `search/` and `final/`); the sweep dir itself for a plain sweep or before any job ended."""
    return sorted({path.parent for path in sweep_dir.glob("**/summary.csv")}) or [sweep_dir]
