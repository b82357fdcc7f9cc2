"""The search strategy by name: how a study proposes a trial's values (sampler) and stops hopeless trials (pruner).

The sweeper builds both for its studies, and each trial's pruning callback builds the same pruner in the job's own
process (a study loaded from storage keeps no pruner)."""

from __future__ import annotations

from collections.abc import Callable

import optuna

from optimlight.plugin.errors import ConfigError

SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    # quasi-random (scrambled Sobol): even coverage of the space, the tuning playbook's choice for a fair budget
    "qmc": lambda seed: optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, warn_independent_sampling=False),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
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


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler", name, f"one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed)


def make_pruner(name: str, min_epochs: int, reduction_factor: int) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner", name, f"one of {', '.join(PRUNERS)}")
    if not (isinstance(min_epochs, int) and min_epochs >= 1):
        raise ConfigError("hydra.sweeper.min_epochs", min_epochs, "a whole number of epochs >= 1")
    if not (isinstance(reduction_factor, int) and reduction_factor >= 2):
        raise ConfigError("hydra.sweeper.reduction_factor", reduction_factor, "a whole number >= 2")
    return PRUNERS[name](min_epochs, reduction_factor)
