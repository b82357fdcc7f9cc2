"""Seconds per epoch of three ways to train the same network on the same Fashion-MNIST split, side by side.

(a) optimlight: the run `python train.py` makes (optimlight.tools.api.train, tensor loader, W&B offline + CSV logging);
(b) a hand-written PyTorch loop over the same preloaded, normalized tensors;
(c) a plain LightningModule fed by torchvision's FashionMNIST + DataLoader(ToTensor, Normalize), logging every step;
(d) the floor under (a): a minimal LightningModule (loss only, no metrics, logger or callbacks) on optimlight's
    tensor batches, so d/b is what Lightning's own loop costs and a/d what optimlight adds on top of it.

All use the same model, initial weights, optimizer settings, batch size and epochs; (a), (b) and (d) also see the
same batches in the same order. No path pays the failing NVML load that Lightning's import would put in every
optimizer step on a machine without NVIDIA's driver (optimlight.plugin.cuda_probe). The machine is noisy, so the paths
are interleaved round by round (the order rotates) and medians are compared.

`--knobs` measures the speed settings instead: optimlight's path (a) with each knob on, against its defaults.

`--population` measures a sweep of K optimizers of the MLP (K = 4 and 9 by default), each trained for the same
epochs on the same batches, three ways: (a) one multirun with `hydra/launcher=population` (the K jobs train as one
vectorized population), (b) K hand-written loops, one after the other, (c) the same multirun with Hydra's basic
launcher, which runs the K jobs one after the other. Wall times cover everything each way pays in this process
(data, building, logging, checkpoints, testing); training seconds are the sum of epoch times alone.

    python bench/speed.py                 # MLP and CNN, 3 epochs, 2 rounds
    python bench/speed.py --knobs --models mlp
    python bench/speed.py --knobs --models cnn --batches 200   # 200 training batches per epoch
    python bench/speed.py --quick         # a smoke run: few batches (what the tests run)
    python bench/speed.py --population --epochs 2 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial

import lightning as L
import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from optimlight.app.data import MEAN, STD, FashionMNISTDataModule, default_data_dir, split_indices
from optimlight.app.models import CNN, MLP
from optimlight.cli import multirun
from optimlight.plugin.cuda_probe import skip_failing_nvml_check
from optimlight.tools.api import train
from optimlight.tools.sweep import find_jobs

MODELS = {"mlp": MLP, "cnn": CNN}
OPTIMIZER = {"lr": 1e-3, "weight_decay": 1e-4}  # seed 003's AdamW (docs/explanation/fashion-mnist-experiment.md)


#: The default loggers (W&B + CSV), without the network.
WANDB_OFFLINE = ("logger.wandb.mode=offline",)


def run_overrides(model, epochs, batches, data_dir, accelerator="cpu", logging=WANDB_OFFLINE) -> list[str]:
    """What every bench run shares: the model, data, epochs (and batches per epoch), no sanity check, the loggers."""
    overrides = [
        f"model={model}",
        f"data.data_dir={data_dir}",
        f"trainer.max_epochs={epochs}",
        f"trainer.accelerator={accelerator}",
        "trainer.num_sanity_val_steps=0",
        *logging,
    ]
    if batches:
        overrides += [
            f"trainer.limit_train_batches={batches}",
            f"trainer.limit_val_batches={batches}",
            f"trainer.limit_test_batches={batches}",
        ]
    return overrides


def optimlight_path(model, epochs, batches, data_dir, work, knob=()) -> tuple[list[float], float]:
    overrides = [
        *run_overrides(model, epochs, batches, data_dir),
        f"optimizer.lr={OPTIMIZER['lr']}",
        f"optimizer.weight_decay={OPTIMIZER['weight_decay']}",
        "optimizer.no_decay=[]",
    ]
    threads, matmul = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        results = train([*overrides, *knob], run_dir=tempfile.mkdtemp(dir=work))
    finally:  # speed.* settings are process-wide: the next run starts from the bench's own
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(matmul)
    return results["epoch_times"], results["metrics"]["test/acc"]


def hand_written_loop(model, epochs, batches, data_dir, work, make_optimizer=None) -> tuple[list[float], float]:
    dm = FashionMNISTDataModule(data_dir=data_dir, batch_size=64, seed=42)  # the seed train.py runs with
    dm.setup("fit")
    (x, y), (test_x, test_y) = dm._tensors["train"], dm._tensors["test"]
    L.seed_everything(42)
    net = MODELS[model]()
    opt = make_optimizer(net) if make_optimizer else torch.optim.AdamW(net.parameters(), **OPTIMIZER)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    steps = batches or -(-len(x) // 64)
    for epoch in range(epochs):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(dm.hparams.seed + epoch))
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

    def __init__(self, model, log_steps=True):
        super().__init__()
        self.net = MODELS[model]()
        self.log_steps = log_steps

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if self.log_steps:
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


def fit_and_test(module, train_loader, test_loader, epochs, batches, work, **trainer_args) -> tuple[list[float], float]:
    """Lightning's Trainer with no logger and no checkpoints: seconds per training epoch, test accuracy."""
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        callbacks=[clock],
        limit_train_batches=batches or 1.0,
        limit_test_batches=batches or 1.0,
        default_root_dir=work,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(module, train_loader)
    return clock.times, trainer.test(module, test_loader, verbose=False)[0]["test_acc"]


