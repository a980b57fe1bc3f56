"""One error hierarchy so callers can catch our failures without catching everything."""

from __future__ import annotations


class W4SError(Exception):
    """Base of every error w4s raises on purpose."""


class ConfigError(W4SError, ValueError):
    """A run setting is missing or invalid; the message names the field."""


class BackendError(W4SError):
    """A model backend failed (endpoint down, auth, rate limit after retries, bad request).

    `infrastructure` says whose fault it is. True (the default): nothing the caller sent
    explains it, and the same request may well succeed later: unreachable, timed out, 5xx,
    408/409/429 after the backend's retries, a malformed or short reply, an authentication
    or configuration failure (401/403/404: the key, model or URL, which no workflow picks),
    a local model failing to generate. False: the request itself was rejected (400 and other
    4xx: a prompt too long for the context, a malformed request), so repeating it fails the
    same way. The sandbox harness marks items touched by an infrastructure error as lost,
    not wrong (`ItemOutcome.infra_error`).
    """

    def __init__(self, message: str, *, model: str | None = None,
                 infrastructure: bool = True) -> None:
        self.model = model
        self.infrastructure = infrastructure
        super().__init__(f"[{model}] {message}" if model else message)

    def __reduce__(self):  # pickled (e.g. by Prefect) with its attributes, not just its text
        return type(self), (self.args[0],), dict(self.__dict__)


class InfrastructureError(W4SError):
    """Work was lost to infrastructure (the executor, the sandbox), not judged; a retry of
    the same work may succeed."""


class NothingToLearn(W4SError):
    """The dataset holds no positive reward: a reward-weighted fit would only imitate
    actions that earned nothing, so the fit is skipped unless forced."""


class BenchmarkError(W4SError, ValueError):
    """A benchmark name, file or field is wrong."""


class BadCall(W4SError, ValueError):
    """A sandboxed job sent something that is not a valid call (a field beyond the caps the
    sandbox documents, a malformed frame): that item's error, never infrastructure."""


class BudgetExceeded(W4SError):
    """The run's USD or token budget is spent; the run stops cleanly."""


def one_line(exc: BaseException | str, limit: int = 200) -> str:
    """`str(exc)` on one line, whitespace collapsed, cut to `limit` characters with "..."."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
