"""Before the first step, and before any logger or run file: every config value checked, every object built once.

Three passes, one error form (`ConfigError`: `<key>=<value> is not allowed: <reason>`):
1. the per-group checks (`validate`) and the types of every leaf (`schema.check_types`);
2. the objects the run needs, built from the config as the run will build them: the data's files, the network
   (with one forward and loss on a blank batch), the optimizer, the scheduler, the callbacks and the Trainer;
3. a constructor's own error (torch, Lightning, nn modules) is put on the key that caused it: the override of the
   failing group whose reversion to its default makes the constructor succeed.

Nothing built here is kept: the RNGs are restored, and the run builds its objects again after seeding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from optimlight.app.build import build_callbacks, build_module
from optimlight.app.config import CONFIG_DIR
from optimlight.app.data import DataError
from optimlight.app.models import IMAGE_SHAPE
from optimlight.app.overrides import is_choice, override_key, parse_override
from optimlight.app.plan import plan_run
from optimlight.app.schema import check_types
from optimlight.app.validate import validate
from optimlight.plugin.errors import ConfigError
from optimlight.plugin.optimizers import build_optimizer
from optimlight.plugin.schedulers import build_scheduler

#: One build step of the preflight: the composed config in, the object the run would build out.
Build = Callable[[DictConfig], object]


def task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def defaults_for(overrides: list[str]) -> DictConfig:
    """The config with the same group options but no value overrides: what each overridden key reverts to."""
    return compose_defaults(tuple(o for o in overrides if is_choice(o)))


@functools.lru_cache(maxsize=8)
def compose_defaults(choices: tuple[str, ...]) -> DictConfig:
    """Composed once per set of group choices (a sweep's jobs, a test's cases share them); read, never changed."""
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=list(choices))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(choices))


def blame(cfg: DictConfig, groups: tuple[str, ...], build: Build, exc: Exception) -> ConfigError:
    """The override (of `groups`) whose default value makes `build` succeed, as a ConfigError with exc's reason."""
    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__  # Hydra's wrapper of the constructor's own error
    reason = " ".join(str(exc).split()) or type(exc).__name__
    keys = [override_key(o) for o in task_overrides() if not (is_choice(o) or parse_override(o).is_delete())]
    keys = [key for key in keys if key.split(".")[0] in groups]
    defaults = defaults_for(task_overrides()) if keys else None
    for key in keys:
        trial = cfg.copy()
        with open_dict(trial):
            default = OmegaConf.select(defaults, key, default=None)
            OmegaConf.update(trial, key, default, force_add=True)
        try:
            build(trial)
        except Exception:
            continue
        return ConfigError(key, OmegaConf.select(cfg, key), reason)
    group = groups[0]
    choice = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    return ConfigError(group, choice or "this config", reason)


def attempt(cfg: DictConfig, groups: tuple[str, ...], build: Build):
    """`build(cfg)`, a failure turned into a ConfigError on the key that caused it."""
    try:
        return build(cfg)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        raise blame(cfg, groups, build, exc) from exc


def build_network(cfg: DictConfig):
    """The module on its network, with one loss on a blank batch of two images (shapes, loss settings)."""
    module = build_module(cfg)
    x = torch.zeros(2, *IMAGE_SHAPE)
    module.criterion(module(x), torch.zeros(2, dtype=torch.long))
    return module


def build_schedule(cfg: DictConfig):
    optimizer = build_optimizer(build_network(cfg), cfg.optimizer)
    return optimizer, build_scheduler(optimizer, cfg.scheduler, plan_run(cfg))


def build_trainer(cfg: DictConfig):
    callbacks, _, _ = build_callbacks(cfg.callbacks, interactive=False, has_logger=False)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=False, enable_progress_bar=False)


def preflight(cfg: DictConfig) -> None:
    """Raise the first ConfigError (or DataError) the run would meet; fetch the data if it is missing."""
    check_types(cfg)
    validate(cfg)
    datamodule = attempt(cfg, ("data",), lambda c: instantiate(c.data))
    datamodule.prepare_data()
    with torch.random.fork_rng(devices=[]):
        attempt(cfg, ("model", "module"), build_network)
        attempt(cfg, ("optimizer", "scheduler", "model", "module", "trainer", "data"), build_schedule)
        attempt(cfg, ("trainer", "callbacks"), build_trainer)
