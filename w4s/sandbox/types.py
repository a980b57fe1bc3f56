"""Records the sandbox returns: plain frozen dataclasses, no behavior beyond small properties."""

from __future__ import annotations

from dataclasses import dataclass

from w4s import limits


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """Limits for running untrusted workflows and programs."""

    item_timeout_s: float = limits.ITEM_TIMEOUT_S
    code_timeout_s: float = limits.CODE_TIMEOUT_S
    concurrency: int = limits.CONCURRENCY
    # address-space limit per jailed process, and (memory cgroup) on a job's whole tree
    memory_mb: int = 2048
    max_output_chars: int = 20_000  # caps on answers, stdout and tracebacks coming back
    # with a call cache: an item already run by the same code, executor and limits gets its
    # recorded outcome back (re-scored) instead of a rerun; see w4s/sandbox/outcomes.py
    reuse_outcomes: bool = True

    def __post_init__(self) -> None:
        for name in ("item_timeout_s", "code_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"`{name}` must be positive, but received {value!r}")
        if not 1 <= self.concurrency <= 512:
            raise ValueError(
                f"`concurrency` must be in [1, 512], but received {self.concurrency!r}"
            )
        if self.memory_mb < 64:
            raise ValueError(f"`memory_mb` must be at least 64, but received {self.memory_mb!r}")
        if self.max_output_chars < 200:
            raise ValueError(
                f"`max_output_chars` must be at least 200, but received {self.max_output_chars!r}"
            )


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One item of one workflow. Token counts and cost are new spend (cache hits are free).

    `infra_error` set: the item was lost to infrastructure (the executor unreachable, timing
    out, 5xx or 429 after the backend's retries, a failed sandbox worker, a harness bug), not
    judged: its score is 0 whatever the workflow then did with the failure, `error` is the
    workflow's own error or else this reason, and it is never recorded for reuse.
    """

    item_id: str
    answer: str | None  # str(answer), truncated; None when the solver gave no answer
    score: float  # benchmark.score(item, raw answer); 0.0 on error or infra_error
    error: str | None  # traceback or one-line reason; None on success
    executor_calls: int  # calls that reached the executor (cache misses)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when a called model has no known price
    seconds: float
    cache_hits: int = 0  # samples served from the call cache
    cache_misses: int = 0  # samples the executor had to produce
    reused: bool = False  # the recorded outcome of an identical earlier run, not rerun
    infra_error: str | None = None  # one-line reason; None when no infrastructure failed it


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One workflow on a list of items, in item order."""

    outcomes: list[ItemOutcome]
    accuracy: float  # mean score over all items (infra_error items count 0), 0.0 when empty
    executor_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when any call's model price is unknown
    cache_hits: int
    cache_misses: int
    budget_exceeded: bool

    @property
    def failures(self) -> list[ItemOutcome]:
        """Items the workflow got wrong; items lost to infrastructure are not its failures."""
        return [o for o in self.outcomes if o.score < 1 and o.infra_error is None]

    @property
    def infra_errors(self) -> int:
        """Items lost to infrastructure (`ItemOutcome.infra_error`): `accuracy` understates."""
        return sum(1 for o in self.outcomes if o.infra_error is not None)

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.error is not None)

    @property
    def reused(self) -> int:
        """Items answered from recorded outcomes instead of running again."""
        return sum(1 for o in self.outcomes if o.reused)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    """A standalone program run in the sandbox. ok: it ran to the end without an exception."""

    ok: bool
    error: str | None
    stdout: str
    seconds: float