def dataloader_lightning(model, epochs, batches, data_dir, work) -> tuple[list[float], float]:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    full = datasets.FashionMNIST(data_dir, train=True, transform=transform)
    train_set = torch.utils.data.Subset(full, split_indices(60_000, 5_000, seed=42)[0].tolist())
    test_set = datasets.FashionMNIST(data_dir, train=False, transform=transform)
    L.seed_everything(42)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    return fit_and_test(PlainModule(model), train_loader, test_loader, epochs, batches, work)


def bare_lightning(model, epochs, batches, data_dir, work) -> tuple[list[float], float]:
    dm = FashionMNISTDataModule(data_dir=data_dir, batch_size=64, seed=42)  # the seed train.py runs with
    dm.setup("fit")
    L.seed_everything(42)
    module = PlainModule(model, log_steps=False)
    return fit_and_test(module, dm.train_dataloader(), dm.test_dataloader(), epochs, batches, work, enable_progress_bar=False)


PATHS = {
    "a optimlight": optimlight_path,
    "b hand-written": hand_written_loop,
    "c DataLoader": dataloader_lightning,
    "d bare Lightning": bare_lightning,
}


def interleave(runs: dict, rounds: int) -> tuple[dict, dict]:
    """Run each of `runs` (name -> no-argument function) `rounds` times, rotating the order each round."""
    times, accs, names = {name: [] for name in runs}, {name: [] for name in runs}, list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            epoch_times, acc = runs[name]()
            times[name] += epoch_times
            accs[name].append(acc)
    return times, accs


def print_table(title: str, times: dict, accs: dict, baseline: str | None = None) -> dict:
    """Median seconds per epoch of each row (with the ratio to `baseline`'s), every epoch's time, mean test acc."""
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{title}")
    ratio_head = f" {'ratio':>7}" if baseline else ""
    print(f"{'path':<27} {'s/epoch (median)':>17}{ratio_head} {'all epochs (s)':<40} {'test acc':>9}")
    for name, t in times.items():
        ratio = f" {med[name] / med[baseline]:>7.2f}" if baseline else ""
        all_t = " ".join(f"{x:.2f}" for x in t)
        print(f"{name:<27} {med[name]:>17.2f}{ratio} {all_t:<40} {statistics.mean(accs[name]):>9.4f}")
    return med


def header(model: str, epochs: int, rounds: int, batches: int | None) -> str:
    per_epoch = f"{batches} batches" if batches else "full epochs"
    return (
        f"{model}: {epochs} epoch(s) x {rounds} round(s) ({per_epoch}), batch 64, AdamW lr {OPTIMIZER['lr']} "
        f"wd {OPTIMIZER['weight_decay']}, torch threads {torch.get_num_threads()}"
    )


