"""The executor-call cache interface. The core defines it; storage/call_cache.py implements
it on SQLite, so w4s never imports storage.

One entry per sample: the key hashes the request together with a sample index, so a call
for n=5 replies can be served partly from cache, and a rerun of an evaluation is served
entirely from it.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol, runtime_checkable

from w4s.hashing import json_sha256


@runtime_checkable
class CallCache(Protocol):
    """Content-addressed store of executor samples. Implementations must be thread-safe."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


def call_key(*, model: str, messages: list[dict], temperature: float, max_tokens: int | None,
             json_mode: bool, sample_index: int) -> str:
    """sha256 of the request as JSON with sorted keys; no secrets or endpoints in it."""
    payload = {
        "model": model, "messages": messages, "temperature": temperature,
        "max_tokens": max_tokens, "json_mode": json_mode, "sample_index": sample_index,
    }
    return json_sha256(payload)


class MemoryCallCache:
    """A dict-backed CallCache for tests and one-off runs."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self._data.get(key)
            if raw is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(raw)  # a fresh copy each time

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._data[key] = json.dumps(value)

    def __len__(self) -> int:
        return len(self._data)
