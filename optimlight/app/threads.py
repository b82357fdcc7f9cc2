"""`speed.num_threads: auto`: torch threads for one process, from the work of one training step, the cores it may
use and the processes it shares them with.

A second thread pays only when each op has enough arithmetic to split, and a thread more than there are free cores
costs far more than it saves (the seed MLP gains a little from a second thread on an idle machine and loses many
times that beside a busy process). So a process gets one thread, and one more per
`FLOPS_PER_THREAD` of forward work a step, within its share of the cores that are free when it starts: the usable
cores, less those other processes keep busy, divided among the launcher's parallel jobs and DDP's processes.
`bench/threads.py` measures the threshold; docs/explanation/benchmarks.md ("Threads") has the dated figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from optimlight.app.models import IMAGE_SHAPE

#: Forward FLOPs of one training step per thread beyond the first: the smallest step bench/threads.py found faster
#: with two threads than with one (docs/explanation/benchmarks.md, "Threads"). The seed MLP stays below it at one
#: thread: its small gain from a second thread is not worth the loss when a process starts beside it later.
FLOPS_PER_THREAD = 4e7
#: Hydra's joblib launcher, whose `n_jobs` jobs run at once, each in its own process.
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (taskset, cgroup cpusets), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def omp_limit() -> int | None:
    """OMP_NUM_THREADS when set to a positive integer (by the user, or by joblib and Lightning for their workers)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def others_cpu_seconds(pids: Sequence[int] = ()) -> float | None:
    """CPU seconds the machine has been busy, less this process's own and `pids`': what everyone else used. None
    where /proc/stat is missing (not Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split()[1:8]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields)
    theirs = 0.0
    for pid in pids:  # utime and stime: fields 14 and 15, after the parenthesized command name
        theirs += sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])) / ticks
    return (user + nice + system + irq + softirq) / ticks - sum(os.times()[:2]) - theirs


def busy_cores(window: float = 0.25) -> float:
    """Cores other processes keep busy, over `window` seconds (0 where it cannot be read)."""
    before = others_cpu_seconds()
    if before is None:
        return 0.0
    time.sleep(window)
    after = others_cpu_seconds()
    return max(0.0, (after - before) / window) if after is not None else 0.0


def auto_threads(work_per_step: float, jobs: int = 1, cores: int | None = None, busy: float = 0.0) -> int:
    """Threads for one of `jobs` processes sharing `cores` (default: `usable_cores()`), of which other processes
    keep `busy` busy, training steps of `work_per_step` forward FLOPs: one, and one more per `FLOPS_PER_THREAD`, at
    most the process's share of the free cores (`(cores - busy) // jobs`, busy rounded) and at most
    OMP_NUM_THREADS when set. So jobs x threads <= cores whenever jobs <= cores.

    A caller that trains several models as one batched model in one process passes the batched model's work."""
    if jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs}")
    free = (usable_cores() if cores is None else cores) - round(busy)
    share = max(1, free // jobs)
    wanted = 1 + int(work_per_step // FLOPS_PER_THREAD)
    return min(wanted, share, omp_limit() or share)


def step_flops(model: Mapping, batch_size: int) -> float:
    """Forward FLOPs of one training step of the `model` config node: built on the meta device (no memory, no
    random numbers drawn) and counted by torch's FLOP counter on one image, times the batch size."""
    with torch.device("meta"):
        net = instantiate(model)
        with FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, *IMAGE_SHAPE))
    return float(counter.get_total_flops() * batch_size)


def launcher_jobs(launcher: Mapping | None, cores: int | None = None) -> int:
    """Jobs the Hydra launcher runs at once on this machine: joblib's `n_jobs` (a negative one read as joblib
    does: -1 all cores, -2 all but one), else 1 (the basic launcher runs one job at a time)."""
    if not launcher or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return 1
    n_jobs = launcher.get("n_jobs") or 1
    return n_jobs if n_jobs > 0 else max(1, (usable_cores() if cores is None else cores) + 1 + n_jobs)