def bench(model: str, epochs: int, rounds: int, batches: int | None, data_dir: str, work: str) -> dict:
    runs = {name: partial(path, model, epochs, batches, data_dir, work) for name, path in PATHS.items()}
    times, accs = interleave(runs, rounds)
    med = print_table(header(model, epochs, rounds, batches), times, accs)
    a, b, c, d = (med[n] for n in PATHS)
    print(
        f"ratios: a/b = {a / b:.2f}   c/a = {c / a:.2f}   d/b = {d / b:.2f} (Lightning's loop)   "
        f"a/d = {a / d:.2f} (optimlight over that)"
    )
    return {"median": med, "acc": accs, "a/b": a / b, "c/a": c / a, "d/b": d / b, "a/d": a / d}


def knobs(model: str) -> dict[str, list[str]]:
    """Each speed knob as optimlight overrides; `defaults` is the baseline."""
    threads = 1 if torch.get_num_threads() > 1 else os.cpu_count()
    table = {
        "defaults": [],
        "optimizer.foreach=true": ["optimizer.foreach=true"],
        "optimizer.fused=true": ["optimizer.fused=true"],
        "module.compile=true": ["module.compile=true"],
        "module.channels_last=true": ["module.channels_last=true"],
        "precision=bf16-mixed": ["trainer.precision=bf16-mixed"],
        "matmul_precision=high": ["speed.float32_matmul_precision=high"],
        f"speed.num_threads={threads}": [f"speed.num_threads={threads}"],
        "data.loader=dataloader": ["data.loader=dataloader"],
    }
    if model != "cnn":  # no convolutions to lay out
        del table["module.channels_last=true"]
    return table


def bench_knobs(model: str, epochs: int, rounds: int, batches: int | None, data_dir: str, work: str) -> dict:
    runs = {
        name: partial(optimlight_path, model, epochs, batches, data_dir, work, overrides)
        for name, overrides in knobs(model).items()
    }
    times, accs = interleave(runs, rounds)
    med = print_table(f"knobs, {header(model, epochs, rounds, batches)}", times, accs, baseline="defaults")
    return {"median": med, "acc": accs}


#: The population bench's optimizers, in order: K = 4 takes the first four (config options, their default settings).
POPULATION_OPTIMIZERS = ("sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta", "asgd", "radam")


def timed_multirun(overrides: list[str], work: str) -> tuple[float, list]:
    """`python train.py -m <overrides>` in this process, into a new sweep dir under `work`: its wall seconds and its
    jobs (optimlight.tools.sweep.Job). What a run changes process-wide (torch threads, W&B's state) is reset after."""
    sweep_dir, threads = tempfile.mkdtemp(dir=work), torch.get_num_threads()
    start = time.perf_counter()
    try:
        multirun(overrides, sweep_dir)
    finally:
        if "wandb" in sys.modules:  # a sweep with W&B loaded it; one without (logger=csv) needs no wandb installed
            sys.modules["wandb"].teardown()
        torch.set_num_threads(threads)
    return time.perf_counter() - start, find_jobs(sweep_dir)


def multirun_sweep(launcher, options, epochs, batches, data_dir, work) -> tuple[float, float, list[float]]:
    """`python train.py -m hydra/launcher=<launcher> optimizer=<K options>`, in this process: (a) the population
    launcher, (c) Hydra's basic launcher, which runs the K jobs one after the other."""
    overrides = [f"hydra/launcher={launcher}", f"optimizer={','.join(options)}", *run_overrides("mlp", epochs, batches, data_dir)]
    wall, jobs = timed_multirun(overrides, work)
    assert len(jobs) == len(options) and all(job.status == "completed" for job in jobs), [j.results for j in jobs]
    members = {job.results.get("population", {}).get("members") for job in jobs}
    assert members == ({len(options)} if launcher == "population" else {None}), members
    # a population's epoch times are the population's (shared by its members); runs one by one add theirs up
    training = (
        sum(jobs[0].results["epoch_times"]) if launcher == "population" else sum(sum(j.results["epoch_times"]) for j in jobs)
    )
    return wall, training, [job.metric("test/acc") for job in jobs]


