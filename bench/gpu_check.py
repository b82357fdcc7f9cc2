"""One GPU check, ready before a GPU is lent: mixed precision, compile, data on the device, DDP and the population
launcher, each measured by real optimlight runs on one CUDA GPU, recorded to one JSON and printed as a table.

    python bench/gpu_check.py --data-dir data                # on a CUDA machine: under 8 minutes on one H100
    python bench/gpu_check.py --dry-run                      # anywhere: the plan, every run's config preflighted

Each step has a fixed time budget (STEPS): a timer stops a step that overruns it, and a step that fails is recorded
with its one-line error while the others go on. Runs train in this process (optimlight.tools.api), except DDP's,
which start `python train.py` (Lightning starts that command again for each further rank). Runs log to CSV only:
W&B is not what is measured, and a GPU machine without the network or wandb can run every step. Seconds per epoch
are medians over the epochs (3 epochs: the median leaves out the first one's CUDA warm-up and compilation).
The dry run composes the config of every run (of every job of a sweep) and preflights it with trainer.accelerator=cpu.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning_utilities.core import rank_zero
from speed import POPULATION_OPTIMIZERS, run_overrides, timed_multirun  # bench/speed.py, beside this script

from optimlight.app.config import compose_config
from optimlight.app.data import default_data_dir
from optimlight.app.preflight import preflight
from optimlight.app.record import read_results
from optimlight.plugin.errors import first_line
from optimlight.tools.api import train
from optimlight.tools.population_launcher import population_key, task_config, why_alone

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 480  # every step on one GPU, with the process's start
START_S = 20  # imports and CUDA's start, before the first step's clock
EPOCHS, POPULATION_EPOCHS = 3, 2
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
SCHEDULES = ("none", "cosine", "onecycle", "step")  # x the 9 POPULATION_OPTIMIZERS: the population of 36
NO_CUDA = "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); --dry-run checks the plan on a CPU"


class OverBudget(BaseException):
    """The step's timer went off. A BaseException, as KeyboardInterrupt is: no `except Exception` on the way stops it."""


class Skipped(Exception):
    """The step does not apply to this machine."""


