"""Every optimizer of `conf/optimizer/` trained the same way, one table: best val acc, test acc, s/epoch.

Each optimizer is one ordinary run (optimlight.tools.api.train: the config `python train.py` composes, tensor loader,
CSV logger) with its YAML defaults, the MLP and 3 epochs on the real data; runs go one after another so their
seconds per epoch compare. LBFGS alone trains on batches of 1024: each of its steps evaluates the batch ~24 times
(max_iter 20 plus the line search) and updates its history, which put an epoch of 64-image batches at ~11 minutes
on this CPU against ~1.5 with 1024. SparseAdam is refused for the MLP (dense gradients): its row says so. The
schedule-free and Lion rows need the extra: pip install -e '.[extra-optimizers]'.

    python bench/optimizers.py                       # the nine, then the others, 3 epochs
    python bench/optimizers.py --optimizers sgd,adamw --epochs 1 model=cnn   # trailing args: Hydra overrides

On a shared CPU set OMP_NUM_THREADS=1: two intra-op threads fighting other jobs for two cores ran a batch ~70x slower.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from optimlight.plugin.errors import ConfigError
from optimlight.tools.api import train

NINE = ("sgd", "asgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "lbfgs")
BEYOND = ("radam", "adamax", "rprop", "adafactor", "sparse_adam", "muon", "schedulefree_adamw", "lion")
OPTIMIZERS = NINE + BEYOND
#: Per-optimizer overrides on top of the shared ones (see the module docstring for why).
OWN_OVERRIDES = {"lbfgs": ["data.batch_size=1024"]}


def bench(optimizers, epochs: int, overrides: list[str], out_dir: Path) -> list[dict]:
    rows = []
    for name in optimizers:
        own = OWN_OVERRIDES.get(name, [])
        shared = ["model=mlp", f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu", "logger=csv", *overrides]
        try:
            record = train([f"optimizer={name}", *shared, *own], run_dir=out_dir / name)
        except ConfigError as exc:  # refused before training (SparseAdam on a dense model)
            record = {"metrics": {}, "mean_epoch_time": None, "status": f"refused: {exc.key}"}
        metrics = record["metrics"]
        rows.append(
            {
                "optimizer": name,
                "overrides": " ".join(own) or "-",
                "val acc (best)": metrics.get("val/acc_best"),
                "test acc": metrics.get("test/acc"),
                "s/epoch": record["mean_epoch_time"],
                "status": record["status"],
            }
        )
        print(markdown([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def cell(column: str, value) -> str:
    if value is None:
        return "-"
    if "acc" in column:
        return f"{100 * value:.2f}"
    return f"{value:.1f}" if column == "s/epoch" else str(value)


def markdown(rows: list[dict]) -> str:
    """Rows as a markdown table; accuracies in percent."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, row[k]) for k in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated conf/optimizer names")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/optimizers") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args, overrides = parser.parse_known_args()
    rows = bench(args.optimizers.split(","), args.epochs, overrides, args.out)
    table = markdown(rows)
    (args.out / "summary.md").write_text(table + "\n")
    print(f"\n{args.epochs} epochs, MLP, Fashion-MNIST (55,000 train / 5,000 val / 10,000 test)\n{table}")


if __name__ == "__main__":
    main()
