"""Lines that dependencies print on every run and that no user of optimlight can act on, each filtered by its
exact text and origin; every other warning stays. (Noise optimlight itself caused is removed where it starts:
the W&B settings in `loggers`, the explicit checkpoint paths in `run` and `callbacks`.)"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from lightning_utilities.core import rank_zero

#: Lightning 2.6 advertises its hosted logger whenever a Trainer has loggers and none of them is a LitLogger.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
#: Lightning says so when a schedule sized from the run's length counts the training batches before fitting.
STEPPING_BATCHES = "Loading `train_dataloader` to estimate number of stepping batches."
#: Lightning says it leaves out its default model summary: callbacks.model_summary is optimlight's.
OWN_SUMMARY = "Trainer already configured with model summary callbacks"
#: Lightning's LR finder saves its temporary checkpoint without `weights_only`, and Lightning says so.
LR_FINDER_WEIGHTS_ONLY = "`weights_only` was not set, defaulting to `False`."
CHECKPOINT_LOGGER = "lightning.pytorch.trainer.connectors.checkpoint_connector"


class DropMessages(logging.Filter):
    """Drops the records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_TIP, _WEIGHTS_ONLY = DropMessages(LITLOGGER_TIP, STEPPING_BATCHES, OWN_SUMMARY), DropMessages(LR_FINDER_WEIGHTS_ONLY)


def quiet_dependencies() -> None:
    """Install the filters (idempotent: a multirun calls it once per job). `rank_zero.log` is the logger that
    Lightning's `rank_zero_info` writes to, set when `lightning.pytorch` is imported."""
    for logger, drop in ((rank_zero.log, _TIP), (logging.getLogger(CHECKPOINT_LOGGER), _WEIGHTS_ONLY)):
        if drop not in logger.filters:
            logger.addFilter(drop)
    # Lightning 2.6's own _pytree module builds torch's deprecated LeafSpec (torch >= 2.10 warns on every fit)
    warnings.filterwarnings(
        "ignore",
        message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
        category=FutureWarning,
        module="lightning.pytorch.utilities._pytree",
    )


@contextmanager
def lightning_info_off() -> Iterator[None]:
    """Lightning's info lines off while the body runs (its warnings stay): the preflight check builds a Trainer
    only to try the config, and its device lines ("GPU available ...") would print again beside the run's own."""
    level = rank_zero.log.level
    rank_zero.log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        rank_zero.log.setLevel(level)
