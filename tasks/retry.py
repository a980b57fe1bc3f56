"""When a stage's retry can help: infrastructure failures, yes; a spent budget, no."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w4s.errors import BudgetExceeded, ConfigError
from w4s.tasks import runtime


def retry_unless_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: a budget stop or a bad setting fails the same way on
    every retry (and a retried budget stop would let the run go on as if nothing happened);
    nor is anything retried once the process is stopping (Ctrl-C)."""
    return not (runtime.stopping() or isinstance(state.data, BudgetExceeded | ConfigError))


def backoff(first_s: float) -> Callable[[int], list[float]]:
    """`retry_delay_seconds` for a stage: `first_s`, then doubling (Prefect's exponential
    backoff). Model calls retry on their own first (models/: backoff with jitter, honouring
    Retry-After); a stage retry covers what outlives those: a worker crash, flaky I/O."""
    from prefect.tasks import exponential_backoff

    return exponential_backoff(backoff_factor=first_s)
