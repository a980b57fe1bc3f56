"""Prefect progress artifacts for long stages (validation, collection, fit), throttled.

Items finish on the sandbox's item threads, which carry no Prefect context: a progress
artifact keeps the context it was created in (API URL, client settings) and sends each
update under it. Updates go out at most every `min_interval_s` or every `min_step` of
progress, and always at 100 %, so a stage of thousands of items costs a few dozen API calls,
never one per item. Outside a Prefect run every reporter is a no-op.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("w4s")


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class Progress:
    """One progress artifact: `advance()` from any thread, `set(done)` to jump."""

    def __init__(self, total: int, description: str, *, key: str | None = None,
                 min_interval_s: float = 2.0, min_step: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from prefect.artifacts import create_progress_artifact

        self.total = max(total, 1)
        self.description = description
        self.done = 0
        self._lock = threading.Lock()
        self._clock = clock
        self._interval, self._step = min_interval_s, min_step
        self._sent_at, self._sent = clock(), 0.0
        self.updates = 0  # API updates sent (the throttle's effect, for tests and benches)
        self._context = contextvars.copy_context()
        self.artifact_id = create_progress_artifact(0.0, key=key, description=self._text())

    def _text(self) -> str:
        return f"{self.description}: {self.done}/{self.total}"

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._set(self.done + n)

    def set(self, done: int) -> None:
        with self._lock:
            self._set(done)

    def _set(self, done: int) -> None:
        self.done = min(done, self.total)
        percent = 100.0 * self.done / self.total
        now = self._clock()
        due = (self.done == self.total or now - self._sent_at >= self._interval
               or percent - self._sent >= 100.0 * self._step)
        if not due or percent == self._sent:
            return
        self._sent_at, self._sent = now, percent
        try:  # a copy per call: one Context cannot be entered by two threads at once
            self._context.copy().run(self._send, percent)
        except Exception as e:  # noqa: BLE001 - a progress bar must never fail the stage
            log.warning("progress artifact update failed (ignored): %s", e)

    def _send(self, percent: float) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.artifact_id, percent, description=self._text())
        self.updates += 1


def start(total: int, description: str, **kw: Any) -> Progress | None:
    """A progress artifact in the current run, or None outside one (or if the API fails)."""
    if not in_prefect_run():
        return None
    try:
        return Progress(total, description, **kw)
    except Exception as e:  # noqa: BLE001 - the UI's progress bar is not the stage's work
        log.warning("progress artifact not created (ignored): %s", e)
        return None


def _stage_hook(stage: str, run_dir: str, total: int) -> Callable[[int, Any], None] | None:
    """w4s.tasks.stages.progress_hook: one artifact per evaluation, advanced per finished item."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    where = ctx.task_run.name if ctx is not None else Path(run_dir).name
    bar = start(total, f"{where}: {stage} items done")
    return None if bar is None else (lambda _ci, _outcome: bar.advance())


@contextmanager
def stage_progress() -> Iterator[None]:
    """Within: the stages' evaluations report progress artifacts (contextvar, so the tasks
    submitted from here inherit it and the caller's context is left as it was)."""
    from w4s.tasks.stages import progress_hook

    token = progress_hook.set(_stage_hook)
    try:
        yield
    finally:
        progress_hook.reset(token)


def fit_on_step(description: str, inner: Callable[[int, int, float, float], None] | None = None
                ) -> Callable[[int, int, float, float], None] | None:
    """A `fit_adapter(on_step=...)` callback updating a progress artifact, chained to `inner`."""
    bars: list[Progress | None] = []

    def on_step(step: int, total: int, loss: float, tokens_per_s: float) -> None:
        if inner is not None:
            inner(step, total, loss, tokens_per_s)
        if not bars:  # the total is known at the first step only
            bars.append(start(total, description))
        if bars[0] is not None:
            bars[0].description = f"{description} (loss {loss:.4f})"
            bars[0].set(step)

    return on_step if in_prefect_run() else inner
