"""`speed.num_threads: auto`: torch threads for one process, from the work of one training step and from how many
processes share the cores.

A second thread only pays when each op has enough arithmetic to split: on the seed MLP (batch 64) one thread is
faster than two even on an idle machine, and the CNN is faster with two. More threads than cores over all
processes is far worse than too few (two processes with one thread per core each ran 8x slower), so the cores are
divided among the processes first. `bench/threads.py` measures the thresholds (README "Speed").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from optimlight.app.models import IMAGE_SHAPE

#: Forward FLOPs of one training step that keep one more thread busy: a process gets one thread per this much work
#: (at least one). Measured on a 2-core VM: below it two threads were no faster than one (logreg, the seed MLP,
#: DeepOBS's MLP at batch 64), above twice it they were 20-35% faster (the CNN, DeepOBS's 2c2d, a wide MLP's
#: big batches); README "Speed" has the table.
FLOPS_PER_THREAD = 2e8
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


def auto_threads(work_per_step: float, jobs: int = 1, cores: int | None = None) -> int:
    """Threads for one of `jobs` processes sharing `cores` (default: `usable_cores()`), training steps of
    `work_per_step` forward FLOPs: one per `FLOPS_PER_THREAD`, at least 1, at most the process's share of the cores
    (`cores // jobs`) and at most OMP_NUM_THREADS when set. So jobs x threads <= cores whenever jobs <= cores.

    A caller that trains several models as one batched model in one process passes the batched model's work."""
    if jobs < 1:
        raise ValueError(f"jobs must be a positive number of processes, got {jobs}")
    share = max(1, (usable_cores() if cores is None else cores) // jobs)
    wanted = max(1, int(work_per_step // FLOPS_PER_THREAD))
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
