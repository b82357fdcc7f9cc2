"""The sweep's comparison as one W&B run in the sweep's group: the comparison table as a `wandb.Table`, the
verdict in the summary and the report figures as images, beside the jobs' own runs (job_type `comparison`)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from optimlight.app.loggers import start_mode, sweep_group_name, wandb_settings

JOB_TYPE = "comparison"


def log_comparison_run(sweep_dir: Path, figures: Sequence[Path], wandb_cfg: Mapping) -> str | None:
    """Start, fill and finish the comparison run (offline where the jobs ran offline); return its id, or None
    when W&B is disabled."""
    import wandb

    mode = start_mode(str(wandb_cfg.get("mode", "auto")), sweep_dir)
    if mode == "disabled":
        return None
    with open(sweep_dir / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    verdict = (sweep_dir / "comparison.md").read_text().split("## Verdict", 1)[-1].strip()
    run = wandb.init(
        project=wandb_cfg.get("project") or "optimlight",
        entity=wandb_cfg.get("entity"),
        group=wandb_cfg.get("group") or sweep_group_name(sweep_dir),
        job_type=JOB_TYPE,
        name=f"comparison-{sweep_dir.name}",
        dir=str(sweep_dir),
        mode=mode,
        reinit="create_new",
        settings=wandb_settings(mode),
    )
    try:
        columns = list(rows[0]) if rows else ["configuration"]
        run.log(
            {
                "comparison/table": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows]),
                **{f"comparison/{path.stem}": wandb.Image(str(path)) for path in figures if path.exists()},
            }
        )
        run.summary.update({"verdict": verdict, "configurations": len(rows)})
        return run.id
    finally:
        run.finish()
