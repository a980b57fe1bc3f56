"""Recorded item outcomes: an identical earlier clean run answers an item without a sandbox run.

The meta-agent often re-proposes a workflow it has seen (the seed, a sibling candidate), and
a rerun of a stage repeats whole evaluations. With a call cache, each clean item outcome is
stored there under a key of the workflow code, the item, the executor model (with its token
cap) and the limits, and handed back (re-scored) the next time. Only clean runs are
recorded: no timeout, crash, executor or infrastructure error, cache failure or budget stop,
so those are always run again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from w4s.hashing import json_sha256

if TYPE_CHECKING:
    from w4s.benchmarks.base import Item
    from w4s.sandbox.cache import CallCache
    from w4s.sandbox.types import SandboxSettings

log = logging.getLogger("w4s.sandbox")


class Recorded(NamedTuple):
    raw: Any  # the solver's answer as JSON when it was, else its text
    answer: str | None
    error: str | None
    samples: int  # executor samples the run used (what replaying its calls would cost)


class OutcomeStore:
    """Reads and writes recorded outcomes in the call cache; every failure degrades to a rerun."""

    def __init__(self, cache: CallCache | None, settings: SandboxSettings,
                 key_model: str) -> None:
        self._cache = cache if settings.reuse_outcomes else None
        self._settings = settings
        self._key_model = key_model

    def key(self, code: str, item: Item) -> str | None:
        """The outcome key, or None when outcomes are neither recorded nor reused."""
        if self._cache is None:
            return None
        st = self._settings
        payload = [
            "outcome-v1", code, item.id, item.question, self._key_model,
            st.item_timeout_s, st.code_timeout_s, st.memory_mb, st.max_output_chars,
        ]
        return "outcome:" + json_sha256(payload)

    def get(self, key: str | None) -> Recorded | None:
        """The outcome of an identical earlier clean run, if one was recorded."""
        if key is None or self._cache is None:
            return None
        try:
            hit = self._cache.get(key)
        except Exception as e:  # noqa: BLE001 - a broken cache degrades to a rerun
            log.warning("sandbox: outcome cache read failed: %s", e)
            return None
        if not isinstance(hit, dict) or not isinstance(hit.get("samples"), int):
            return None
        answer, error = hit.get("answer"), hit.get("error")
        return Recorded(hit.get("raw", answer), answer, error, hit["samples"])

    def put(self, key: str, raw: Any, answer: str | None, error: str | None,
            samples: int) -> None:
        """Record a clean run; the caller decides it was clean."""
        if self._cache is None:
            return
        value: dict[str, Any] = {"answer": answer, "error": error, "samples": samples}
        if error is None and raw is not answer:  # the solver's answer as JSON, when it was
            value["raw"] = raw
        try:
            self._cache.put(key, value)
        except Exception as e:  # noqa: BLE001
            log.warning("sandbox: outcome cache write failed: %s", e)
