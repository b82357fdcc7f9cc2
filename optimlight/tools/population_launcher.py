"""`hydra/launcher=population`: the sweep's jobs that share a network train together, the others one by one.

Jobs join a population when they differ only in what each member keeps for itself (optimizer, scheduler, seed)
and nothing in them needs a run of its own (`why_alone`); up to `max_members` share one. Every job keeps its run
dir, `.hydra/` files, Hydra callbacks (the sweep summary and comparison) and return value, so nothing downstream
can tell a member from a job run alone, except results.json's `population` entry (members, member index).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _save_config,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from optimlight.app.build import precision_name
from optimlight.app.callbacks import NonFiniteLossError
from optimlight.app.config import CONFIG_DIR, config_choices
from optimlight.app.failures import error_text, exit_preempted
from optimlight.app.preflight import preflight
from optimlight.app.quiet import lightning_info_off, quiet_dependencies
from optimlight.app.record import read_results, record_failure
from optimlight.app.run import apply_speed_settings
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import optimizer_class
from optimlight.plugin.registry import optimizer_info
from optimlight.tools.batched import unbatchable
from optimlight.tools.population import FULL_PRECISIONS, Member, Population, build_member, progress, write_record

log = logging.getLogger(__name__)
#: The callbacks a population does for its members: those of conf/callbacks/default.yaml and a tuning trial's
#: pruning (hparams_search); any other makes a job run alone.
POPULATION_CALLBACKS = frozenset(
    name for name, node in OmegaConf.load(Path(CONFIG_DIR, "callbacks", "default.yaml")).items() if node
) | {"tune_pruning"}
#: What members of one population may differ in: each member has its own.
OWN_KEYS = ("optimizer", "scheduler", "seed")


def why_alone(cfg: DictConfig) -> str | None:
    """Why the job must run alone (None: it can join a population). Reasons name the config key."""
    info = optimizer_info(optimizer_class(cfg.optimizer))
    trainer, data, module = cfg.trainer, cfg.data, cfg.module
    checks = [
        (info.closure, "optimizer: it re-evaluates its closure several times per step"),
        (info.train_eval, "optimizer: it switches between train and eval modes"),
        (info.sparse_only, "optimizer: it updates sparse gradients only"),
        (
            precision_name(trainer.precision) not in FULL_PRECISIONS,
            f"trainer.precision={trainer.precision} (populations: {', '.join(FULL_PRECISIONS)})",
        ),
        (trainer.get("devices") not in (1, "1") or (trainer.get("num_nodes") or 1) != 1, "trainer.devices: one process per run"),
        (trainer.get("strategy") not in (None, "auto"), "trainer.strategy"),
        ((trainer.get("accumulate_grad_batches") or 1) != 1, "trainer.accumulate_grad_batches"),
        (trainer.get("gradient_clip_val") is not None, "trainer.gradient_clip_val"),
        (trainer.get("val_check_interval") not in (None, 1, 1.0), "trainer.val_check_interval (validation mid-epoch)"),
        (trainer.get("max_steps", -1) != -1, "trainer.max_steps"),
        (trainer.get("max_epochs") is None or trainer.max_epochs < 0, "trainer.max_epochs (a population needs an epoch count)"),
        (data.loader != "tensor" or data.augment or data.num_workers, "data: loader=tensor without augment or workers"),
        (
            module.compile or module.channels_last or module.skip_nonfinite_loss,
            "module: compile, channels_last, skip_nonfinite_loss",
        ),
        (bool(cfg.get("tune")), "tune"),
        (set(cfg.logger or {}) - {"csv", "wandb"} != set() and any((cfg.logger or {}).values()), "logger: csv and wandb only"),
    ]
    callbacks = {name for name, node in (cfg.callbacks or {}).items() if node}
    checks.append((not callbacks <= POPULATION_CALLBACKS, f"callbacks: {', '.join(sorted(callbacks - POPULATION_CALLBACKS))}"))
    checkpoint = (cfg.callbacks or {}).get("model_checkpoint") or {}
    checks.append(
        (
            bool(checkpoint) and (checkpoint.get("monitor"), checkpoint.get("mode")) != ("val/acc", "max"),
            "callbacks.model_checkpoint.monitor",
        )
    )
    reason = next((why for failed, why in checks if failed), None)
    return reason or (f"model: {why}" if (why := unbatchable(instantiate(cfg.model))) else None)


def population_key(cfg: DictConfig) -> str:
    """Jobs with equal keys train together: the config without what members keep for themselves, and the
    progress a resume starts from (members train in lock step)."""
    shared: dict = OmegaConf.to_container(cfg, resolve=False)  # a DictConfig gives a dict
    for key in OWN_KEYS:
        shared.pop(key, None)
    shared["data"].pop("seed", None)
    return json.dumps([shared, progress(cfg)], sort_keys=True, default=str)


@dataclass
class Job:
    """One job of the sweep: its index, overrides and configs (with hydra, and the task's without)."""

    idx: int
    overrides: list[str]
    config: DictConfig
    task_cfg: DictConfig | None = None
    out_dir: Path | None = None


class PopulationLauncher:
    """The launcher's work (the Hydra plugin in hydra_plugins/ delegates here)."""

    def __init__(self, max_members: int = 9):
        if not isinstance(max_members, int) or isinstance(max_members, bool) or max_members < 1:
            raise ConfigError("hydra.launcher.max_members", max_members, "a positive integer (jobs per population)")
        self.max_members = max_members

    def setup(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._job(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        returns: dict[int, JobReturn] = {}
        for group in self._groups(jobs):
            if len(group) == 1:
                log.info("\t#%d : %s (alone)", group[0].idx, " ".join(filter_overrides(group[0].overrides)))
                returns[group[0].idx] = self._run_alone(group[0])
            else:
                returns.update(self._run_population(group))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[job.idx] for job in jobs]

    def _job(self, idx: int, overrides: list[str]) -> Job:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return Job(idx, overrides, config)

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        """Jobs in groups of up to max_members that can train together; a job that cannot is a group of one."""
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            with job_context(job):  # the job's run dir resolves its paths (a resume reads its checkpoint)
                try:
                    reason = why_alone(job.task_cfg)
                    key = None if reason else population_key(job.task_cfg)
                except Exception as exc:  # a bad value: the job runs alone, and its own preflight says what is wrong
                    reason = error_text(exc)
            if reason:
                log.info("job #%d runs alone: %s", job.idx, reason)
                groups[f"alone {job.idx}"] = [job]
            else:
                groups.setdefault(key, []).append(job)
        chunks = []
        for group in groups.values():
            chunks += [group[i : i + self.max_members] for i in range(0, len(group), self.max_members)]
        return sorted(chunks, key=lambda chunk: chunk[0].idx)

    def _run_alone(self, job: Job) -> JobReturn:
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _run_population(self, jobs: list[Job]) -> dict[int, JobReturn]:
        quiet_dependencies()
        log.info("population of %d: jobs %s", len(jobs), ", ".join(f"#{job.idx}" for job in jobs))
        members: list[tuple[Job, Member]] = []
        returns: dict[int, JobReturn] = {}
        for job in jobs:
            with job_context(job):
                log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
                self.hydra_context.callbacks.on_job_start(config=job.config, task_function=self.task_function)
                member = self._member(job)
            if isinstance(member, JobReturn):
                returns[job.idx] = member
            else:
                members.append((job, member))
        if members:
            returns.update(self._train([job for job, _ in members], [member for _, member in members]))
        return returns

    def _member(self, job: Job) -> Member | JobReturn:
        """The job's member, built; or its JobReturn when it fails before training or was completed before."""
        cfg = job.task_cfg
        try:
            with lightning_info_off():
                preflight(cfg)
            if cfg.get("skip_completed") and read_results(job.out_dir).get("status") == "completed":
                log.info("skip_completed: %s already holds a completed run", job.out_dir)
                return self._job_end(job, read_results(job.out_dir)["metrics"].get("val/acc_best"))
            OmegaConf.resolve(cfg)  # the run dir's paths, W&B names: resolved while this job's HydraConfig is set
            member = Member(cfg=cfg, out_dir=job.out_dir)
            build_member(member)
            return member
        except Exception as exc:
            record_failure(job.out_dir, error_text(exc), config_choices())
            return self._job_end(job, exc)

    def _train(self, jobs: list[Job], members: list[Member]) -> dict[int, JobReturn]:
        with job_context(jobs[0]):  # auto: the threads of the batched model, under this launcher (one population at a time)
            apply_speed_settings(members[0].cfg, networks=len(members))
        population = Population(members)
        crash: BaseException | None = None
        try:
            population.fit_and_test()
        except SIGTERMException as exc:
            crash = exc
            for member in members:
                if member.active:
                    member.status = "preempted"
        except Exception as exc:  # a crash of the whole population: every member still running failed with it
            crash = exc
            for member in members:
                if member.active:
                    member.status, member.error = "failed", error_text(exc)
        returns = {}
        for index, (job, member) in enumerate(zip(jobs, members)):
            with job_context(job):
                record = write_record(member, len(members), index)
            if isinstance(crash, SIGTERMException):
                continue  # as a run alone: the process exits, the sweep's callbacks do not see the job end
            ended = record["status"] in ("completed", "pruned")  # a pruned trial's run ended as its study asked
            result = record["metrics"].get("val/acc_best") if ended else None
            failure = None if ended else (crash or NonFiniteLossError(member.error))
            returns[job.idx] = self._job_end(job, failure or result)
        if isinstance(crash, SIGTERMException):
            exit_preempted("each member's checkpoints/last.ckpt", f"hydra.sweep.dir={self.config.hydra.sweep.dir}")
        return returns

    def _job_end(self, job: Job, outcome: Any) -> JobReturn:
        """The job's JobReturn (completed with `outcome`, or failed when it is an exception), after the Hydra
        callbacks' on_job_end, under the job's HydraConfig."""
        with job_context(job):
            ret = JobReturn()
            ret.cfg, ret.hydra_cfg = job.task_cfg, copy.deepcopy(HydraConfig.instance().cfg)
            ret.overrides, ret.working_dir = list(job.config.hydra.overrides.task), os.getcwd()
            ret.status = JobStatus.FAILED if isinstance(outcome, BaseException) else JobStatus.COMPLETED
            ret.return_value = outcome
            ret.task_name = JobRuntime.instance().get("name")
            self.hydra_context.callbacks.on_job_end(config=job.config, job_return=ret)
        return ret


def task_config(config: DictConfig) -> DictConfig:
    """The job's config without its `hydra` node: what the task function would receive."""
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


class job_context:
    """While inside, HydraConfig is the job's (so `${hydra:...}` resolves to its run dir); the job's run dir and
    `.hydra/` files are made on first entry, as Hydra's run_job makes them."""

    def __init__(self, job: Job):
        self.job = job

    def __enter__(self) -> Job:
        self.previous = HydraConfig.instance().cfg
        job, config = self.job, self.job.config
        HydraConfig.instance().set_config(config)
        if job.out_dir is None:
            out_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = str(out_dir.resolve())
            HydraConfig.instance().set_config(config)
            job.out_dir = out_dir.resolve()
            job.out_dir.mkdir(parents=True, exist_ok=True)
            job.task_cfg = task_config(config)
            if config.hydra.output_subdir is not None:
                hydra_dir = job.out_dir / str(config.hydra.output_subdir)
                _save_config(job.task_cfg, "config.yaml", hydra_dir)
                _save_config(HydraConfig.instance().cfg, "hydra.yaml", hydra_dir)
                _save_config(config.hydra.overrides.task, "overrides.yaml", hydra_dir)
        return job

    def __exit__(self, *exc) -> None:
        HydraConfig.instance().cfg = self.previous
