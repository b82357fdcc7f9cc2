"""The Hydra plugin of `hydra/launcher=population` (Hydra finds launchers in the `hydra_plugins` package only);
the work is `optimlight.tools.population_launcher`'s, imported when a sweep uses it."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PopulationLauncher(Launcher):
    """Trains the sweep's jobs that share a network as vectorized populations of up to `max_members`."""

    def __init__(self, max_members: int = 9) -> None:
        from optimlight.tools.population_launcher import PopulationLauncher as Work

        self.work = Work(max_members)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.work.setup(hydra_context, task_function, config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.work.launch(job_overrides, initial_job_idx)
