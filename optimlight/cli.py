"""The command line, on top of every layer: `python train.py`, the `optimlight-train` console script and
`python -m optimlight.cli` (how the tools start a multirun in a fresh process). Bad input becomes one line on
stderr and an exit code; everything else is `optimlight.app.run.run`.

It is also the one place that registers optimlight's Hydra plugins (`PLUGINS`). Hydra finds plugins by listing
the `hydra_plugins` package's folders, which misses ours in an editable install (setuptools maps them through an
import hook, not a folder on sys.path); registering them by hand works for every install. Nothing imports this
module.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from hydra_plugins.optimlight_population.population_launcher import PopulationLauncher
from hydra_plugins.optimlight_tune.tune_sweeper import TuneSweeper
from optimlight.app.config import CONFIG_DIR
from optimlight.app.failures import EXIT_BAD_INPUT, EXPLAINED, error_text, exit_code, exit_preempted
from optimlight.app.overrides import override_error
from optimlight.app.run import run

#: optimlight's Hydra plugins (`hydra/launcher=population`, ...): add a plugin class here to make Hydra know it.
PLUGINS = (PopulationLauncher, TuneSweeper)


def register_plugins() -> None:
    for plugin in PLUGINS:
        Plugins.instance().register(plugin)


def main() -> float | None:
    """`python train.py` / `optimlight-train`: check the overrides, then hand over to Hydra."""
    register_plugins()
    error = override_error(sys.argv[1:])
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
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
        exit_preempted(f"{run_dir}/checkpoints/last.ckpt", f"hydra.run.dir={run_dir}")
    except Exception as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if not isinstance(exc, EXPLAINED):  # a crash: its traceback, then the one line, last, as for every failure
            traceback.print_exc()
        print(f"error: {error_text(exc)}", file=sys.stderr)  # results.json has it too (run records every failure)
        sys.exit(exit_code(exc))


def multirun(overrides: Sequence[str], sweep_dir: str | Path) -> None:
    """`python train.py -m <overrides>` in this process, into `sweep_dir`: the sweep's jobs, summary and report.
    A failed job raises once the sweep is done (Hydra exits with code 1, as on the command line)."""
    argv = sys.argv
    sys.argv = [argv[0] if argv else "optimlight", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    try:
        main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


if __name__ == "__main__":
    main()
