"""The search strategy by name: how a study proposes a trial's values (sampler) and stops hopeless trials (pruner).

The sweeper builds both for its studies, and each trial's pruning callback builds the same pruner in the job's own
process (a study loaded from storage keeps no pruner)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna
from typing_extensions import override

from optimlight.plugin.errors import ConfigError
from optimlight.tools.tuning.space import Dimension, grid_points


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler in ask-and-tell studies: the sweeper's budget (the grid's size) ends a study, because
    Optuna's sampler stops it through `study.stop()` after the last point, which raises outside `study.optimize`."""

    @override
    def after_trial(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState, values: Sequence[float] | None
    ) -> None:
        pass


SAMPLERS: dict[str, Callable[[int | None, Sequence[Dimension], int], optuna.samplers.BaseSampler]] = {
    # quasi-random (scrambled Sobol): even coverage of the space, the tuning playbook's choice for a fair budget
    "qmc": lambda seed, dims, n: optuna.samplers.QMCSampler(
        qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False
    ),
    "tpe": lambda seed, dims, n: optuna.samplers.TPESampler(seed=seed, multivariate=True, warn_independent_sampling=False),
    "random": lambda seed, dims, n: optuna.samplers.RandomSampler(seed=seed),
    # every point of an even grid, in a seeded random order (a pruner compares a trial with those before it)
    "grid": lambda seed, dims, n: GridSampler(grid_points(dims, n), seed=seed),
}
PRUNERS: dict[str, Callable[[int, int], optuna.pruners.BasePruner]] = {
    # asynchronous successive halving: a trial goes on past epoch min_epochs * rf^k only in the top 1/rf there
    "successive_halving": lambda min_epochs, rf: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_epochs, reduction_factor=rf
    ),
    "hyperband": lambda min_epochs, rf: optuna.pruners.HyperbandPruner(min_resource=min_epochs, reduction_factor=rf),
    "median": lambda min_epochs, rf: optuna.pruners.MedianPruner(n_startup_trials=rf, n_warmup_steps=min_epochs),
    "none": lambda min_epochs, rf: optuna.pruners.NopPruner(),
}


def make_sampler(name: str, seed: int | None, dims: Sequence[Dimension], n_trials: int) -> optuna.samplers.BaseSampler:
    """The study's sampler over `dims` (the grid takes its points from them and the budget `n_trials`)."""
    if name not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler", name, f"one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed, dims, n_trials)


def make_pruner(name: str, min_epochs: int, reduction_factor: int) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner", name, f"one of {', '.join(PRUNERS)}")
    if not (isinstance(min_epochs, int) and min_epochs >= 1):
        raise ConfigError("hydra.sweeper.min_epochs", min_epochs, "a whole number of epochs >= 1")
    if not (isinstance(reduction_factor, int) and reduction_factor >= 2):
        raise ConfigError("hydra.sweeper.reduction_factor", reduction_factor, "a whole number >= 2")
    return PRUNERS[name](min_epochs, reduction_factor)
