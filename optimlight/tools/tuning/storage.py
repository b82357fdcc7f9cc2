"""Where the studies live: an SQLite file in the sweep dir by default (a re-run of the same command resumes it), or a
PostgreSQL/MySQL server that workers on several machines share. Heartbeats are on, so a trial whose worker was
killed is failed once its heartbeat is stale and queued again with the same values."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from optimlight.plugin.errors import ConfigError

#: SQLAlchemy dialects Optuna's RDBStorage runs on (a driver may follow: postgresql+psycopg2://).
SCHEMES = ("sqlite", "postgresql", "mysql")
DEFAULT_FILE = "optuna.db"


def storage_url(url: str | None, sweep_dir: Path) -> str:
    """`url` checked, or the default SQLite file in the sweep dir."""
    if url is None:
        return f"sqlite:///{(Path(sweep_dir) / DEFAULT_FILE).resolve()}"
    scheme = str(url).split("://", 1)[0].split("+", 1)[0] if "://" in str(url) else None
    if scheme not in SCHEMES:
        raise ConfigError(
            "hydra.sweeper.storage",
            url,
            "null (an SQLite file in the sweep dir), sqlite:///FILE, postgresql://... or mysql://...",
        )
    return str(url)


def open_storage(url: str, heartbeat_interval: int, grace_period: int, max_retry: int) -> RDBStorage:
    """The study database, with heartbeats: a trial silent for `grace_period` seconds is failed by the next worker
    that looks and retried up to `max_retry` times (a new WAITING trial with the same values)."""
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ConfigError(
            "hydra.sweeper.grace_period", grace_period, f"seconds > heartbeat_interval ({heartbeat_interval}, itself >= 1)"
        )
    if url.startswith("sqlite:"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 120}}  # parallel jobs wait for SQLite's write lock
    else:
        engine = {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; the warning says nothing more
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):  # workers racing to create new tables
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")
