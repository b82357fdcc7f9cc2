"""Seconds per epoch of three ways to train the same network on the same Fashion-MNIST split, side by side.

(a) optimlight: the run `python train.py` makes (optimlight.api.train, tensor loader, lean logging);
(b) a hand-written PyTorch loop over the same preloaded, normalized tensors;
(c) a plain LightningModule fed by torchvision's FashionMNIST + DataLoader(ToTensor, Normalize), logging every step.

All three use the same model, optimizer settings, batch size and epochs. The machine is noisy, so the three are
interleaved round by round (the order rotates) and medians are compared. Usage:

    python bench/speed.py                 # MLP and CNN, 3 epochs, 2 rounds
    python bench/speed.py --quick         # a smoke run: few batches (what the tests run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from optimlight.api import train
from optimlight.data import MEAN, STD, FashionMNISTDataModule, default_data_dir, split_indices
from optimlight.models import CNN, MLP

MODELS = {"mlp": MLP, "cnn": CNN}
OPTIMIZER = {"lr": 1e-3, "weight_decay": 1e-4}  # seed 003's AdamW


def optimlight_path(model, epochs, batches, data_dir, work) -> tuple[list[float], float]:
    overrides = [
        f"model={model}", f"data.data_dir={data_dir}", f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0", "logger=none", f"optimizer.lr={OPTIMIZER['lr']}",
        f"optimizer.weight_decay={OPTIMIZER['weight_decay']}", "optimizer.no_decay=[]",
    ]
    if batches:
        overrides += [f"trainer.limit_train_batches={batches}", f"trainer.limit_test_batches={batches}",
                      f"trainer.limit_val_batches={batches}"]
    results = train(overrides, run_dir=tempfile.mkdtemp(dir=work))
    return results["epoch_times"], results["metrics"]["test/acc"]


def hand_written_loop(model, epochs, batches, data_dir, work) -> tuple[list[float], float]:
    dm = FashionMNISTDataModule(data_dir=data_dir, batch_size=64)
    dm.setup("fit")
    (x, y), (test_x, test_y) = dm._tensors["train"], dm._tensors["test"]
    L.seed_everything(42)
    net = MODELS[model]()
    opt = torch.optim.AdamW(net.parameters(), **OPTIMIZER)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    steps = batches or -(-len(x) // 64)
    for epoch in range(epochs):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(steps):
            idx = order[i * 64 : (i + 1) * 64]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    net.eval()
    n_test = batches * 1000 if batches else len(test_x)
    with torch.no_grad():
        preds = torch.cat([net(test_x[i : i + 1000]) for i in range(0, n_test, 1000)])
    return times, multiclass_accuracy(preds, test_y[:n_test], num_classes=10, average="micro").item()


class PlainModule(L.LightningModule):
    """What a first Lightning module usually looks like: per-step logging to the progress bar."""

    def __init__(self, model):
        super().__init__()
        self.net = MODELS[model]()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, prog_bar=True)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", multiclass_accuracy(self.net(x), y, num_classes=10, average="micro"))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), **OPTIMIZER)


class EpochClock(L.Callback):
    def __init__(self):
        self.times, self._start = [], 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._start)


def dataloader_lightning(model, epochs, batches, data_dir, work) -> tuple[list[float], float]:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    full = datasets.FashionMNIST(data_dir, train=True, transform=transform)
    train_set = torch.utils.data.Subset(full, split_indices(60_000, 5_000, seed=42)[0].tolist())
    test_set = datasets.FashionMNIST(data_dir, train=False, transform=transform)
    L.seed_everything(42)
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[clock],
        limit_train_batches=batches or 1.0, limit_test_batches=batches or 1.0, default_root_dir=work,
        enable_model_summary=False,
    )
    module = PlainModule(model)
    trainer.fit(module, torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True))
    result = trainer.test(module, torch.utils.data.DataLoader(test_set, batch_size=1000), verbose=False)
    return clock.times, result[0]["test_acc"]


PATHS = {"a optimlight": optimlight_path, "b hand-written": hand_written_loop, "c DataLoader": dataloader_lightning}


def bench(model: str, epochs: int, rounds: int, batches: int | None, data_dir: str, work: str) -> dict:
    times = {name: [] for name in PATHS}
    accs = {name: [] for name in PATHS}
    names = list(PATHS)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            epoch_times, acc = PATHS[name](model, epochs, batches, data_dir, work)
            times[name] += epoch_times
            accs[name].append(acc)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{model}: {epochs} epoch(s) x {rounds} round(s), batch 64, AdamW lr {OPTIMIZER['lr']} wd "
          f"{OPTIMIZER['weight_decay']}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<16} {'s/epoch (median)':>17} {'all epochs (s)':<40} {'test acc':>9}")
    for name in names:
        all_t = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<16} {med[name]:>17.2f} {all_t:<40} {statistics.mean(accs[name]):>9.4f}")
    a, b, c = (med[n] for n in names)
    print(f"ratios: a/b = {a / b:.2f}   c/a = {c / a:.2f}")
    return {"median": med, "acc": accs, "a/b": a / b, "c/a": c / a}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 round, 20 batches: a smoke test")
    parser.add_argument("--data-dir", default=default_data_dir())
    args = parser.parse_args(argv)
    epochs, rounds, batches = (1, 1, 20) if args.quick else (args.epochs, args.rounds, None)
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory() as work:
        return {m: bench(m, epochs, rounds, batches, args.data_dir, work) for m in args.models}


if __name__ == "__main__":
    main()
