"""When a stage's retry can help: infrastructure failures, yes; a spent budget, no."""

from __future__ import annotations

from typing import Any

from tasks import runtime
from w4s.errors import BudgetExceeded, ConfigError


def retry_unless_final(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: a budget stop or a bad setting fails the same way on
    every retry (and a retried budget stop would let the run go on as if nothing happened);
    nor is anything retried once the process is stopping (Ctrl-C)."""
    return not (runtime.stopping() or isinstance(state.data, BudgetExceeded | ConfigError))
