"""Seconds per epoch of optimlight's run at each torch thread count, per model size: the measurements behind
`speed.num_threads: auto` (optimlight/app/threads.py), and a run's epochs alone against beside a second busy run.

Each case is one model and batch size; its rows are `speed.num_threads=1, 2, ...` (up to the usable cores),
interleaved round by round (the machine is noisy), medians compared; `others` is the most cores that other
processes kept busy during a case's runs (from /proc/stat: Linux only), so a disturbed measurement shows.
`--beside` trains a case with the default `auto` alone, then while a second `python train.py` (its overrides,
defaults else) trains, round by round.

    python bench/threads.py --wait-idle                  # every case, 1 .. usable cores threads
    python bench/threads.py --cases mlp cnn --rounds 3
    python bench/threads.py --beside model=mlp --cases mlp   # the MLP alone vs beside a second MLP run
    python bench/threads.py --quick                      # a smoke run: few batches (what the tests run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from hydra.utils import instantiate

from optimlight.app.data import default_data_dir
from optimlight.app.threads import auto_threads, others_cpu_seconds, step_flops, usable_cores
from optimlight.tools.api import compose_config, train

#: A case: its overrides, and its training batches per epoch (None: full epochs).
Case = tuple[list[str], int | None]
#: The cases, in order of work per step.
CASES: dict[str, Case] = {
    "logreg": (["model=logreg"], None),
    "mlp": ([], None),
    "cnn 8-16": (["model=cnn", "model.channels=[8,16]"], 400),
    "cnn b16": (["model=cnn", "data.batch_size=16"], 400),
    "mlp b256": (["data.batch_size=256"], None),
    "deepobs_mlp": (["model=deepobs_mlp"], 400),
    "mlp 1024-1024": (["model.hidden=[1024,1024]"], 400),
    "mlp b1024": (["data.batch_size=1024"], None),
    "cnn": (["model=cnn"], 200),
    "deepobs_2c2d": (["model=deepobs_2c2d"], 60),
}


def wait_idle(pids: Sequence[int] = (), limit: float = 0.1, window: float = 3.0, timeout: float = 600.0) -> None:
    """Until other processes use less than `limit` cores over `window` seconds (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = others_cpu_seconds(pids)
        time.sleep(window)
        if (others_cpu_seconds(pids) - before) / window < limit:
            return


def run_epochs(case: Case, knob: Sequence[str], epochs: int, data_dir: str, work: str, pids: Sequence[int] = ()):
    """Training seconds of each epoch of one optimlight run (no logger, CPU), and the cores other processes than
    this one and `pids` kept busy meanwhile; torch's thread count is restored after."""
    overrides, batches = case
    fixed = [
        *([f"trainer.limit_train_batches={batches}"] if batches else []),
        f"data.data_dir={data_dir}",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=20",
        "trainer.limit_test_batches=20",
        "logger=none",
    ]
    threads, others, start = torch.get_num_threads(), others_cpu_seconds(pids), time.perf_counter()
    try:
        times = train([*fixed, *overrides, *knob], run_dir=tempfile.mkdtemp(dir=work))["epoch_times"]
    finally:
        torch.set_num_threads(threads)
    return times, (others_cpu_seconds(pids) - others) / (time.perf_counter() - start)


def size(overrides: Sequence[str], work: str) -> tuple[int, float]:
    """(parameters, forward FLOPs of one training step) of a case's model."""
    cfg = compose_config(list(overrides), work)
    with torch.device("meta"):
        params = sum(p.numel() for p in instantiate(cfg.model).parameters())
    return params, step_flops(cfg.model, cfg.data.batch_size)


def undisturbed(run: Callable, idle: bool, limit: float = 0.1, tries: int = 5) -> tuple[list[float], float]:
    """`run()` (epoch seconds, others' load); when `idle`, started once the machine is idle and run again (up to
    `tries` times) while other processes kept more than `limit` cores busy meanwhile."""
    for _ in range(tries if idle else 1):
        if idle:
            wait_idle(limit=limit)
        times, others = run()
        if others < limit:
            break
    return times, others


def interleave(runs: dict, rounds: int, idle: bool) -> tuple[dict[str, list[float]], float]:
    """Each of `runs` (name -> no-argument function returning epoch seconds and others' load) `rounds` times, the
    order rotating (see `undisturbed` for `idle`); the epoch seconds by name, and others' highest load."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names, load = list(runs), 0.0
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            epoch_times, others = undisturbed(runs[name], idle)
            times[name] += epoch_times
            load = max(load, others)
    return times, load


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to the usable cores, and the cores themselves."""
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return counts if counts[-1] == cores else [*counts, cores]


def bench_threads(cases: dict[str, Case], epochs: int, rounds: int, idle: bool, data_dir: str, work: str) -> dict:
    """Per case: median s/epoch at each thread count, its ratio to 1 thread's, and the count auto picks here."""
    counts, out = thread_counts(usable_cores()), {}
    print(f"{'case':<15} {'params':>10} {'MFLOP/step':>11} " + " ".join(f"{f'{n}/1 thr':>7}" for n in counts[1:]), end="")
    print(f"  {'s/epoch (1 thr)':>15}  auto  others  all epochs (s)")
    for name, case in cases.items():
        params, flops = size(case[0], work)
        runs = {n: partial(run_epochs, case, [f"speed.num_threads={n}"], epochs, data_dir, work) for n in counts}
        times, load = interleave(runs, rounds, idle)
        med = {n: statistics.median(t) for n, t in times.items()}
        auto = auto_threads(flops)
        ratios = " ".join(f"{med[n] / med[1]:>7.2f}" for n in counts[1:])
        every = " | ".join(" ".join(f"{x:.2f}" for x in t) for t in times.values())
        print(f"{name:<15} {params:>10,} {flops / 1e6:>11.1f} {ratios}  {med[1]:>15.2f}  {auto:>4}  {load:>6.2f}  {every}")
        out[name] = {"params": params, "flops": flops, "median": med, "auto": auto, "others": load}
    return out


def start_beside(overrides: Sequence[str], data_dir: str, work: str) -> subprocess.Popen:
    """A second `python train.py` with `overrides` (no epoch limit), returned once its first epoch has finished."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "optimlight.cli", f"data.data_dir={data_dir}", "logger=none"]
    cmd += ["trainer.max_epochs=-1", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "train.log"
    while proc.poll() is None and not (log.exists() and "epoch 1:" in log.read_text()):  # epochs count from 1
        time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"the second run stopped (exit {proc.returncode}); see {log}")
    return proc


def shared(case: Case, others: Sequence[str], epochs: int, data_dir: str, work: str):
    """Epoch seconds of `case` (auto threads) while a second run with `others` trains, and the load of the rest."""
    proc = start_beside(others, data_dir, work)
    try:
        return run_epochs(case, (), epochs, data_dir, work, pids=[proc.pid])
    finally:
        proc.terminate()
        proc.wait()


def bench_beside(
    cases: dict[str, Case], others: Sequence[str], epochs: int, rounds: int, idle: bool, data_dir: str, work: str
) -> dict:
    """Per case: median s/epoch alone and beside the second run, with auto threads in both; their ratio."""
    out = {}
    for name, case in cases.items():
        runs = {
            "alone": partial(run_epochs, case, (), epochs, data_dir, work),
            "beside": partial(shared, case, others, epochs, data_dir, work),
        }
        times, load = interleave(runs, rounds, idle)
        med = {name: statistics.median(t) for name, t in times.items()}
        ratio = med["beside"] / med["alone"]
        print(f"{name}: alone {med['alone']:.2f} s/epoch, beside `train.py {' '.join(others)}` {med['beside']:.2f}")
        print(f"  ratio {ratio:.2f}; others' load up to {load:.2f} cores; alone {times['alone']}, beside {times['beside']}")
        out[name] = {"median": med, "ratio": ratio, "others": load}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--beside", nargs="*", metavar="OVERRIDE", help="a second run's train.py overrides")
    parser.add_argument(
        "--wait-idle", action="store_true", help="start each run once other processes are idle, rerun one they disturbed"
    )
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 round, 10 batches a case: a smoke test")
    parser.add_argument("--data-dir", default=default_data_dir())
    args = parser.parse_args(argv)
    cases = {name: (CASES[name][0], 10 if args.quick else CASES[name][1]) for name in args.cases}
    epochs, rounds = (1, 1) if args.quick else (args.epochs, args.rounds)
    os.environ.setdefault("MPLBACKEND", "Agg")
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS {omp}")
    with tempfile.TemporaryDirectory() as work:
        if args.beside is not None:
            return bench_beside(cases, args.beside, epochs, rounds, args.wait_idle, args.data_dir, work)
        return bench_threads(cases, epochs, rounds, args.wait_idle, args.data_dir, work)


if __name__ == "__main__":
    main()
