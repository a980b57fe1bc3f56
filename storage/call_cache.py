"""The persistent executor-call cache: SQLite in WAL mode, shared by threads and processes.

Implements `w4s.sandbox.CallCache`. Keys are content hashes (`w4s.sandbox.call_key`), one
row per sample; the first writer of a key wins, so concurrent runs agree on every sample.

One cache per host, under the local `W4S_HOME` even when `W4S_STORAGE_URL` is shared: WAL
mode needs the processes on one machine (shared memory), and SQLite's locks are unsafe on
network filesystems. Hosts only lose cross-host hits (an executor call repeated once per
host); the run folders, not this cache, are what resumes depend on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from w4s.paths import cache_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID
"""


def default_cache_path() -> Path:
    """$W4S_HOME/cache/executor.sqlite, else the user cache dir."""
    return cache_dir() / "executor.sqlite"


class SQLiteCallCache:
    """Executor samples by key. `read=False` bypasses lookups (every get is a miss) while
    still recording new samples; `write=False` leaves the file untouched."""

    def __init__(self, path: str | Path, *, read: bool = True, write: bool = True,
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.read = read
        self.write = write
        self._timeout = busy_timeout_s
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            conn = self._conn()
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = None
        if self.read:
            row = self._conn().execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict[str, Any]) -> None:
        if not self.write:
            return
        self._conn().execute(
            "INSERT OR IGNORE INTO calls (key, value, created) VALUES (?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "entries": len(self), "hits": self.hits,
                "misses": self.misses}

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
            self._local = threading.local()


def open_call_cache(path: str | Path | None = None, *, bypass: bool = False) -> SQLiteCallCache:
    """The default cache file (see `default_cache_path`); `bypass` skips lookups only."""
    return SQLiteCallCache(path or default_cache_path(), read=not bypass)
