"""How a failed run ends: the one line each failure shows the user, and the exit code the command line (and the
population launcher) leaves for it."""

from __future__ import annotations

import sys
from typing import NoReturn

from optimlight.app.callbacks import NonFiniteLossError
from optimlight.app.data import DataError
from optimlight.plugin.errors import ConfigError, first_line

EXIT_BAD_INPUT, EXIT_TRAINING_FAILED, EXIT_PREEMPTED = 2, 3, 143  # 143 = 128 + SIGTERM, what schedulers expect
#: Input the user can fix (a config value, the data): exit code 2.
BAD_INPUT = (ConfigError, DataError)
#: Failures whose message is the whole story, shown without a traceback.
EXPLAINED = (*BAD_INPUT, NonFiniteLossError)


def error_text(exc: BaseException) -> str:
    """What results.json's `error` says: optimlight's own one-line errors as they are, others as `Type: line`."""
    return str(exc) if isinstance(exc, EXPLAINED) else first_line(exc)


def exit_code(exc: BaseException) -> int:
    return EXIT_BAD_INPUT if isinstance(exc, BAD_INPUT) else EXIT_TRAINING_FAILED


def exit_preempted(saved: str, run_dir_key: str) -> NoReturn:
    """SIGTERM's exit: what was saved, and the command that resumes from it (`run_dir_key`: hydra.run.dir=...)."""
    print(
        f"preempted (SIGTERM): saved {saved}; resume by running the same command with {run_dir_key} ckpt_path=last",
        file=sys.stderr,
    )
    sys.exit(EXIT_PREEMPTED)
