"""What a study searches: the sweeper's `space` table read against one study's composed config and its optimizer
class's registry row, and a trial's sampled values as Hydra overrides.

A space key is a family name or a config key:
- `lr`, `weight_decay`, `warmup_epochs`: `optimizer.lr`, `optimizer.weight_decay`, `scheduler.warmup_epochs`, searched
  where the study's config has them (Adagrad has no warmup under `scheduler=none`, say);
- `momentum`: what the registry says the class's momentum is: `optimizer.momentum` (SGD, RMSprop) or beta1 of
  `optimizer.betas` (the Adam family); skipped for a class without one;
- any other key (`optimizer.eps`, `scheduler.eta_min`) must be in every study's config, else it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf

from optimlight.plugin.errors import ConfigError
from optimlight.plugin.nodes import is_number
from optimlight.plugin.optimizers import optimizer_class
from optimlight.plugin.registry import optimizer_info

#: Family names: the config key each one sets, where the study's config has it.
FAMILIES = {"lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay", "warmup_epochs": "scheduler.warmup_epochs"}
_ABSENT = object()


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: its Optuna name (the space key), the config key it sets (`index`: the place in
    a list value, beta1 of `betas`), and its range (`log`: sampled uniformly in log space; int bounds: integers)."""

    name: str
    key: str
    low: float
    high: float
    log: bool
    index: int | None = None

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not self.log


def parse_range(name: str, spec: Any) -> tuple[float, float, bool]:
    """`{low, high, log}` checked: numbers, low < high, both > 0 on a log scale."""
    where = f"hydra.sweeper.space.{name}"
    if not isinstance(spec, Mapping) or set(spec) - {"low", "high", "log"} or not {"low", "high"} <= set(spec):
        raise ConfigError(where, spec, "a range {low: ..., high: ..., log: true|false}")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if not (is_number(low) and is_number(high) and low < high):
        raise ConfigError(where, spec, "numbers low < high")
    if log and low <= 0:
        raise ConfigError(where, spec, "low > 0 on a log scale (log: true)")
    return low, high, log


def _target(cfg: DictConfig, name: str, study: str) -> tuple[str, int | None] | None:
    """The config key (and list index) `name` sets in this study's config; None where a family does not apply."""
    if name == "momentum":
        info = optimizer_info(optimizer_class(cfg.optimizer))
        if info.momentum == "betas" and "betas" in cfg.optimizer:
            return "optimizer.betas", 0
        if info.momentum == "momentum" and "momentum" in cfg.optimizer:
            return "optimizer.momentum", None
        return None
    key = FAMILIES.get(name, name)
    if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
        if name in FAMILIES:
            return None
        raise ConfigError(f"hydra.sweeper.space.{name}", name, f"a key of every study's config ({study} has no {key})")
    return key, None


def entries(space: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, range) pairs of the space: a config key given with dots (`optimizer.eps`) arrives nested."""
    for name, spec in space.items():
        if isinstance(spec, Mapping) and not {"low", "high"} & set(spec):
            yield from entries(spec, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", spec


def dimensions(space: Mapping, cfg: DictConfig, study: str) -> list[Dimension]:
    """The dimensions `space` searches in the study labelled `study` (`optimizer=sgd`), whose config is `cfg`."""
    dims = []
    for name, spec in entries(space):
        if spec is None:  # a preset's family switched off: hydra.sweeper.space.momentum=null
            continue
        low, high, log = parse_range(name, spec)
        target = _target(cfg, name, study)
        if target is not None:
            dims.append(Dimension(name, target[0], low, high, log, target[1]))
    return dims


def grid_points(dims: Sequence[Dimension], n_trials: int) -> dict[str, list[float]]:
    """The grid sampler's points: k per dimension with k^d = n_trials, evenly spaced (in log space where `log`), the
    ends exact and inner points at 3 significant digits, so a run's overrides read lr=0.000373."""
    n = len(dims)
    k = round(n_trials ** (1 / n)) if n else 0
    if k < 2 or k**n != n_trials:
        raise ConfigError("hydra.sweeper.n_trials", n_trials, f"k^{n} (k >= 2) for sampler=grid over {n} searched keys")
    points = {}
    for d in dims:
        inner = (np.geomspace if d.log else np.linspace)(d.low, d.high, k)[1:-1]
        values = [d.low, *(round(v) if d.integer else float(f"{v:.3g}") for v in inner), d.high]
        if len(set(values)) < k:
            raise ConfigError(f"hydra.sweeper.space.{d.name}", f"{d.low}..{d.high}", f"{k} distinct points for sampler=grid")
        points[d.name] = values
    return points


def suggest(trial: optuna.Trial, dims: Sequence[Dimension]) -> dict[str, float]:
    """The trial's values, one per dimension (WAITING trials, retries of a killed one, get their fixed values)."""
    return {
        d.name: trial.suggest_int(d.name, d.low, d.high) if d.integer else trial.suggest_float(d.name, d.low, d.high, log=d.log)
        for d in dims
    }


def _value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def overrides(dims: Sequence[Dimension], params: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    """`key=value` overrides that set a trial's values in the config (beta1 replaced inside the config's betas)."""
    out = []
    for d in dims:
        value = params[d.name]
        if d.index is not None:
            whole = list(OmegaConf.to_container(OmegaConf.select(cfg, d.key)))
            whole[d.index] = value
            value = whole
        out.append(f"{d.key}={_value(value)}")
    return out
