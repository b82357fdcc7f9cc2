"""The Hydra plugin of `hydra/sweeper=tune` (Hydra takes plugin classes from the `hydra_plugins` package only);
the work is `optimlight.tools.tuning.sweeper`'s."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from optimlight.app.failures import EXIT_BAD_INPUT
from optimlight.plugin.errors import ConfigError
from optimlight.tools.tuning.sweeper import TuneSweep


def refusing(step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a step of the sweep; a bad setting becomes one line on stderr and the command line's exit status, before
    any trial trains (Hydra would print a traceback and exit 1)."""
    try:
        return step(*args, **kwargs)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


class TuneSweeper(TuneSweep):
    """Optuna studies per scientific choice (the optimizer), then each one's best trial rerun with seeds."""

    def __init__(self, **settings: Any) -> None:
        refusing(super().__init__, **settings)

    def setup(self, **kwargs: Any) -> None:
        refusing(super().setup, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        refusing(super().sweep, arguments)
