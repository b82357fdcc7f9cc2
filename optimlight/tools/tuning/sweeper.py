"""The tuning sweep (`hydra/sweeper=tune`, through an `hparams_search` preset):

    python train.py -m hparams_search=tune optimizer=sgd,adam,adamw trainer.max_epochs=4

1. one study per value of the command line's lists (the scientific choice: `optimizer=sgd,adam,adamw`), every other
   override shared; each study searches the `space` on the same budget of `n_trials` (pruned ones count), in
   batches of `n_jobs` trials through whichever `hydra/launcher` is chosen, into `<sweep dir>/search/`;
2. each study's best trial on validation (`val/acc_best`) rerun with `final.seeds` new seeds (or raced:
   `final.racing=true`) into `<sweep dir>/final/`, whose comparison (mean, CI, verdict) the sweep callback writes;
3. `<sweep dir>/tune.md` (per study: trials, pruned, epochs trained, selected values, final results) and
   `lr_sensitivity.png`.

The studies live in `hydra.sweeper.storage` (default `<sweep dir>/optuna.db`): the same command, re-run after a
crash, resumes them and trains no completed trial again; workers on several machines given one PostgreSQL URL share
them (`final.run=false` on all but one, which runs the finals once every study is done).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from optimlight.app.record import read_results
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from optimlight.tools.compare import write_comparison
from optimlight.tools.sweep import job_error
from optimlight.tools.tuning.pruning import trial_environment
from optimlight.tools.tuning.racing import next_round
from optimlight.tools.tuning.report import write_tune_report
from optimlight.tools.tuning.space import dimensions, overrides, suggest
from optimlight.tools.tuning.storage import open_storage, storage_url
from optimlight.tools.tuning.strategies import make_pruner, make_sampler
from optimlight.tools.tuning.studies import (
    OBJECTIVE,
    Study,
    ask_within_budget,
    fail_stale,
    heartbeats,
    open_study,
    pending,
    settle_ended,
    tell_from_record,
)

log = logging.getLogger(__name__)
SEARCH, FINAL = "search", "final"


def quoted(text: str) -> str:
    """`text` as a single-quoted Hydra override value (a path or URL may hold characters the grammar reads)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_settings(n_trials: int, n_jobs: int | None, final: Mapping) -> None:
    """The sweeper's numbers, each refused with its key before anything trains."""
    whole = lambda v, low: isinstance(v, int) and not isinstance(v, bool) and v >= low
    if not whole(n_trials, 1):
        raise ConfigError("hydra.sweeper.n_trials", n_trials, "a trial budget >= 1 per study")
    if n_jobs is not None and not whole(n_jobs, 1):
        raise ConfigError("hydra.sweeper.n_jobs", n_jobs, "trials per batch >= 1, or null (one per study)")
    if not whole(final["seeds"], 1):
        raise ConfigError("hydra.sweeper.final.seeds", final["seeds"], "a number of seeds >= 1")
    if final["racing"] and not (whole(final["min_seeds"], 2) and final["min_seeds"] <= final["seeds"]):
        raise ConfigError("hydra.sweeper.final.min_seeds", final["min_seeds"], f"2 to final.seeds ({final['seeds']}) for racing")
    if not 0 < final["alpha"] < 1:
        raise ConfigError("hydra.sweeper.final.alpha", final["alpha"], "a significance level in (0, 1)")


