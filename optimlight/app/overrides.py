"""The command line's overrides checked before Hydra runs them: a composition error (an unknown key or option, a
malformed override) as one line naming the key, the bad value and what is allowed."""

from __future__ import annotations

import os

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from optimlight.app.config import CONFIG_DIR
from optimlight.plugin.errors import ConfigError


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
