"""One study in the database: opened with the command that made it, a trial budget several workers respect, a
trial told from its run record, heartbeats while trials train.

The budget counts trials that finished (complete, pruned, or failed with a record: a diverged run is a result) and
those running or queued anywhere. A trial failed because its worker went silent (stale heartbeat) does not count:
its retry, queued with the same values, does."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from optimlight.plugin.errors import ConfigError
from optimlight.tools.tuning.space import Dimension


@dataclass
class Study:
    """One study of the sweep: its label (`optimizer=sgd`), the overrides that make its configuration, its
    composed config (no trial values yet) and the dimensions it searches."""

    label: str
    overrides: list[str]
    cfg: DictConfig
    dims: list[Dimension]
    study: optuna.Study

    @property
    def folder(self) -> str:
        """Its runs' folder under search/ and final/: `optimizer=sgd`, `optimizer=sgd,scheduler=cosine`."""
        return self.label.replace(" ", ",")


#: The selection metric each trial's value is (validation; never test).
OBJECTIVE = "val/acc_best"
ERROR, SURPLUS, OVERRIDES = "error", "surplus", "overrides"


def counts(trial: FrozenTrial) -> bool:
    """Whether `trial` takes a place in the study's budget."""
    if trial.state == TrialState.FAIL:
        return ERROR in trial.user_attrs
    return True


def open_study(
    name: str,
    storage: RDBStorage,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    overrides: Sequence[str],
) -> optuna.Study:
    """Create the study, or load it when it exists, refusing one made by a command with other overrides: a resumed
    study must go on with the same configuration, or its trials would not be comparable."""
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )
    made_with = study.user_attrs.get(OVERRIDES)
    if made_with is None:
        study.set_user_attr(OVERRIDES, sorted(overrides))
    elif made_with != sorted(overrides):
        raise ConfigError(
            "hydra.sweeper.study_name",
            name.split("/", 1)[0],
            f"a name no other command used: study {name!r} was made with overrides {made_with}, not {sorted(overrides)}",
        )
    return study


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating; their retries are queued (RetryHeartbeatStaleTrialCallback)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def ask_within_budget(study: optuna.Study, budget: int) -> optuna.Trial | None:
    """A queued trial (the retry of a killed one, whose place it holds), else a new one while the budget has room;
    None when it is spent. Workers asking at once may both get one for the last place: the later-numbered is told
    failed as surplus before it trains."""
    trials = study.get_trials(deepcopy=False)
    queued = any(t.state == TrialState.WAITING for t in trials)
    if not queued and sum(counts(t) for t in trials) >= budget:
        return None
    with warnings.catch_warnings():  # heartbeats are recorded by `heartbeats`, not by Study.optimize
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()
    before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
    if len(before) >= budget:
        trial.set_user_attr(SURPLUS, True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def settle_ended(study: optuna.Study, record_of: Callable[[int], dict]) -> None:
    """Tell the study about trials still RUNNING in it whose run ended with a record (`record_of(number)`, {} when
    there is none): their worker was killed between the run's end and telling the study, and a retry would train
    them again. Another worker telling first is no harm."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = record_of(trial.number)
        if record.get("status") in ("completed", "pruned", "failed"):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                tell_from_record(study, optuna.Trial(study, trial._trial_id), record, None)


def pending(study: optuna.Study) -> int:
    """Trials running or queued in any worker."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))


def tell_from_record(study: optuna.Study, trial: optuna.Trial, record: dict, error: str | None) -> None:
    """Tell the study how the trial's run ended, from its results.json: its validation value, pruned (at its last
    reported epoch), or failed with the reason (counted: the configuration ran and failed)."""
    status = record.get("status")
    value = (record.get("metrics") or {}).get(OBJECTIVE)
    if status == "completed" and value is not None:
        study.tell(trial, value)
    elif status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr(ERROR, record.get("error") or error or f"the run ended {status or 'without a record'}")
        study.tell(trial, state=TrialState.FAIL)


@contextmanager
def heartbeats(storage: RDBStorage, trial_ids: Sequence[int]) -> Iterator[None]:
    """Beat for `trial_ids` while their jobs run (in this process or a launcher's workers, which this one waits on):
    when this worker dies, the beats stop and the trials go stale."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)
            stop.wait(storage.get_heartbeat_interval() or 60)

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