class TuneSweep(Sweeper):
    """The sweeper's work: Optuna studies per scientific choice, then the selected settings rerun with seeds."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int | None,
        sampler: str,
        pruner: str,
        min_epochs: int,
        reduction_factor: int,
        space: Mapping,
        final: Mapping,
        heartbeat_interval: int,
        grace_period: int,
        max_retry: int,
    ) -> None:
        final = dict(final)
        check_settings(n_trials, n_jobs, final)
        make_pruner(pruner, min_epochs, reduction_factor)  # refuses a bad name or number now
        self.study_name, self.storage_setting, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.sampler, self.pruner, self.min_epochs, self.reduction_factor = sampler, pruner, min_epochs, reduction_factor
        self.space, self.final = dict(space), final
        self.heartbeat = (heartbeat_interval, grace_period, max_retry)
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.root = Path(config.hydra.sweep.dir).resolve()
        self.url = storage_url(self.storage_setting, self.root)
        self.storage = open_storage(self.url, *self.heartbeat)

    def sweep(self, arguments: list[str]) -> None:
        studies_of, shared, seed = self.split(arguments)
        self.root.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.root / "multirun.yaml")
        studies = [self.open(choices, shared, seed) for choices in studies_of]
        self.search(studies, seed)
        if not self.final["run"]:
            log.info("tune: search done; final.run=false, so the finals are left to the worker that runs them")
            return
        self.wait_for_other_workers(studies, seed)
        self.run_finals(studies, seed)
        if (self.root / FINAL).is_dir():  # not when no study completed a trial
            write_comparison(self.root / FINAL)
        report = write_tune_report(self.root, studies, self.n_trials, self.final)
        log.info("tune: %s", report)

    def split(self, arguments: Sequence[str]) -> tuple[list[list[str]], list[str], int]:
        """The command line (read by Hydra's parser) as studies (one per combination of its lists, each named by its
        values and the optimizer), the overrides all share, and the sweep's seed (the finals add to it)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lists: list[list[str]] = []
        shared: list[str] = []
        chosen: list[str] = []
        seed = int(self.config.seed)
        for override in parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_choice_sweep():
                    value = override.get_value_string()
                    raise ConfigError(key, value, f"a list (a,b,c): searched ranges go in hydra.sweeper.space.{key}")
                lists.append([f"{key}={value}" for value in override.sweep_string_iterator()])
            elif key == "seed" and not override.is_delete():
                seed = int(override.value())
            else:
                (chosen if key == "optimizer" else shared).append(str(override.input_line))
        # the optimizer names its study even when it is the only one (optimizer=sgd, no list)
        lists = [chosen, *lists] if chosen else lists
        return [list(combo) for combo in itertools.product(*lists)], shared, seed

    def open(self, choices: list[str], shared: list[str], seed: int) -> Study:
        """One study: its config composed and validated (a bad value stops the sweep here, before any trial), its
        space checked against that config, its database entry created or resumed."""
        label = " ".join(choices) or "default"
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [*choices, *shared])
        validate(cfg)  # what each trial's preflight would refuse, refused once, before any trial
        dims = dimensions(self.space, cfg, label)
        study = open_study(
            f"{self.study_name}/{label}",
            self.storage,
            make_sampler(self.sampler, seed, dims, self.n_trials),
            make_pruner(self.pruner, self.min_epochs, self.reduction_factor),
            [*choices, *shared, f"seed={seed}"],
        )
        log.info("tune: study %r searches %s", study.study_name, ", ".join(d.key for d in dims) or "nothing")
        return Study(label, [*choices, *shared], cfg, dims, study)

    def job(self, study: Study, values: list[str], stage: str, subdir: str, env: Mapping[str, str] = ()) -> list[str]:
        """A job's overrides: the study's, the values it tries, and where its run dir goes."""
        return [
            *study.overrides,
            *values,
            f"hydra.sweep.dir={quoted(str(self.root / stage))}",
            f"hydra.sweep.subdir={quoted(study.folder + '/' + subdir)}",
            *(f"++hydra.job.env_set.{k}={quoted(v)}" for k, v in dict(env).items()),
        ]

    def launch(self, jobs: list[list[str]]) -> list:
        """Run `jobs` through the launcher in batches of n_jobs; the job returns in order."""
        size = self.n_jobs or len(jobs) or 1
        returns = []
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            self.validate_batch_is_legal(batch)
            returns += list(self.launcher.launch(batch, initial_job_idx=self.job_idx))
            self.job_idx += len(batch)
        return returns

    def search(self, studies: list[Study], seed: int) -> None:
        """Trials, a batch at a time (at most one per study per round, so the studies advance together), until every
        study's budget is spent or held by trials running elsewhere."""
        size = self.n_jobs or len(studies)
        while True:
            for study in studies:
                settle_ended(study.study, lambda number, s=study: read_results(self.trial_dir(s, number)))
                fail_stale(study.study)
            batch: list[tuple[Study, optuna.Trial]] = []
            open_studies = list(studies)
            while open_studies and len(batch) < size:
                for study in list(open_studies):
                    trial = ask_within_budget(study.study, self.n_trials) if len(batch) < size else None
                    if trial is None:
                        open_studies.remove(study)
                    else:
                        batch.append((study, trial))
            if not batch:
                return
            jobs = [
                self.job(
                    study,
                    [*overrides(study.dims, suggest(trial, study.dims), study.cfg), f"seed={seed}"],
                    SEARCH,
                    self.trial_dir(study, trial.number).name,
                    trial_environment(self.url, study.study.study_name, trial._trial_id),
                )
                for study, trial in batch
            ]
            with heartbeats(self.storage, [trial._trial_id for _, trial in batch]):
                returns = self.launch(jobs)
            for (study, trial), job_return in zip(batch, returns):
                tell_from_record(study.study, trial, read_results(self.trial_dir(study, trial.number)), job_error(job_return))

    def trial_dir(self, study: Study, number: int) -> Path:
        return self.root / SEARCH / study.folder / f"trial-{number}"

    def wait_for_other_workers(self, studies: list[Study], seed: int) -> None:
        """Before the finals: until no trial runs or waits in any worker (a killed one's go stale and are retried)."""
        while running := sum(pending(study.study) for study in studies):
            log.info("tune: %d trials run in other workers (or were killed: retried after their grace period)", running)
            time.sleep(self.heartbeat[0])
            self.search(studies, seed)  # settles, fails stale trials, and runs their retries

    def final_values(self, study: Study) -> list[str] | None:
        """The overrides of the study's best trial on validation; None when no trial completed."""
        try:
            best = study.study.best_trial
        except ValueError:
            log.warning("tune: no trial of %s completed; it has no finals", study.label)
            return None
        return overrides(study.dims, best.params, study.cfg)

    def run_finals(self, studies: list[Study], seed: int) -> None:
        """Each study's selected values with seeds seed+1, seed+2, ...: `final.seeds` of them, or raced (a seed a
        round to the configurations not yet significantly behind the leader)."""
        chosen = {study.label: (study, values) for study in studies if (values := self.final_values(study)) is not None}
        seeds = {label: 0 for label in chosen}
        while True:
            if self.final["racing"]:
                values = {label: self.final_scores(study) for label, (study, _) in chosen.items()}
                go = next_round(values, seeds, self.final["alpha"], self.final["min_seeds"], self.final["seeds"])
            else:
                go = [label for label in chosen if seeds[label] < self.final["seeds"]]
            if not go:
                return
            rounds = 1 if self.final["racing"] else self.final["seeds"]
            jobs = []
            for label in go:
                study, values = chosen[label]
                for n in range(seeds[label] + 1, seeds[label] + rounds + 1):
                    jobs.append(self.job(study, [*values, f"seed={seed + n}", "skip_completed=true"], FINAL, f"seed={seed + n}"))
                seeds[label] += rounds
            self.launch(jobs)

    def final_scores(self, study: Study) -> list[float]:
        """The validation values of the study's completed final runs."""
        records = [read_results(path) for path in (self.root / FINAL / study.folder).glob("seed=*")]
        values = [r["metrics"].get(OBJECTIVE) for r in records if r.get("status") == "completed"]
        return [v for v in values if v is not None]
