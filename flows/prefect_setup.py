"""Prefect settings and log routing that every w4s entry point needs.

A new Prefect home creates and migrates its SQLite database on first start: about 26 s on
an idle 2-core machine, while Prefect waits 20 s for its ephemeral server by default. Every
new user and every new worker host meets that first start, so w4s raises the wait (a
Prefect setting, set before Prefect is imported; a user's own value wins).

A `PREFECT_HOME` whose parent folder does not exist makes Prefect fail to create its
database, and the CLI would then wait the whole start-up timeout: w4s creates the folder
(with its parents) first, or stops at once with one line naming `PREFECT_HOME`.

w4s and its backends log under `w4s` and `models`. Without routing those messages reach the
terminal only at WARNING (Prefect's root handler) and never the run's logs in the UI.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from w4s.errors import ConfigError

EPHEMERAL_STARTUP_TIMEOUT_S = 180
W4S_LOGGERS = ("w4s", "models")

_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(EPHEMERAL_STARTUP_TIMEOUT_S),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",  # no Prefect client telemetry (nor its notice): w4s works offline
}


def set_environment_defaults() -> None:
    """Call before Prefect is imported: its settings are read from the environment."""
    for name, value in _DEFAULTS.items():
        os.environ.setdefault(name, value)


def ensure_prefect_home() -> None:
    """Create `PREFECT_HOME` (with parents) when it is set; ConfigError naming it when it
    cannot be a writable folder."""
    value = os.environ.get("PREFECT_HOME")
    if not value:
        return  # Prefect's default, ~/.prefect, which it creates itself
    home = Path(value).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"`PREFECT_HOME` {value!r} cannot be created: "
                          f"{e.strerror or e}") from e
    if not os.access(home, os.W_OK | os.X_OK):
        raise ConfigError(f"`PREFECT_HOME` {value!r} is not a writable folder")


class _InRunOnly(logging.Filter):
    """Pass records only inside a flow or task run; elsewhere the API handler would warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def route_w4s_logs(level: int = logging.INFO) -> None:
    """w4s messages at `level` on the console and, inside a run, in the run's Prefect logs.

    Idempotent. Records still propagate to the root logger, whose Prefect console handler
    prints them; the API handler added here sends them to the run they were logged in
    (threads that serve a run must carry its context, see w4s.sandbox.harness).
    """
    from prefect.logging.handlers import APILogHandler

    for name in W4S_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRunOnly())
            logger.addHandler(handler)
