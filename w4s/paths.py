"""Where w4s keeps its files. `W4S_HOME` is read here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def _home_env() -> Path | None:
    env = os.environ.get("W4S_HOME")
    return Path(env).expanduser() if env else None


def w4s_home() -> Path:
    """`$W4S_HOME`, else the user's data dir (never the current directory)."""
    return _home_env() or Path(platformdirs.user_data_dir("w4s"))


def runs_dir(override: str | None = None) -> Path:
    return Path(override).expanduser() if override else w4s_home() / "runs"


def cache_dir() -> Path:
    """Model and executor-call caches: `$W4S_HOME/cache`, else the user's cache dir."""
    home = _home_env()
    return home / "cache" if home else Path(platformdirs.user_cache_dir("w4s"))
