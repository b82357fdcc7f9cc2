"""Overrides (`key=value`, `group=option`, `+key=value`, `~key`) read by Hydra's own parser, and the command line's
checked before Hydra runs them: a composition error (an unknown key or option, a malformed override) as one line
naming the key, the bad value and what is allowed."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from optimlight.app.config import CONFIG_DIR
from optimlight.plugin.errors import ConfigError


@functools.cache
def parse_override(text: str) -> Override:
    """One override as Hydra reads it (`key_or_group`, `value()`, ...); the only place optimlight parses one."""
    return OverridesParser.create().parse_override(text)


def override_key(text: str) -> str:
    """The key or config group an override sets, without its `+`/`++`/`~` and package."""
    return parse_override(text).key_or_group


def is_choice(text: str) -> bool:
    """Whether an override picks a config group's option or sets a top-level key (`optimizer=sgd`, `seed=1`),
    rather than a value inside a group (`optimizer.lr=0.1`)."""
    return "." not in override_key(text)


def override_value(overrides: Iterable[str], key: str) -> Any:
    """The value of the first override of `key` among `overrides`, as Hydra parses it (`0.1`, `sgd`); None if none."""
    return next((parse_override(o).value() for o in overrides if override_key(o) == key), None)


#: Overrides that pick a repetition of a configuration (or how it is run) rather than a different one.
REPETITION_KEYS = ("seed", "skip_completed", "speed.num_threads")
#: W&B's limit on a job_type's length.
JOB_TYPE_LENGTH = 64


def configuration_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line's overrides that define the configuration: `seed` (and Hydra's own keys) left out, so
    the runs of one configuration under several seeds share them."""
    kept = []
    for override in overrides:
        key = override_key(override)
        if key not in REPETITION_KEYS and not key.startswith("hydra."):
            kept.append(override)
    return kept


def configuration_label(overrides: Sequence[str]) -> str:
    """The configuration as a W&B job_type: its overrides, config-group choices first, at most 64 characters
    (a hash of the whole keeps long ones apart)."""
    kept = configuration_overrides(overrides)
    choices_first = [o for o in kept if is_choice(o)] + [o for o in kept if not is_choice(o)]
    label = " ".join(choices_first) or "default"
    if len(label) <= JOB_TYPE_LENGTH:
        return label
    digest = hashlib.sha1(label.encode()).hexdigest()[:8]
    return f"{label[: JOB_TYPE_LENGTH - 9]}~{digest}"


def hydra_error_line(exc: HydraException) -> str:
    """Hydra's multi-line composition errors as one line: the key, the bad value and what is allowed."""
    cause = exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, f"one of {', '.join(exc.options)}"))
    if isinstance(exc, OverrideParseException):
        return f"{exc.override!r} is not a valid override ({exc.message.splitlines()[0]}): expected key=value"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"{cause.full_key} is not a config key: check the spelling, or add a new key with +{cause.full_key}=..."
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def split_config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """`--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` taken out of `args`: (the dirs, the other args)."""
    dirs, rest, it = [], [], iter(args)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            dirs.append(next(it, ""))
        elif arg.startswith("--config-dir="):
            dirs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return dirs, rest


def override_error(args: list[str]) -> str | None:
    """Compose the command line's config once before Hydra does: the one-line error, or None when it composes.
    A user's `--config-dir` joins the search path, as Hydra adds it; multiruns and Hydra's other flags are left
    to Hydra."""
    config_dirs, overrides = split_config_dirs(args)
    if any(arg.startswith("-") for arg in overrides) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    for config_dir in config_dirs:
        if not os.path.isdir(config_dir):
            return str(ConfigError("--config-dir", config_dir, "an existing folder of config groups"))
    search_path = [f"file://{os.path.abspath(d)}" for d in config_dirs]
    if search_path:
        overrides = [*overrides, f"hydra.searchpath=[{','.join(search_path)}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as exc:
        return hydra_error_line(exc)
    finally:
        GlobalHydra.instance().clear()
    return None
