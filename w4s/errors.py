"""One error hierarchy so callers can catch our failures without catching everything."""

from __future__ import annotations


class W4SError(Exception):
    """Base of every error w4s raises on purpose."""


class ConfigError(W4SError, ValueError):
    """A run setting is missing or invalid; the message names the field."""


class BackendError(W4SError):
    """A model backend failed (endpoint down, auth, rate limit after retries)."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        self.model = model
        super().__init__(f"[{model}] {message}" if model else message)


class BenchmarkError(W4SError, ValueError):
    """A benchmark name, file or field is wrong."""


class BudgetExceeded(W4SError):
    """The run's USD or token budget is spent; the run stops cleanly."""
