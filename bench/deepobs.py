"""DeepOBS's Fashion-MNIST baselines beside optimlight's run of the same setting, epoch by epoch.

Trains one DeepOBS baseline setting through optimlight (`experiment=deepobs_fmnist_<problem>`, the optimizer and
learning rate DeepOBS tuned, `optimlight.tools.api.train`) and prints, per epoch, optimlight's test accuracy and
loss beside DeepOBS's published values for that setting (mean and range over the seeds DeepOBS publishes) and the
difference. The published values are in bench/deepobs_baselines.json, taken from DeepOBS's baseline files
(docs/explanation/deepobs.md cites them). On a CPU, `--epochs` runs a prefix of the 100 epochs.

    python bench/deepobs.py --problem 2c2d --optimizer adam --epochs 3 data.data_dir=../shared/data
    python bench/deepobs.py --problem mlp --optimizer sgd --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from optimlight.app.record import epoch_metrics
from optimlight.tools.api import train

BASELINES = Path(__file__).with_name("deepobs_baselines.json")
#: DeepOBS's optimizer names -> optimlight overrides (Momentum is SGD with momentum 0.99).
OPTIMIZERS = {
    "sgd": ["optimizer=sgd", "optimizer.momentum=0"],
    "momentum": ["optimizer=sgd", "optimizer.momentum=0.99"],
    "adam": ["optimizer=adam"],
}


def load_baseline(problem: str, optimizer: str) -> dict:
    """{"lr", "source", "seeds", "test_acc": [[per-epoch values of one seed], ...], "test_loss": [...]}; {} where
    DeepOBS publishes no baseline (fmnist_mlp: its baselines/ folder has none)."""
    return json.loads(BASELINES.read_text()).get(f"fmnist_{problem}", {}).get(optimizer, {})


def per_epoch(seeds: list[list[float]], epoch: int) -> tuple[float, float, float] | None:
    """(mean, min, max) over DeepOBS's seeds at `epoch` (1-based); None past what was published."""
    values = [seed[epoch] for seed in seeds if len(seed) > epoch]  # index 0 is the evaluation before training
    return (statistics.fmean(values), min(values), max(values)) if values else None


def run(problem: str, optimizer: str, lr: float, epochs: int, overrides: list[str], out: Path) -> list[dict]:
    baseline = load_baseline(problem, optimizer)
    settings = [*OPTIMIZERS[optimizer], f"optimizer.lr={lr}"]
    train(
        [f"experiment=deepobs_fmnist_{problem}", *settings, f"trainer.max_epochs={epochs}", "logger=csv", *overrides], run_dir=out
    )
    curve = epoch_metrics(out, ("test_epoch/acc", "test_epoch/loss"))
    rows = []
    for epoch in curve.index:
        acc = per_epoch(baseline.get("test_acc", []), epoch)
        loss = per_epoch(baseline.get("test_loss", []), epoch)
        mine_acc, mine_loss = float(curve.loc[epoch, "test_epoch/acc"]), float(curve.loc[epoch, "test_epoch/loss"])
        rows.append({"epoch": epoch, "acc": mine_acc, "deepobs_acc": acc, "loss": mine_loss, "deepobs_loss": loss})
    return rows


def table(rows: list[dict], title: str) -> str:
    def published(value):
        return "-" if value is None else f"{value[0]:.4f} [{value[1]:.4f}, {value[2]:.4f}]"

    def diff(mine, value):
        return "-" if value is None else f"{mine - value[0]:+.4f}"

    lines = [
        title,
        f"{'epoch':>5}  {'test acc':>8}  {'DeepOBS acc mean [min, max]':>28}  {'diff':>7}  "
        f"{'test loss':>9}  {'DeepOBS loss mean [min, max]':>28}  {'diff':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['epoch']:>5}  {r['acc']:>8.4f}  {published(r['deepobs_acc']):>28}  {diff(r['acc'], r['deepobs_acc']):>7}  "
            f"{r['loss']:>9.4f}  {published(r['deepobs_loss']):>28}  {diff(r['loss'], r['deepobs_loss']):>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=("2c2d", "mlp"), required=True)
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), required=True)
    parser.add_argument("--epochs", type=int, default=100, help="a prefix of DeepOBS's 100 epochs")
    parser.add_argument("--lr", type=float, default=None, help="default: DeepOBS's tuned learning rate")
    parser.add_argument("--out", type=Path, default=None, help="the run dir (default: a temporary one)")
    args, overrides = parser.parse_known_args(argv)
    baseline = load_baseline(args.problem, args.optimizer)
    lr = args.lr if args.lr is not None else baseline.get("lr")
    if lr is None:
        parser.error(f"DeepOBS publishes no fmnist_{args.problem} baseline for {args.optimizer}: give --lr")
    out = args.out or Path(tempfile.mkdtemp(prefix="deepobs-"))
    rows = run(args.problem, args.optimizer, lr, args.epochs, overrides, out)
    if baseline.get("test_acc"):
        source = f"DeepOBS: {len(baseline['seeds'])} seeds of {baseline['source']}"
    else:
        source = "no per-epoch values of DeepOBS's for this setting in bench/deepobs_baselines.json"
    print(table(rows, f"fmnist_{args.problem}, {args.optimizer} lr {lr:g}; {source}; run dir {out}"))
    return rows


if __name__ == "__main__":
    main()