def hand_written_sweep(options, epochs, batches, data_dir, work) -> tuple[float, float, list[float]]:
    """(b) K hand-written loops, one after the other, each with the option's optimizer (built by the plugin)."""
    from omegaconf import OmegaConf

    from optimlight.app.config import compose_config
    from optimlight.plugin.optimizers import build_optimizer

    start, training, accs = time.perf_counter(), 0.0, []
    for option in options:
        node = OmegaConf.to_container(compose_config([f"optimizer={option}"], work).optimizer, resolve=True)
        times, acc = hand_written_loop("mlp", epochs, batches, data_dir, work, make_optimizer=partial(build_optimizer, cfg=node))
        training += sum(times)
        accs.append(acc)
    return time.perf_counter() - start, training, accs


SWEEPS = {
    "a population": partial(multirun_sweep, "population"),
    "b hand-written": hand_written_sweep,
    "c optimlight runs": partial(multirun_sweep, "basic"),
}


def warm_up(data_dir: str, work: str) -> None:
    """Each way once, 2 optimizers x 5 batches, untimed: the process's one-time costs (imports made at the first
    `wandb.init`, such as W&B's launch module; Lightning's first fit) fall in none of the measured paths' clocks."""
    for sweep in SWEEPS.values():
        sweep(POPULATION_OPTIMIZERS[:2], 1, 5, data_dir, work)


def bench_population(k: int, epochs: int, rounds: int, batches: int | None, data_dir: str, work: str) -> dict:
    """The three ways interleaved round by round (the order rotates); medians of wall and training seconds."""
    options = POPULATION_OPTIMIZERS[:k]
    names = list(SWEEPS)
    walls, trains, accs = ({name: [] for name in names} for _ in range(3))
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, training, acc = SWEEPS[name](options, epochs, batches, data_dir, work)
            walls[name].append(wall)
            trains[name].append(training)
            accs[name].append(statistics.mean(acc))
    wall, training = ({n: statistics.median(v[n]) for n in names} for v in (walls, trains))
    per_epoch = f"{batches} batches" if batches else "full epochs"
    print(
        f"\npopulation: K={k} ({', '.join(options)}; each its config's defaults), MLP, {epochs} epoch(s) x {rounds} "
        f"round(s) ({per_epoch}), batch 64, torch threads {torch.get_num_threads()} (runs: speed.num_threads)"
    )
    print(f"{'path':<20} {'wall s (median)':>16} {'training s':>11} {'all walls (s)':<28} {'mean test acc':>13}")
    for name in names:
        all_walls = " ".join(f"{w:.1f}" for w in walls[name])
        print(f"{name:<20} {wall[name]:>16.1f} {training[name]:>11.1f} {all_walls:<28} {statistics.mean(accs[name]):>13.4f}")
    a, b, c = (wall[n] for n in names)
    ta, tb, tc = (training[n] for n in names)
    print(f"ratios, wall: a/b = {a / b:.2f}   a/c = {a / c:.2f}      training seconds: a/b = {ta / tb:.2f}   a/c = {ta / tc:.2f}")
    return {"wall": wall, "training": training, "acc": accs, "a/b": a / b, "a/c": a / c}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=None, help="training batches per epoch (default: all)")
    parser.add_argument("--knobs", action="store_true", help="optimlight's path with each speed knob, vs defaults")
    parser.add_argument("--population", action="store_true", help="a sweep of K optimizers: population vs loops vs runs")
    parser.add_argument("--members", type=int, nargs="+", default=[4, 9], help="K, the optimizers of --population")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 round, 20 batches: a smoke test")
    parser.add_argument("--data-dir", default=default_data_dir())
    args = parser.parse_args(argv)
    epochs, rounds, batches = (1, 1, 20) if args.quick else (args.epochs, args.rounds, args.batches)
    os.environ.setdefault("MPLBACKEND", "Agg")
    skip_failing_nvml_check()  # as every run does: b, a loop in a script without Lightning, would not pay it either
    with tempfile.TemporaryDirectory() as work:
        if args.population:
            warm_up(args.data_dir, work)
            return {k: bench_population(k, epochs, rounds, batches, args.data_dir, work) for k in args.members}
        run = bench_knobs if args.knobs else bench
        return {m: run(m, epochs, rounds, batches, args.data_dir, work) for m in args.models}


if __name__ == "__main__":
    main()
