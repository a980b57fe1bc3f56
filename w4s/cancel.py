"""Cancelling a blocking executor call from another thread.

An item that times out or returns leaves its executor calls in flight: they keep a server
busy (slowing the live calls) and are billed with nobody to count them. The sandbox proxy
runs each call under a `CancelScope` (a context value, so the backends need no new
argument); a backend registers how to abort its blocking request (e.g. shut its socket) and
checks the scope before each retry. A cancelled call raises `Cancelled`.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from w4s.errors import W4SError


class Cancelled(W4SError):
    """The call was cancelled by its owner (its item ended); not the executor's failure."""


class CancelScope:
    """A one-way switch: `cancel()` runs every registered abort callback once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._aborts: dict[int, Callable[[], None]] = {}
        self._next = 0

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            aborts = list(self._aborts.values())
        for abort in aborts:
            try:
                abort()
            except Exception:  # noqa: BLE001,S110 - best effort: the call may have ended
                pass

    def check(self) -> None:
        """Raise Cancelled once the scope is cancelled."""
        if self._event.is_set():
            raise Cancelled("cancelled: the item that made this call has ended")

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise Cancelled as soon as the scope is cancelled."""
        if self._event.wait(seconds):
            self.check()

    @contextmanager
    def on_cancel(self, abort: Callable[[], None]) -> Iterator[None]:
        """Run `abort` (from the cancelling thread) if the scope is cancelled meanwhile."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._aborts[key] = abort
            already = self._event.is_set()
        try:
            if already:
                abort()
            yield
        finally:
            with self._lock:
                self._aborts.pop(key, None)


_current: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "w4s_cancel_scope", default=None)


def current_scope() -> CancelScope | None:
    """The scope the calling code runs under, if any."""
    return _current.get()


@contextmanager
def running_under(scope: CancelScope) -> Iterator[None]:
    """Run the block under `scope` (backends called inside see it as `current_scope()`)."""
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)