class Check:
    """What the steps call to run (or, dry, to compose and preflight) a run, a sweep or a process; it keeps the
    records of the step in progress, so that a step stopped halfway keeps those of its finished runs."""

    def __init__(self, data_dir: str, work: Path, dry: bool):
        self.data_dir, self.work, self.dry = data_dir, work, dry
        self.gpus = 2 if dry else torch.cuda.device_count()  # dry: plan the all-GPU step as for two
        self.records: dict[str, dict] = {}

    def base(self, model: str, epochs: int = EPOCHS) -> list[str]:
        return run_overrides(model, epochs, None, self.data_dir, accelerator="gpu", logging=("logger=csv",))

    def train(self, label: str, overrides: list[str]) -> None:
        """One run in this process."""
        command = f"python train.py {' '.join(overrides)}"
        if self.dry:
            return self.preflight(label, command, [overrides])
        run_dir, start = Path(tempfile.mkdtemp(dir=self.work)), time.perf_counter()
        try:
            train(overrides, run_dir)
        except Exception:  # results.json has the error, unless the config did not compose
            if not read_results(run_dir):
                raise
        self.record(label, command, [read_results(run_dir)], time.perf_counter() - start)

    def process(self, label: str, overrides: list[str]) -> None:
        """`python train.py <overrides>` in a process of its own, stopped (with its ranks) by the step's timer."""
        command = f"python train.py {' '.join(overrides)}"
        if self.dry:
            return self.preflight(label, command, [overrides])
        run_dir, start = Path(tempfile.mkdtemp(dir=self.work)), time.perf_counter()
        argv = [sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output = proc.communicate()[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        results = read_results(run_dir) or {"status": "failed", "error": (output.strip().splitlines() or ["no output"])[-1]}
        self.record(label, command, [results], time.perf_counter() - start)

    def multirun(self, label: str, overrides: list[str]) -> None:
        """`python train.py -m <overrides>` in this process."""
        command = f"python train.py -m {' '.join(overrides)}"
        if self.dry:
            jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
            return self.preflight(label, command, jobs, population="hydra/launcher=population" in overrides)
        wall, jobs = timed_multirun(overrides, str(self.work))
        self.record(label, command, [job.results for job in jobs], wall)
        choices = [" ".join(f"{g}={job.results['choices'][g]}" for g in ("optimizer", "scheduler")) for job in jobs]
        self.records[label]["test_acc_by_job"] = dict(zip(choices, [job.metric("test/acc") for job in jobs]))

    def record(self, label: str, command: str, results: list[dict], wall: float) -> None:
        """The run's (or the sweep's jobs') status, median s/epoch, first epoch, mean test accuracy and wall seconds."""
        failed = [r for r in results if r.get("status") != "completed"]
        epochs = [t for r in results for t in r.get("epoch_times", [])]
        accs = [r["metrics"]["test/acc"] for r in results if r.get("metrics", {}).get("test/acc") is not None]
        rec: dict = {"status": "failed" if failed or not results else "completed", "command": command}
        rec.update(wall_s=round(wall, 1), jobs=len(results))
        if failed:
            rec["error"] = failed[0].get("error") or "no results.json"
        if epochs:
            rec.update(s_per_epoch=round(statistics.median(epochs), 3), epoch_times=[r.get("epoch_times") for r in results])
            rec["first_epoch_s"] = round(statistics.median(r["epoch_times"][0] for r in results if r.get("epoch_times")), 3)
        if accs:
            rec["test_acc"] = round(statistics.mean(accs), 4)
        members = {r["population"]["members"] for r in results if "population" in r}
        if members:
            rec["members"] = sorted(members)
        self.records[label] = rec

    def preflight(self, label: str, command: str, jobs: list[list[str]], population: bool = False) -> None:
        """Dry run: each job's config composed and preflighted on the CPU; a population's jobs must make one."""
        errors, keys = [], set()
        for job in jobs:
            try:
                cfg = compose_config([*job, "trainer.accelerator=cpu"], self.work / "dry")
                preflight(cfg)
                if population:
                    if reason := why_alone(cfg):
                        raise ValueError(f"would run alone: {reason}")
                    keys.add(population_key(task_config(cfg)))
            except Exception as exc:
                errors.append(f"{' '.join(job)}: {first_line(exc)}")
        if population and len(keys) > 1:
            errors.append(f"{len(keys)} populations, not one")
        rec = {"status": "failed" if errors else "preflighted", "command": command, "jobs": len(jobs)}
        self.records[label] = {**rec, **({"error": errors[0]} if errors else {})}


# --- the steps: each one function, its runs through the Check --------------------------------------------------------
def precision(check: Check) -> dict:
    for model in ("mlp", "cnn"):
        for value in PRECISIONS:
            check.train(f"{model} {value}", [*check.base(model), f"trainer.precision={value}"])
    return {}


def compile_step(check: Check) -> dict:
    """The MLP (the seed's network) compiled; compare with the precision step's `mlp 32-true`."""
    check.train("mlp compile", [*check.base("mlp"), "module.compile=true"])
    return {}


def data_on_device(check: Check) -> dict:
    """`data.loader=tensor` (the default) keeps the data set on the GPU the module trains on; `dataloader` decodes
    images in worker processes into pinned host memory and copies each batch."""
    check.train("mlp loader=tensor", [*check.base("mlp"), "data.loader=tensor"])
    dataloader = ["data.loader=dataloader", "data.num_workers=4", "data.pin_memory=true"]
    check.train("mlp loader=dataloader, 4 workers", [*check.base("mlp"), *dataloader])
    return {} if check.dry else {"tensor_loader_device": tensor_device(check)}


def tensor_device(check: Check) -> str:
    """Where loader=tensor puts the training images when a Trainer on the GPU drives it."""
    datamodule = instantiate(compose_config(check.base("mlp"), check.work / "device").data)
    datamodule.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, enable_progress_bar=False)
    datamodule.setup("fit")
    return str(datamodule.tensors("train")[0].device)


def ddp_one(check: Check) -> dict:
    check.process("mlp ddp, 1 GPU", ["trainer=ddp", *check.base("mlp"), "trainer.devices=1"])
    return {}


def ddp_all(check: Check) -> dict:
    if check.gpus < 2:
        raise Skipped("one GPU: the step above is DDP on all of them")
    check.process(f"mlp ddp, {check.gpus} GPUs", ["trainer=ddp", *check.base("mlp"), f"trainer.devices={check.gpus}"])
    return {}


def population(check: Check) -> dict:
    """9 optimizers x 4 schedules of the MLP as one population, against a sample of them run one by one."""
    base, n = check.base("mlp", POPULATION_EPOCHS), len(POPULATION_OPTIMIZERS) * len(SCHEDULES)
    optimizers, schedules = POPULATION_OPTIMIZERS[::3], SCHEDULES[::2]  # the sample: 3 x 2, spread over the grid
    grid = [f"optimizer={','.join(POPULATION_OPTIMIZERS)}", f"scheduler={','.join(SCHEDULES)}"]
    sample = [f"optimizer={','.join(optimizers)}", f"scheduler={','.join(schedules)}"]
    check.multirun(f"population of {n}", ["hydra/launcher=population", f"hydra.launcher.max_members={n}", *grid, *base])
    check.multirun(f"one by one, {len(optimizers) * len(schedules)} of {n}", ["hydra/launcher=basic", *sample, *base])
    together, alone = check.records.values()
    if check.dry or together["status"] != "completed" or alone["status"] != "completed":
        return {}
    one_by_one = alone["wall_s"] * n / alone["jobs"]  # the sample's wall, scaled to all n
    pairs = [(together["test_acc_by_job"][job], acc) for job, acc in alone["test_acc_by_job"].items()]
    return {
        "one_by_one_36_s": round(one_by_one, 1),
        "population_over_one_by_one": round(together["wall_s"] / one_by_one, 3),
        "largest_test_acc_gap": round(max(abs(a - b) for a, b in pairs), 4),  # a member against the same run alone
    }


#: name: (step, time budget in seconds on one H100). On one GPU the budgets and START_S stay within LIMIT_S.
STEPS: dict[str, tuple[Callable[[Check], dict], int]] = {
    "precision": (precision, 120),  # 6 runs x (3 epochs of ~3-4 s + ~5 s to build, test and save)
    "compile": (compile_step, 75),  # compiling for training, evaluation and the epoch's last, smaller batch
    "data on device": (data_on_device, 55),
    "ddp, 1 GPU": (ddp_one, 50),  # a new process: ~10 s of imports and NCCL's start
    "population": (population, 150),  # 36 members x 2 epochs, then 6 runs one by one
    "ddp, all GPUs": (ddp_all, 70),  # with more than one GPU only
}
ONE_GPU_STEPS = [name for name in STEPS if name != "ddp, all GPUs"]


def over_budget(signum, frame) -> None:
    raise OverBudget("the step ran over its time budget")


def run_step(check: Check, name: str) -> dict:
    step, budget = STEPS[name]
    check.records, start, extras = {}, time.perf_counter(), {}
    status, error = "preflighted" if check.dry else "completed", None
    if not check.dry:
        signal.signal(signal.SIGALRM, over_budget)
        signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        extras = step(check)
    except Skipped as why:
        status, error = "skipped", str(why)
    except (Exception, OverBudget) as exc:
        status, error = "failed", first_line(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    failed = [f"{label}: {r['error']}" for label, r in check.records.items() if r["status"] == "failed"]
    if failed and status != "failed":
        status, error = "failed", failed[0]
    rec = {"status": status, "budget_s": budget, "wall_s": round(time.perf_counter() - start, 1), "runs": check.records}
    return {**rec, **({"error": error} if error else {}), **extras}


def print_table(report: dict) -> None:
    print(f"\n{report['mode']} on {report['device']}: {report['date']}")
    print(f"{'step':<16} {'run':<34} {'status':<12} {'s/epoch':>8} {'first':>7} {'test acc':>9} {'wall s':>7}")
    for name, step in report["steps"].items():
        for label, rec in step["runs"].items():
            numbers = [f"{rec[k]:.2f}" if k in rec else "" for k in ("s_per_epoch", "first_epoch_s")]
            acc, wall = (f"{rec['test_acc']:.4f}" if "test_acc" in rec else ""), str(rec.get("wall_s", ""))
            print(f"{name:<16} {label:<34} {rec['status']:<12} {numbers[0]:>8} {numbers[1]:>7} {acc:>9} {wall:>7}")
            if report["mode"] == "dry-run":
                print(f"{'':<16}   {rec['command']}")
        extras = {k: v for k, v in step.items() if k not in ("status", "budget_s", "wall_s", "runs", "error")}
        if extras:
            print(f"{name:<16} {'  '.join(f'{k}: {v}' for k, v in extras.items())}")
        if step["status"] in ("failed", "skipped"):
            print(f"{name:<16} {step['status']} after {step['wall_s']} s of {step['budget_s']}: {step['error']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="Fashion-MNIST's folder (a folder in the repo)")
    parser.add_argument("--out", help="the JSON (default: outputs/gpu_check/<date>.json)")
    parser.add_argument("--dry-run", action="store_true", help="compose and preflight every run on the CPU; train nothing")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    start, date = time.perf_counter(), datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or f"outputs/gpu_check/{date}{'_dry' if args.dry_run else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    device = "cpu (dry run)" if args.dry_run else f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    report = {"mode": "dry-run" if args.dry_run else "run", "date": date, "device": device, "steps": {}}
    report.update(torch=torch.__version__, lightning=L.__version__, limit_s=LIMIT_S)
    if args.dry_run:  # the thousand lines of Lightning's "GPU available: False" that building each Trainer prints
        rank_zero.log.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as work:
        check = Check(str(Path(args.data_dir).resolve()), Path(work), args.dry_run)
        for name in STEPS:
            print(f"gpu_check: {name} ...", flush=True)
            report["steps"][name] = run_step(check, name)
            report["wall_s"] = round(time.perf_counter() - start, 1)
            out.write_text(json.dumps(report, indent=2) + "\n")  # after each step: a killed check keeps what it did
    print_table(report)
    print(f"\n{out}")
    return 0 if all(step["status"] in ("completed", "preflighted", "skipped") for step in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
