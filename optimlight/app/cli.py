"""The command line: `python train.py` and the `optimlight-train` console script. Bad input becomes one line on
stderr and an exit code; everything else is `optimlight.app.run.run`. Nothing imports this module."""

from __future__ import annotations

import os
import sys
import traceback

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from optimlight.app.callbacks import NonFiniteLossError
from optimlight.app.config import CONFIG_DIR, register_launchers
from optimlight.app.data import DataError
from optimlight.app.run import error_text, run
from optimlight.plugin.errors import ConfigError

EXIT_BAD_INPUT, EXIT_TRAINING_FAILED, EXIT_PREEMPTED = 2, 3, 143  # 143 = 128 + SIGTERM, what schedulers expect


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


def check_overrides(args: list[str]) -> None:
    """Compose the command line's config once before Hydra does, so unknown keys and options get one line and
    exit code 2 like every other bad value. A user's `--config-dir` joins the search path, as Hydra adds it;
    multiruns and Hydra's other flags are left to Hydra."""
    config_dirs, overrides = split_config_dirs(args)
    if any(arg.startswith("-") for arg in overrides) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    for config_dir in config_dirs:
        if not os.path.isdir(config_dir):
            print(f"error: {ConfigError('--config-dir', config_dir, 'an existing folder of config groups')}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    search_path = [f"file://{os.path.abspath(d)}" for d in config_dirs]
    if search_path:
        overrides = [*overrides, f"hydra.searchpath=[{','.join(search_path)}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as exc:
        print(f"error: {hydra_error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        GlobalHydra.instance().clear()


def main() -> float | None:
    """`python train.py` / `optimlight-train`: check the overrides, then hand over to Hydra."""
    register_launchers()
    check_overrides(sys.argv[1:])
    return hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    """Run, turning a bad config value or missing data into one line on stderr and exit code 2.

    In a multirun the error is raised instead, so the sweep records the job as failed and goes on.
    """
    try:
        return run(cfg)
    except SIGTERMException:
        run_dir = HydraConfig.get().runtime.output_dir
        print(
            f"preempted (SIGTERM): saved {run_dir}/checkpoints/last.ckpt; resume by running the same command "
            f"with hydra.run.dir={run_dir} ckpt_path=last",
            file=sys.stderr,
        )
        sys.exit(EXIT_PREEMPTED)
    except Exception as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        known = isinstance(exc, (ConfigError, DataError, NonFiniteLossError))
        if not known:  # a crash: its traceback, then the one line, last, as for every failure
            traceback.print_exc()
        print(f"error: {error_text(exc)}", file=sys.stderr)  # results.json has it too (run records every failure)
        if isinstance(exc, NonFiniteLossError) or not known:
            sys.exit(EXIT_TRAINING_FAILED)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":  # `python -m optimlight.app.cli`, how the tools start a multirun in a fresh process
    main()
