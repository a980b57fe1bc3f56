"""Where w4s keeps its files. `W4S_HOME` and `W4S_STORAGE_URL` are read here and nowhere else.

Two roots, because shared storage and host-local files have different needs:
- `W4S_HOME` (a local folder): caches, the embedded model and downloaded adapters. Model
  weights, the sandbox and SQLite need real local files.
- `W4S_STORAGE_URL` (default: `W4S_HOME`): run folders and the adapter registry, the files
  stages pass between hosts. A local folder, or any fsspec URL (`s3://bucket/w4s`,
  `gs://...`, `memory://...`) when several hosts run stages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import platformdirs

from w4s.errors import ConfigError


def is_url(spec: object) -> bool:
    """`s3://...`, `memory://...`, `file://...`: a location fsspec resolves, not a plain path."""
    return "://" in str(spec) and not isinstance(spec, Path)


def location(spec: str | os.PathLike[str]) -> Any:
    """A local path or `file://` URL as a `pathlib.Path` (nothing in between), any other
    URL as a `upath.UPath`.

    Both speak the pathlib API (`/`, `read_text`, `glob`, `is_file`), so the storage code is
    one code path; `universal_pathlib` is imported only for URLs.
    """
    if hasattr(spec, "fs") and hasattr(spec, "protocol"):  # already a UPath
        return spec
    text = str(spec)
    if text.startswith("file://"):  # a local folder: renames stay atomic, no fsspec between
        return Path(urlparse(text).path).expanduser()
    if is_url(spec):
        from upath import UPath

        try:
            return UPath(text)
        except (ValueError, ImportError) as e:  # an unknown protocol, or its package missing
            raise ConfigError(f"storage URL {str(spec)!r}: {e}") from None
    return Path(spec).expanduser()


def _home_env() -> Path | None:
    env = os.environ.get("W4S_HOME")
    if env and is_url(env):
        raise ConfigError(
            f"`W4S_HOME` {env!r} must be a local folder (caches and model files live there); "
            "put shared run folders and adapters at `W4S_STORAGE_URL` instead"
        )
    return Path(env).expanduser() if env else None


def w4s_home() -> Path:
    """`$W4S_HOME`, else the user's data dir (never the current directory)."""
    return _home_env() or Path(platformdirs.user_data_dir("w4s"))


def storage_root() -> Any:
    """`$W4S_STORAGE_URL` (a folder or an fsspec URL), else `w4s_home()`."""
    url = os.environ.get("W4S_STORAGE_URL", "").strip()
    return location(url) if url else w4s_home()


def runs_dir(override: str | None = None) -> Any:
    """Run folders: `override` (a folder or URL), else `<storage root>/runs`."""
    return location(override) if override else storage_root() / "runs"


def cache_dir() -> Path:
    """Model and executor-call caches: `$W4S_HOME/cache`, else the user's cache dir."""
    home = _home_env()
    return home / "cache" if home else Path(platformdirs.user_cache_dir("w4s"))


def models_cache_dir() -> Path:
    """Converted local models (the dequantized embedded model, GGUF LoRAs) live here."""
    return cache_dir() / "models"
