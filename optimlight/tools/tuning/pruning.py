"""The Lightning callback that makes a run a pruned Optuna trial (what optuna-integration's Lightning callback does,
but ending the run cleanly, so a pruned trial still leaves its run dir, checkpoints and record).

The tuning sweeper names the trial in the job's environment (`trial_environment`); a run outside a study, a final
seed say, reports nothing. A population (hydra/launcher=population) trains its members outside Lightning's loop and
makes the same decision for each through `stops_trial`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from typing_extensions import override

from optimlight.app.callbacks import StopsRun
from optimlight.tools.tuning.strategies import make_pruner
from optimlight.tools.tuning.studies import OBJECTIVE

log = logging.getLogger(__name__)
STORAGE, STUDY, TRIAL_ID = "OPTIMLIGHT_TUNE_STORAGE", "OPTIMLIGHT_TUNE_STUDY", "OPTIMLIGHT_TUNE_TRIAL_ID"


def trial_environment(storage: str, study: str, trial_id: int) -> dict[str, str]:
    """The variables a trial's job gets (Hydra's `hydra.job.env_set`), naming its study and trial."""
    return {STORAGE: storage, STUDY: study, TRIAL_ID: str(trial_id)}


def trial_from_environment(env: Mapping[str, str] | None = None) -> optuna.Trial | None:
    """The trial the run is, by the job's variables (`env`: this process's by default), with the sweeper's pruner;
    None outside a tuning sweep."""
    env = os.environ if env is None else env
    if TRIAL_ID not in env:
        return None
    sweeper = HydraConfig.get().sweeper
    pruner = make_pruner(sweeper.pruner, sweeper.min_epochs, sweeper.reduction_factor)
    study = optuna.load_study(study_name=env[STUDY], storage=env[STORAGE], pruner=pruner)
    return optuna.Trial(study, int(env[TRIAL_ID]))


def stops_trial(trial: optuna.Trial, monitor: str, value: float, epoch: int, max_epochs: int) -> bool:
    """Report `value` of `monitor` after `epoch` (counted from 1) to the trial; True when its study's pruner stops
    it. A trial that went its length is complete, never pruned."""
    trial.report(value, epoch)
    prune = epoch < max_epochs and trial.should_prune()
    if prune:
        log.info("pruned at epoch %d: %s %.4f is behind the study's other trials", epoch, monitor, value)
    return prune


class TrialPruning(StopsRun):
    """After each validation epoch, reports `monitor` to the run's trial (step = the epoch, counted from 1); stops
    the run with status `pruned` when the study's pruner says the trial cannot catch up, before its last epoch.
    The default is what the sweeper selects on, OBJECTIVE (the best val/acc so far): a one-epoch dip in `val/acc`
    does not stop a trial that selection would keep."""

    def __init__(self, monitor: str = OBJECTIVE) -> None:
        self.monitor = monitor
        self.trial: optuna.Trial | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            self.trial = trial_from_environment()

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise KeyError(f"TrialPruning: the run logs no {self.monitor!r} (callbacks.tune_pruning.monitor)")
            prune = stops_trial(self.trial, self.monitor, float(value), trainer.current_epoch + 1, trainer.max_epochs or 0)
        if trainer.strategy.reduce_boolean_decision(prune, all=False):  # every rank stops with rank 0
            self.stop_status = "pruned"
            trainer.should_stop = True
