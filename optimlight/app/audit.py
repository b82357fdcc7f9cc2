"""A table of the optimizers' parameter groups at fit start: which weight decay reaches how many tensors.

A wrong `no_decay` rule fails silently (training still runs), so every run shows and records its grouping:
written once to the run's log (stdout and train.log), logged to the loggers' hyperparameters, and the tensor
names of each group at logging.DEBUG (`python train.py hydra.verbose=optimlight.app.audit`).
"""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)
COLUMNS = ("weight_decay", "tensors", "parameters")


def group_rows(optimizers, named_parameters) -> dict[str, dict]:
    """`<Optimizer>/<group name>` -> weight decay, number of tensors, number of parameters, tensor names."""
    names = {id(p): n for n, p in named_parameters}
    rows = {}
    for optimizer in optimizers:
        for i, group in enumerate(optimizer.param_groups, start=1):
            label = f"{type(optimizer).__name__}/{group.get('name', f'pg{i}')}"
            rows[label] = {
                "weight_decay": group.get("weight_decay"),  # None: the optimizer has no weight decay (LBFGS)
                "tensors": len(group["params"]),
                "parameters": sum(p.numel() for p in group["params"]),
                "names": [names.get(id(p), "?") for p in group["params"]],
            }
    return rows


def format_table(rows: dict[str, dict]) -> str:
    """Rows as an aligned text table, one line per group."""
    width = max([len("param group"), *map(len, rows)])
    lines = [f"{'param group':<{width}}  " + "  ".join(f"{c:>12}" for c in COLUMNS)]
    for label, row in rows.items():
        decay = "-" if row["weight_decay"] is None else f"{row['weight_decay']:g}"
        lines.append(f"{label:<{width}}  {decay:>12}  {row['tensors']:>12,}  {row['parameters']:>12,}")
    return "\n".join(lines)


class ParamGroupAudit(L.Callback):
    """At fit start (the optimizers exist by then): the group table to the run's log and log it as `param_groups`."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = group_rows(trainer.optimizers, pl_module.named_parameters())
        for label, row in rows.items():
            log.debug("%s (weight_decay=%s): %s", label, row["weight_decay"], ", ".join(row["names"]))
        hparams = {"param_groups": {label: {c: row[c] for c in COLUMNS} for label, row in rows.items()}}
        for logger in trainer.loggers:
            logger.log_hyperparams(hparams)
        if trainer.is_global_zero:
            log.info("%s", format_table(rows))
